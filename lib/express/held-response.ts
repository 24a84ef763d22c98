/**
 * Holding an Express response until the request's transaction has committed.
 *
 * Express handlers write the response themselves: `res.json` and `res.send`
 * end in `res.end`, `res.sendFile` and piped streams in `res.write`. For the
 * request, aftercommit puts its own `writeHead`, `write`, `end` and
 * `flushHeaders` on `res`: while an attempt holds the response, status and
 * headers stay in `res` (Node sends them only with the first byte) and what is
 * written is recorded; nothing reaches the socket, and `res.headersSent` and
 * `res.writableEnded` say what the handler did, as if it had been sent. After
 * the commit the record is replayed through the real methods, with the status
 * and headers as they were at the handler's answer; on rollback by an error or
 * on a retry it is dropped and the status, headers and `res.locals` are put back
 * as they were before the first attempt.
 *
 * The first `write`, `end` or `flushHeaders` is the handler's answer: the
 * transaction commits then. A streaming handler (SSE, `res.sendFile`, a pipe)
 * therefore commits before its stream starts, and the rest of the stream goes
 * straight to the client; a transaction used after that throws
 * TransactionEndedError. Such a request is not retry-safe once it has started
 * streaming: a transient error at its commit ends it with RetryNotSafeError
 * (nothing of it committed, nothing of it sent).
 *
 * What an attempt that was given up (retried, timed out) writes later is
 * dropped: `isStale()` tells, from the async context of the call.
 */
import { ServerResponse, type OutgoingHttpHeader } from 'node:http';
import { copyData, refill } from '../http/copy-data.js';

type Method = 'writeHead' | 'write' | 'end' | 'flushHeaders';
type AnyMethod = (...args: unknown[]) => unknown;

/** The status, headers and `res.locals` of a response at some moment. */
export interface ResponseSnapshot {
  readonly statusCode: number;
  readonly statusMessage: string;
  readonly headers: readonly [string, number | string | string[]][];
  readonly locals: Record<string, unknown> | undefined;
}

type Locals = { locals?: Record<string, unknown> };

// Node's own getters (OutgoingMessage.prototype), which a held response's `headersSent` and `writableEnded` stand in front of.
const outgoing = Object.getPrototypeOf(ServerResponse.prototype) as object;
const nodeHeadersSent = Object.getOwnPropertyDescriptor(outgoing, 'headersSent')!.get!;
const nodeWritableEnded = Object.getOwnPropertyDescriptor(outgoing, 'writableEnded')!.get!;

/** Whether the headers really left (`res.headersSent` says what a held handler did). */
export function headersLeft(res: ServerResponse): boolean {
  return nodeHeadersSent.call(res) as boolean;
}

export function snapshotResponse(res: ServerResponse, withLocals = true): ResponseSnapshot {
  const headers: [string, number | string | string[]][] = [];
  // getRawHeaderNames (Node ≥ 15.13) keeps the names' case; missing from @types/node's ServerResponse.
  for (const name of (res as unknown as { getRawHeaderNames(): string[] }).getRawHeaderNames()) {
    const value = res.getHeader(name);
    if (value !== undefined) headers.push([name, value]);
  }
  const locals = withLocals ? (res as Locals).locals : undefined;
  return { statusCode: res.statusCode, statusMessage: res.statusMessage, headers, locals: locals && copyData(locals) };
}

/** Puts the response back as it was at the snapshot (headers not sent yet); `res.locals` keeps its identity. */
export function restoreResponse(res: ServerResponse, snapshot: ResponseSnapshot): void {
  if (headersLeft(res)) return;
  for (const name of res.getHeaderNames()) res.removeHeader(name);
  for (const [name, value] of snapshot.headers) res.setHeader(name, value);
  res.statusCode = snapshot.statusCode;
  res.statusMessage = snapshot.statusMessage;
  const locals = (res as Locals).locals;
  if (snapshot.locals && locals) refill(locals, snapshot.locals);
}

function headerValue(value: OutgoingHttpHeader): string | string[] {
  return Array.isArray(value) ? value.map(String) : String(value);
}

/** `writeHead`'s headers, set as Node's writeHead sets them (a flat array's later value wins; pairs are refused, as Node does). */
function setHeaders(res: ServerResponse, headers: unknown): void {
  if (Array.isArray(headers)) {
    if (headers.length % 2 !== 0 || headers.some(Array.isArray)) {
      throw Object.assign(new TypeError('res.writeHead(status, headers): an array of headers must list names and values in turn'), { code: 'ERR_INVALID_ARG_VALUE' });
    }
    for (let i = 0; i < headers.length; i += 2) if (headers[i]) res.setHeader(String(headers[i]), headerValue(headers[i + 1] as OutgoingHttpHeader));
  } else if (headers && typeof headers === 'object') {
    for (const [name, value] of Object.entries(headers)) if (value !== undefined) res.setHeader(name, value as OutgoingHttpHeader);
  }
}

/** Refuses, in the handler, what Node would refuse only when the held response is sent (after the commit). */
function checkChunk(chunk: unknown, method: 'write' | 'end'): void {
  if (typeof chunk === 'string' || chunk instanceof Uint8Array) return;
  if (method === 'end' && (chunk === undefined || chunk === null || typeof chunk === 'function')) return;
  throw Object.assign(new TypeError(`res.${method}(chunk): the chunk must be a string, a Buffer or a Uint8Array, got ${chunk === null ? 'null' : typeof chunk}`), {
    code: 'ERR_INVALID_ARG_TYPE',
  });
}

function checkStatus(res: ServerResponse): void {
  const status = res.statusCode;
  if (Number.isInteger(status) && status >= 100 && status <= 999) return;
  throw Object.assign(new RangeError(`the response status must be an integer from 100 to 999, got ${String(status)}`), { code: 'ERR_HTTP_INVALID_STATUS_CODE' });
}

/** The response's held record while an attempt holds it; what `headersSent` and `writableEnded` read then. */
const HOLDING = Symbol('aftercommit: the held response');
type Holdable = ServerResponse & { [HOLDING]?: HeldResponse };

/** Response prototypes (Express's, shared by its apps) that already read the held state. */
const withHeldState = new WeakSet<object>();

/** The prototype right above Node's `ServerResponse.prototype` (Express's own response), else `res`'s prototype. */
function basePrototype(res: ServerResponse): object {
  let proto = Object.getPrototypeOf(res) as object;
  for (let above = proto; above && above !== ServerResponse.prototype; above = Object.getPrototypeOf(above) as object) proto = above;
  return proto;
}

/** `res.headersSent` and `res.writableEnded` tell a handler what it did while its response is held. */
function defineHeldState(res: ServerResponse): void {
  const proto = basePrototype(res);
  if (withHeldState.has(proto)) return;
  withHeldState.add(proto);
  Object.defineProperties(proto, {
    headersSent: {
      configurable: true,
      get(this: Holdable) {
        const held = this[HOLDING];
        return held ? held.answered : nodeHeadersSent.call(this);
      },
    },
    writableEnded: {
      configurable: true,
      get(this: Holdable) {
        const held = this[HOLDING];
        return held ? held.ended : nodeWritableEnded.call(this);
      },
    },
  });
}

type Call = { method: 'write' | 'end' | 'flushHeaders'; args: unknown[] };

/** Node's refusal of a header change once the headers are out (they are, as far as the handler knows, once it answered). */
function headersSentError(what: string): Error {
  return Object.assign(new Error(`Cannot ${what} headers after they are sent to the client`), { code: 'ERR_HTTP_HEADERS_SENT' });
}

/**
 * One request's response, held by its attempts in turn. Its methods are put on
 * `res` as closures, not shared functions (an aftercommit nested in another
 * holds the outer one's methods), by plain assignment to named properties, so
 * that `res` keeps a fast shape; they stay for the request, as code inside may
 * keep them.
 */
export class HeldResponse {
  private calls: Call[] = [];
  // `res`'s methods before: the record is replayed through them, and calls go straight to them when nothing holds.
  private readonly ownWriteHead: AnyMethod;
  private readonly ownWrite: AnyMethod;
  private readonly ownEnd: AnyMethod;
  private readonly ownFlushHeaders: AnyMethod;
  private readonly ownSetHeader: AnyMethod;
  private readonly ownAppendHeader: AnyMethod;
  private readonly ownRemoveHeader: AnyMethod;
  private readonly ownStatus: AnyMethod | undefined;
  private holding = false;
  /** The held record of an enclosing aftercommit, if any (given back when this one stops holding). */
  private enclosing: HeldResponse | undefined;
  private onAnswer: (() => void) | undefined;
  /** The status at the answer: a later change (an error handler's second answer) is not sent. */
  private statusAtAnswer = 0;
  private messageAtAnswer = '';
  /** Whether the handler wrote or flushed before ending: a stream, which runs on after the commit. */
  streamed = false;
  /** Whether the handler ended the response. */
  ended = false;
  /** Whether the handler has answered (first write, end or flushHeaders). */
  answered = false;

  constructor(
    private readonly res: Holdable,
    /** Whether the calling async context is an attempt of this request that was given up: what it does to the response is dropped. */
    private readonly isStale: () => boolean,
  ) {
    defineHeldState(res);
    const r = res as unknown as Record<Method | 'setHeader' | 'appendHeader' | 'removeHeader' | 'status', AnyMethod>;
    this.ownWriteHead = r.writeHead;
    this.ownWrite = r.write;
    this.ownEnd = r.end;
    this.ownFlushHeaders = r.flushHeaders;
    this.ownSetHeader = r.setHeader;
    this.ownAppendHeader = r.appendHeader;
    this.ownRemoveHeader = r.removeHeader;
    this.ownStatus = typeof r.status === 'function' ? r.status : undefined; // Express's res.status(code)
    r.writeHead = (...args) => (this.isStale() ? res : this.holding ? this.writeHead(args) : this.ownWriteHead.apply(res, args));
    r.write = (...args) => (this.isStale() ? false : this.holding ? this.record('write', args) : this.ownWrite.apply(res, args));
    r.end = (...args) => (this.isStale() ? res : this.holding ? this.record('end', args) : this.ownEnd.apply(res, args));
    r.flushHeaders = (...args) => (this.isStale() ? undefined : this.holding ? this.record('flushHeaders', args) : this.ownFlushHeaders.apply(res, args));
    r.setHeader = (...args) => (this.changesHeaders('set') ? this.ownSetHeader.apply(res, args) : res);
    r.appendHeader = (...args) => (this.changesHeaders('set') ? this.ownAppendHeader.apply(res, args) : res);
    r.removeHeader = (...args) => (this.changesHeaders('remove') ? this.ownRemoveHeader.apply(res, args) : undefined);
    if (this.ownStatus) r.status = (...args) => (this.isStale() ? res : this.ownStatus!.apply(res, args));
  }

  /** Whether a header change goes through: not from a stale attempt, not after the answer (as Node refuses it once sent). */
  private changesHeaders(what: 'set' | 'remove'): boolean {
    if (this.isStale()) return false;
    if (this.holding && this.answered) throw headersSentError(what);
    return true;
  }

  /** Holds the response for an attempt, from a clean record; `onAnswer` is called at its first write, end or flush. */
  hold(onAnswer: () => void): void {
    this.calls = [];
    this.streamed = this.ended = this.answered = false;
    this.onAnswer = onAnswer;
    if (!this.holding) {
      this.enclosing = this.res[HOLDING];
      this.res[HOLDING] = this;
    }
    this.holding = true;
  }

  private stopHolding(): void {
    if (!this.holding) return;
    this.holding = false;
    this.res[HOLDING] = this.enclosing;
  }

  /** Stops holding and drops what was recorded: later calls go straight to `res` (stale attempts' ones are still dropped). */
  drop(): void {
    this.stopHolding();
    this.calls = [];
  }

  /** After the answer: the status is put back to the one the handler answered with. */
  settle(): void {
    if (!this.answered) return;
    this.res.statusCode = this.statusAtAnswer;
    this.res.statusMessage = this.messageAtAnswer;
  }

  /** After the commit: stops holding and sends what was recorded, with the status of the answer; later writes go straight out. */
  release(): void {
    this.settle();
    this.stopHolding();
    const calls = this.calls;
    this.calls = [];
    for (const { method, args } of calls) {
      const send = method === 'write' ? this.ownWrite : method === 'end' ? this.ownEnd : this.ownFlushHeaders;
      send.apply(this.res, args);
    }
  }

  private writeHead([statusCode, reason, headers]: unknown[]): ServerResponse {
    if (this.answered) throw headersSentError('write');
    if (typeof reason !== 'string') [headers, reason] = [reason, undefined];
    this.res.statusCode = Number(statusCode);
    if (typeof reason === 'string') this.res.statusMessage = reason;
    setHeaders(this.res, headers);
    return this.res;
  }

  private record(method: Call['method'], args: unknown[]): boolean | ServerResponse | undefined {
    if (this.ended) return method === 'write' ? false : method === 'end' ? this.res : undefined;
    if (method !== 'flushHeaders') checkChunk(args[0], method);
    if (!this.answered) checkStatus(this.res);
    if (method === 'end') this.ended = true;
    else this.streamed = true;
    this.calls.push({ method, args });
    if (!this.answered) {
      this.answered = true;
      this.statusAtAnswer = this.res.statusCode;
      this.messageAtAnswer = this.res.statusMessage;
      this.onAnswer?.();
    }
    return method === 'write' ? true : method === 'end' ? this.res : undefined; // write: held in memory, no backpressure until the commit
  }
}
