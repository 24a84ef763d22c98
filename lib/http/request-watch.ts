/**
 * Ends the requests of one aftercommit() from outside: at their deadline, and
 * when their client has gone away. One timer looks at all requests in flight
 * (and stops a tick after the last one): a timer and a listener per request would
 * cost more than the rest of the adaptation. Framework-neutral: it looks at
 * Node's request and response.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ClientGoneError, RequestTimeoutError } from './errors.js';
import { RunStopper } from '../transactions/run-stopper.js';

/** Whether the client of a request has gone away before its response was sent. */
export function clientGone(req: IncomingMessage, res: ServerResponse): boolean {
  return !res.writableFinished && (res.destroyed || req.socket?.destroyed === true);
}

/** A request being watched: its stopper ends its run. */
export interface WatchedRequest {
  readonly stopper: RunStopper;
  readonly deadline: number;
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** Its place in the list of requests in flight. */
  at: number;
}

export class RequestWatch {
  /** In no order: a request leaves by taking the last one's place, so neither joining nor leaving hashes anything. */
  private readonly inFlight: WatchedRequest[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly tick: number;

  constructor(
    private readonly timeout: number,
    private readonly watchClient: boolean,
  ) {
    this.tick = timeout > 0 ? Math.min(250, Math.max(10, Math.floor(timeout / 4))) : 250;
  }

  /** Watches a request until `forget(watched)`; undefined when nothing is watched. */
  watch(req: IncomingMessage, res: ServerResponse): WatchedRequest | undefined {
    if (this.timeout === 0 && !this.watchClient) return undefined;
    const watched: WatchedRequest = { stopper: new RunStopper(), deadline: this.timeout > 0 ? Date.now() + this.timeout : Infinity, req, res, at: this.inFlight.length };
    this.inFlight.push(watched);
    this.timer ??= setInterval(() => this.check(), this.tick).unref();
    return watched;
  }

  /** Stops watching a request; a second call for it changes nothing. */
  forget(watched: WatchedRequest | undefined): void {
    if (watched === undefined || this.inFlight[watched.at] !== watched) return;
    const last = this.inFlight.pop()!;
    if (last !== watched) {
      this.inFlight[watched.at] = last;
      last.at = watched.at;
    }
  }

  private check(): void {
    // Stopped on a tick, not when the last request leaves: one request at a time would restart it each time.
    if (this.inFlight.length === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
      return;
    }
    const now = Date.now();
    for (const { stopper, deadline, req, res } of [...this.inFlight]) { // a copy: stopping may end a request at once
      if (now >= deadline) stopper.stop(new RequestTimeoutError(this.timeout));
      else if (this.watchClient && clientGone(req, res)) stopper.stop(new ClientGoneError());
    }
  }
}
