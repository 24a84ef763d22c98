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

/** The recorded response of one attempt. */
export class HeldResponse {
  private readonly calls: { method: 'write' | 'end' | 'flushHeaders'; args: unknown[] }[] = [];
  private readonly previous = new Map<Method, PropertyDescriptor | undefined>();
  private readonly originals = new Map<Method, (...args: unknown[]) => unknown>();
  private installed = false;
  /** Whether the handler wrote or flushed before ending: a stream, which runs on after the commit. */
  streamed = false;
  /** Whether the handler ended the response. */
  ended = false;
  /** Whether the handler has answered (first write, end or flushHeaders). */
  answered = false;

  constructor(
    private readonly res: ServerResponse,
    private readonly onAnswer: () => void,
  ) {
    for (const method of METHODS) {
      this.previous.set(method, Object.getOwnPropertyDescriptor(res, method));
      this.originals.set(method, (res[method] as (...args: unknown[]) => unknown).bind(res));
    }
    this.install();
  }

  private answer(): void {
    if (this.answered) return;
    this.answered = true;
    this.onAnswer();
  }

  private install(): void {
    const { res } = this;
    const overrides: Record<Method, (...args: unknown[]) => unknown> = {
      writeHead: (statusCode: unknown, reason?: unknown, headers?: unknown) => {
        if (typeof reason !== 'string') [headers, reason] = [reason, undefined];
        res.statusCode = Number(statusCode);
        if (typeof reason === 'string') res.statusMessage = reason;
        setHeaders(res, headers);
        return res;
      },
      write: (...args: unknown[]) => {
        if (this.ended) return false;
        this.streamed = true;
        this.calls.push({ method: 'write', args });
        this.answer();
        return true; // held in memory: no backpressure until the commit
      },
      end: (...args: unknown[]) => {
        if (this.ended) return res;
        this.ended = true;
        this.calls.push({ method: 'end', args });
        this.answer();
        return res;
      },
      flushHeaders: () => {
        this.streamed = true;
        this.calls.push({ method: 'flushHeaders', args: [] });
        this.answer();
      },
    };
    for (const method of METHODS) {
      Object.defineProperty(res, method, { configurable: true, writable: true, enumerable: false, value: overrides[method] });
    }
    this.installed = true;
  }

  /** Gives `res` its own methods back (dropping what was recorded). */
  uninstall(): void {
    if (!this.installed) return;
    this.installed = false;
    for (const method of METHODS) {
      const previous = this.previous.get(method);
      if (previous) Object.defineProperty(this.res, method, previous);
      else delete (this.res as unknown as Record<string, unknown>)[method];
    }
  }

  /** After the commit: gives `res` its methods back and sends what was recorded; later writes go straight out. */
  release(): void {
    this.uninstall();
    for (const { method, args } of this.calls.splice(0)) this.originals.get(method)!(...args);
  }
}
