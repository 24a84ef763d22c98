/**
 * Holding an Express response until the request's transaction has committed.
 *
 * Express handlers write the response themselves: `res.json` and `res.send`
 * end in `res.end`, `res.sendFile` and piped streams in `res.write`. For each
 * attempt, aftercommit puts its own `writeHead`, `write`, `end` and
 * `flushHeaders` on `res`: status and headers stay in `res` (Node sends them only
 * with the first byte), and what is written is recorded, nothing reaches the
 * socket. After the commit the record is replayed through the real methods; on
 * rollback by an error or on a retry it is dropped and the status, headers and
 * `res.locals` are put back as they were before the first attempt.
 *
 * The first `write`, `end` or `flushHeaders` is the handler's answer: the
 * transaction commits then. A streaming handler (SSE, `res.sendFile`, a pipe)
 * therefore commits before its stream starts, and the rest of the stream goes
 * straight to the client; a transaction used after that throws
 * TransactionEndedError. Such a request is not retry-safe once it has started
 * streaming: a transient error at its commit ends it with RetryNotSafeError
 * (nothing of it committed, nothing of it sent).
 */
import type { OutgoingHttpHeader, ServerResponse } from 'node:http';

type Method = 'writeHead' | 'write' | 'end' | 'flushHeaders';
const METHODS: readonly Method[] = ['writeHead', 'write', 'end', 'flushHeaders'];

/** The status, headers and `res.locals` of a response before the handlers ran. */
export interface ResponseSnapshot {
  readonly statusCode: number;
  readonly statusMessage: string;
  readonly headers: readonly [string, number | string | string[]][];
  readonly locals: Record<string, unknown> | undefined;
}

type Locals = { locals?: Record<string, unknown> };

/** A shallow copy keeping the prototype (Express's `res.locals` has none). */
function copyOf(locals: Record<string, unknown>): Record<string, unknown> {
  return Object.assign(Object.create(Object.getPrototypeOf(locals) as object | null) as Record<string, unknown>, locals);
}

export function snapshotResponse(res: ServerResponse): ResponseSnapshot {
  const headers: [string, number | string | string[]][] = [];
  // getRawHeaderNames (Node ≥ 15.13) keeps the names' case; missing from @types/node's ServerResponse.
  for (const name of (res as unknown as { getRawHeaderNames(): string[] }).getRawHeaderNames()) {
    const value = res.getHeader(name);
    if (value !== undefined) headers.push([name, value]);
  }
  const locals = (res as Locals).locals;
  return { statusCode: res.statusCode, statusMessage: res.statusMessage, headers, locals: locals && copyOf(locals) };
}

/** Puts the response back as it was at the snapshot (headers not sent yet). */
export function restoreResponse(res: ServerResponse, snapshot: ResponseSnapshot): void {
  if (res.headersSent) return;
  for (const name of res.getHeaderNames()) res.removeHeader(name);
  for (const [name, value] of snapshot.headers) res.setHeader(name, value);
  res.statusCode = snapshot.statusCode;
  res.statusMessage = snapshot.statusMessage;
  if (snapshot.locals) (res as Locals).locals = copyOf(snapshot.locals);
}

function headerValue(value: OutgoingHttpHeader): string | string[] {
  return Array.isArray(value) ? value.map(String) : String(value);
}

function setHeaders(res: ServerResponse, headers: unknown): void {
  if (Array.isArray(headers)) {
    if (headers.length > 0 && Array.isArray(headers[0])) {
      for (const [name, value] of headers as [string, OutgoingHttpHeader][]) res.appendHeader(name, headerValue(value));
    } else {
      for (let i = 0; i + 1 < headers.length; i += 2) res.appendHeader(String(headers[i]), headerValue(headers[i + 1] as OutgoingHttpHeader));
    }
  } else if (headers && typeof headers === 'object') {
    for (const [name, value] of Object.entries(headers)) if (value !== undefined) res.setHeader(name, value as OutgoingHttpHeader);
  }
}

/** The attempt's record a held response writes into; absent when the response is not held. */
const HELD = Symbol('aftercommit: the held response');
type Holdable = ServerResponse & { [HELD]?: HeldResponse };

// The methods put on a held response: shared functions, not closures per request, assigned (not
// defined) and assigned back afterwards, so that `res` keeps a fast shape.
function writeHead(this: Holdable, statusCode: unknown, reason?: unknown, headers?: unknown): Holdable {
  if (typeof reason !== 'string') [headers, reason] = [reason, undefined];
  this.statusCode = Number(statusCode);
  if (typeof reason === 'string') this.statusMessage = reason;
  setHeaders(this, headers);
  return this;
}
function write(this: Holdable, ...args: unknown[]): boolean {
  const held = this[HELD]!;
  if (held.ended) return false;
  held.streamed = true;
  held.record('write', args);
  return true; // held in memory: no backpressure until the commit
}
function end(this: Holdable, ...args: unknown[]): Holdable {
  const held = this[HELD]!;
  if (held.ended) return this;
  held.ended = true;
  held.record('end', args);
  return this;
}
function flushHeaders(this: Holdable): void {
  const held = this[HELD]!;
  held.streamed = true;
  held.record('flushHeaders', []);
}
const HOLDING: readonly ((this: Holdable, ...args: never[]) => unknown)[] = [writeHead, write, end, flushHeaders];

/** The recorded response of one attempt. */
export class HeldResponse {
  private readonly calls: { method: 'write' | 'end' | 'flushHeaders'; args: unknown[] }[] = [];
  /** `res`'s own methods (METHODS order), put back by uninstall. */
  private readonly own: ((...args: unknown[]) => unknown)[];
  private installed = true;
  /** Whether the handler wrote or flushed before ending: a stream, which runs on after the commit. */
  streamed = false;
  /** Whether the handler ended the response. */
  ended = false;
  /** Whether the handler has answered (first write, end or flushHeaders). */
  answered = false;

  constructor(
    private readonly res: Holdable,
    private readonly onAnswer: () => void,
  ) {
    const holdable = res as unknown as Record<Method, unknown>;
    this.own = METHODS.map((method) => holdable[method] as (...args: unknown[]) => unknown);
    res[HELD] = this;
    for (let i = 0; i < METHODS.length; i++) holdable[METHODS[i]!] = HOLDING[i];
  }

  /** @internal Records a call; the first one is the handler's answer. */
  record(method: 'write' | 'end' | 'flushHeaders', args: unknown[]): void {
    this.calls.push({ method, args });
    if (this.answered) return;
    this.answered = true;
    this.onAnswer();
  }

  /** Gives `res` its own methods back (dropping what was recorded). */
  uninstall(): void {
    if (!this.installed) return;
    this.installed = false;
    const holdable = this.res as unknown as Record<Method, unknown>;
    for (let i = 0; i < METHODS.length; i++) holdable[METHODS[i]!] = this.own[i];
    if (this.res[HELD] === this) this.res[HELD] = undefined;
  }

  /** After the commit: gives `res` its methods back and sends what was recorded; later writes go straight out. */
  release(): void {
    this.uninstall();
    for (const { method, args } of this.calls.splice(0)) this.own[METHODS.indexOf(method)]!.apply(this.res, args);
  }
}
