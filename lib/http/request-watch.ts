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

interface Watched {
  stopper: RunStopper;
  deadline: number;
  req: IncomingMessage;
  res: ServerResponse;
}

export class RequestWatch {
  private readonly inFlight = new Map<object, Watched>();
  private timer: NodeJS.Timeout | undefined;
  private readonly tick: number;

  constructor(
    private readonly timeout: number,
    private readonly watchClient: boolean,
  ) {
    this.tick = timeout > 0 ? Math.min(250, Math.max(10, Math.floor(timeout / 4))) : 250;
  }

  /** A stopper for the request (keyed by `key`), watched until `forget(key)`; undefined when nothing is watched. */
  watch(key: object, req: IncomingMessage, res: ServerResponse): RunStopper | undefined {
    if (this.timeout === 0 && !this.watchClient) return undefined;
    const stopper = new RunStopper();
    this.inFlight.set(key, { stopper, deadline: this.timeout > 0 ? Date.now() + this.timeout : Infinity, req, res });
    this.timer ??= setInterval(() => this.check(), this.tick).unref();
    return stopper;
  }

  forget(key: object): void {
    this.inFlight.delete(key);
  }

  private check(): void {
    // Stopped on a tick, not when the last request leaves: one request at a time would restart it each time.
    if (this.inFlight.size === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
      return;
    }
    const now = Date.now();
    for (const { stopper, deadline, req, res } of this.inFlight.values()) {
      if (now >= deadline) stopper.stop(new RequestTimeoutError(this.timeout));
      else if (this.watchClient && clientGone(req, res)) stopper.stop(new ClientGoneError());
    }
  }
}
