/**
 * Holding an Express response until the request's transaction has committed.
 *
 * Express handlers write the response themselves: `res.json` and `res.send`
 * end in `res.end`, `res.sendFile` and piped streams in `res.write`.
 * aftercommit puts its own `writeHead`, `write`, `end`, `flushHeaders`, header
 * setters and `status` in front of Express's: while an attempt holds the
 * response, status and headers stay in `res` (Node sends them only with the
 * first byte) and what is written is recorded; nothing reaches the socket, and
 * `res.headersSent` and `res.writableEnded` say what the handler did, as if it
 * had been sent (a header change after the answer throws, as Node's does once
 * sent; `res.status()` then changes nothing). After the commit the record is
 * replayed through the real methods; on rollback by an error or on a retry it is
 * dropped and the status, headers and `res.locals` are put back as they were
 * before the first attempt.
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
import { expressPrototype } from './express-prototype.js';

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

export function snapshotResponse(res: ServerResponse): ResponseSnapshot {
  const headers: [string, number | string | string[]][] = [];
  // getRawHeaderNames (Node ≥ 15.13) keeps the names' case; missing from @types/node's ServerResponse.
  for (const name of (res as unknown as { getRawHeaderNames(): string[] }).getRawHeaderNames()) {
    const value = res.getHeader(name);
    if (value !== undefined) headers.push([name, value]);
  }
  const locals = (res as Locals).locals;
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

/** Each request's held response (the innermost, when aftercommit() is nested in another). */
const heldOf = new WeakMap<ServerResponse, HeldResponse>();

type Call = { method: 'write' | 'end' | 'flushHeaders'; args: unknown[] };
type Intercepted = Method | 'setHeader' | 'appendHeader' | 'removeHeader' | 'status';
const INTERCEPTED: readonly Intercepted[] = ['writeHead', 'write', 'end', 'flushHeaders', 'setHeader', 'appendHeader', 'removeHeader', 'status'];
/** The methods a prototype had before aftercommit put its own in front of them. */
type Originals = Partial<Record<Intercepted, AnyMethod>>;

/** Response prototypes that hold: Express's own response (shared by its apps and sub-apps), with the methods it had before. */
const intercepting = new WeakMap<object, Originals>();

/** Node's refusal of a header change once the headers are out (they are, as far as the handler knows, once it answered). */
function headersSentError(what: string): Error {
  return Object.assign(new Error(`Cannot ${what} headers after they are sent to the client`), { code: 'ERR_HTTP_HEADERS_SENT' });
}

/**
 * Puts, once, in front of the response methods of Express's own response
 * prototype (the one right above Node's `ServerResponse.prototype`), functions
 * that go to the request's HeldResponse when it has one, and straight on
 * otherwise; `headersSent` and `writableEnded` likewise. On the prototype, not
 * on each `res`: Express gives every request's `res` a shape of its own, so each
 * property added to one costs V8 a new shape (microseconds each).
 */
function interceptingOriginals(res: ServerResponse): Originals {
  const proto = expressPrototype(res, ServerResponse.prototype);
  if (!proto) {
    throw new TypeError('aftercommit/express: the response is not an Express response; mount aftercommit() in an Express 4 or 5 app (for Koa, use aftercommit/koa)');
  }
  const known = intercepting.get(proto);
  if (known) return known;
  const originals: Originals = {};
  const methods = proto as Record<Intercepted, AnyMethod | undefined>;
  for (const method of INTERCEPTED) {
    const original = methods[method];
    if (typeof original !== 'function') continue;
    originals[method] = original;
    Object.defineProperty(proto, method, {
      configurable: true,
      writable: true,
      value: function (this: ServerResponse, ...args: unknown[]): unknown {
        const held = heldOf.get(this);
        return held ? held.call(method, args) : original.apply(this, args);
      },
    });
  }
  Object.defineProperties(proto, {
    headersSent: {
      configurable: true,
      get(this: ServerResponse) {
        const held = heldOf.get(this)?.holder();
        return held ? held.answered : nodeHeadersSent.call(this);
      },
    },
    writableEnded: {
      configurable: true,
      get(this: ServerResponse) {
        const held = heldOf.get(this)?.holder();
        return held ? held.ended : nodeWritableEnded.call(this);
      },
    },
  });
  intercepting.set(proto, originals);
  return originals;
}

/** One request's response, held by its attempts in turn. */
export class HeldResponse {
  private calls: Call[] = [];
  /** The methods the response had before (a nested aftercommit forwards to its enclosing one instead). */
  private readonly originals: Originals;
  /** The HeldResponse of an enclosing aftercommit, if any: where calls go when this one does not hold. */
  private readonly enclosing: HeldResponse | undefined;
  private holding = false;
  private onAnswer: (() => void) | undefined;
  /** Whether the handler wrote or flushed before ending: a stream, which runs on after the commit. */
  streamed = false;
  /** Whether the handler ended the response. */
  ended = false;
  /** Whether the handler has answered (first write, end or flushHeaders). */
  answered = false;

  constructor(
    private readonly res: ServerResponse,
    /** Whether the calling async context is an attempt of this request that was given up: what it does to the response is dropped. */
    private readonly isStale: () => boolean,
  ) {
    this.originals = interceptingOriginals(res);
    this.enclosing = heldOf.get(res);
    heldOf.set(res, this);
  }

  /** The HeldResponse that holds the response now (this one or an enclosing one), if any. */
  holder(): HeldResponse | undefined {
    return this.holding ? this : this.enclosing?.holder();
  }

  /** @internal A call of one of `res`'s intercepted methods. */
  call(method: Intercepted, args: unknown[]): unknown {
    const { res } = this;
    if (this.isStale()) return method === 'write' ? false : method === 'flushHeaders' || method === 'removeHeader' ? undefined : res;
    if (this.holding) {
      switch (method) {
        case 'writeHead':
          return this.writeHead(args);
        case 'write':
        case 'end':
        case 'flushHeaders':
          return this.record(method, args);
        case 'setHeader':
        case 'appendHeader':
        case 'removeHeader':
          if (this.answered) throw headersSentError(method === 'removeHeader' ? 'remove' : 'set');
          break;
        case 'status':
          if (this.answered) return res; // as after sending: the answer keeps its status
      }
    }
    return this.forward(method, args);
  }

  private forward(method: Intercepted, args: unknown[]): unknown {
    if (this.enclosing) return this.enclosing.call(method, args);
    return this.originals[method]!.apply(this.res, args);
  }

  /** Holds the response for an attempt, from a clean record; `onAnswer` is called at its first write, end or flush. */
  hold(onAnswer: () => void): void {
    this.calls = [];
    this.streamed = this.ended = this.answered = false;
    this.onAnswer = onAnswer;
    this.holding = true;
  }

  /** Stops holding and drops what was recorded: later calls go straight to `res` (stale attempts' ones are still dropped). */
  drop(): void {
    this.holding = false;
    this.calls = [];
  }

  /** After the commit: stops holding and sends what was recorded; later writes go straight out. */
  release(): void {
    this.holding = false;
    const calls = this.calls;
    this.calls = [];
    for (const { method, args } of calls) this.forward(method, args);
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
      this.onAnswer?.();
    }
    return method === 'write' ? true : method === 'end' ? this.res : undefined; // write: held in memory, no backpressure until the commit
  }
}
