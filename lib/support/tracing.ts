/**
 * OpenTelemetry spans, when the app has `@opentelemetry/api` installed (an
 * optional peer) and has registered an SDK: one span per transaction attempt,
 * its COMMIT, a worker's claim, and each job run, linked to the attempt that
 * scheduled the job. Without the API, or with no SDK registered, nothing is
 * built: the request path pays one check per attempt.
 *
 * The spans carry no SQL, no bound values and no database text: a failure is
 * recorded as the library stores job errors (see stored-error.ts).
 */
import { createRequire } from 'node:module';
import type * as OpenTelemetry from '@opentelemetry/api';
import type { Attributes, Context, Span, Tracer } from '@opentelemetry/api';
import type { StoredError, Transaction } from '../interfaces.js';
import { storedError } from '../scheduler/stored-error.js';

type Api = typeof OpenTelemetry;

const TRACER_NAME = 'aftercommit';

/**
 * The module `name` as the app installed it, or undefined when it is not
 * installed. Resolved from this package's own location, synchronously (the
 * build's CJS form gets `import.meta.url` from tsup's shim).
 */
export function loadOptional<T>(name: string): T | undefined {
  try {
    // The CommonJS build has __filename (tsup's import.meta.url shim cuts a path at a '#').
    const here = typeof __filename === 'string' ? __filename : import.meta.url;
    return createRequire(here)(name) as T;
  } catch (err) {
    if ((err as { code?: unknown }).code === 'MODULE_NOT_FOUND') return undefined;
    // Installed but broken, or a bundler that left no location to resolve from: tracing is off, and the app still loads.
    process.emitWarning(`aftercommit: ${name} could not be loaded (${(err as Error).message}); no spans are made`, { code: 'AFTERCOMMIT_OPTIONAL_MODULE' });
    return undefined;
  }
}

/**
 * Runs `fn` outside any span: for the loops of a worker, which may be started
 * inside a request's span and would otherwise make that trace their parent.
 */
export function detached<T>(fn: () => T): T {
  return api ? api.context.with(api.ROOT_CONTEXT, fn) : fn();
}

const api = loadOptional<Api>('@opentelemetry/api');
/** What the API's global provider delegates to until an SDK registers one. */
const noopProvider = api?.ProxyTracerProvider && new api.ProxyTracerProvider().getDelegate();

/** The API and our tracer while an SDK is registered; undefined otherwise, so that no span object is made for nothing. */
function tracing(): { api: Api; tracer: Tracer } | undefined {
  if (!api) return undefined;
  const provider = api.trace.getTracerProvider();
  // A provider of another copy of the API is not recognised: then spans are made, and the SDK decides.
  if (noopProvider && provider instanceof api.ProxyTracerProvider && provider.getDelegate() === noopProvider) return undefined;
  return { api, tracer: provider.getTracer(TRACER_NAME) };
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** True for a W3C `traceparent` of version 00 with non-zero ids: stored data is checked before it is used. */
export function isTraceparent(value: unknown): value is string {
  if (typeof value !== 'string') return false;
  const match = TRACEPARENT.exec(value);
  return match !== null && !/^0+$/.test(match[1]!) && !/^0+$/.test(match[2]!);
}

/** How a failure shows on a span: the stored form of the error, so no SQL or data reaches the trace. */
function recordFailure(api: Api, span: Span, error: StoredError, asError = true): void {
  // Not the code: the SDK would report it as the exception's type; a database error's description ends with it.
  span.recordException({ name: error.name, message: error.message });
  if (asError) span.setStatus({ code: api.SpanStatusCode.ERROR, message: error.message });
}

/** How an attempt ended: committed, rolled back for good, or rolled back to run again. */
type AttemptOutcome = 'commit' | 'rollback' | 'retry';

/** The span of one transaction attempt (`aftercommit.transaction`), the parent of its COMMIT's. @internal */
export class AttemptSpan {
  private constructor(
    private readonly api: Api,
    private readonly tracer: Tracer,
    private readonly span: Span,
    /** The context in which the attempt's function runs: the span's parent's, with this span active. */
    private readonly context: Context,
  ) {}

  /** When its COMMIT ended (performance.now()): the span ends there, not after the after-commit hooks. */
  private committedAt: number | undefined;

  /** Starts the span of an attempt as a child of the active span (an HTTP server span, a job run); undefined while nothing traces. */
  static start(name: string, attempt: number, escalated: boolean): AttemptSpan | undefined {
    const traced = tracing();
    if (!traced) return undefined;
    const { api, tracer } = traced;
    const parent = api.context.active();
    const attributes: Attributes = { 'aftercommit.transaction.attempt': attempt, 'aftercommit.transaction.escalated': escalated };
    if (name) attributes['aftercommit.transaction.name'] = name;
    const span = tracer.startSpan('aftercommit.transaction', { attributes }, parent);
    return new AttemptSpan(api, tracer, span, api.trace.setSpan(parent, span));
  }

  /** Calls `fn` with this span active: the spans the attempt's function makes are its children. */
  within<T>(fn: () => T): T {
    return this.api.context.with(this.context, fn);
  }

  /** The W3C `traceparent` of this span, stored with the jobs the attempt schedules. */
  get traceparent(): string {
    const { traceId, spanId, traceFlags } = this.span.spanContext();
    return `00-${traceId}-${spanId}-${(traceFlags & 0xff).toString(16).padStart(2, '0')}`;
  }

  /** Starts the span of a COMMIT of this attempt; call what it returns, with the error if it failed, once it ended. */
  startCommit(): (error?: unknown) => void {
    const span = this.tracer.startSpan(
      'aftercommit.commit',
      { kind: this.api.SpanKind.CLIENT, attributes: { 'db.operation.name': 'COMMIT' } },
      this.context,
    );
    return (error) => {
      if (error !== undefined) recordFailure(this.api, span, storedError(error));
      else this.committedAt = performance.now();
      span.end();
    };
  }

  /** Ends the span; `error` is why the attempt rolled back (its conflict when it is retried). */
  end(outcome: AttemptOutcome, error?: unknown): void {
    this.span.setAttribute('aftercommit.transaction.outcome', outcome);
    if (error !== undefined) {
      const stored = storedError(error);
      if (outcome === 'retry') this.span.setAttribute('aftercommit.transaction.conflict', conflictCode(error, stored));
      // A retried attempt is an exception the run handled, not an error of it.
      recordFailure(this.api, this.span, stored, outcome !== 'retry');
    }
    this.span.end(this.committedAt);
  }
}

/** A low-cardinality name for a conflict: the database's code (ER_LOCK_DEADLOCK, 40001, SQLITE_BUSY), or the error's own. */
function conflictCode(error: unknown, stored: StoredError): string {
  const code = (error as { code?: unknown } | null)?.code;
  return stored.code ?? (typeof code === 'string' ? code : stored.name);
}

/** The traceparent of the span of `tx` (a TransactionAttempt), while it is traced. */
export function traceparentOf(tx: Transaction): string | undefined {
  return (tx as { span?: AttemptSpan }).span?.traceparent;
}

/**
 * Runs a worker's claim inside an `aftercommit.claim` span of its own trace
 * (its transaction's attempt is a child): which worker, which queues, how many
 * jobs it claimed.
 */
export function traceClaim<T extends readonly unknown[]>(worker: string, queues: readonly string[], claim: () => Promise<T>): Promise<T> {
  const traced = tracing();
  if (!traced) return claim();
  const { api, tracer } = traced;
  const attributes = { 'aftercommit.worker.id': worker, 'aftercommit.claim.queues': [...queues] };
  // A root: the worker's loop keeps the context it was started in (a request's, perhaps).
  return tracer.startActiveSpan('aftercommit.claim', { root: true, attributes }, async (span) => {
    try {
      const claimed = await claim();
      span.setAttribute('aftercommit.claim.count', claimed.length);
      return claimed;
    } catch (err) {
      recordFailure(api, span, storedError(err));
      throw err;
    } finally {
      span.end();
    }
  });
}

/** What the span of a job run shows of it. */
export interface TracedJobRun {
  id: string;
  name: string;
  queue: string;
  run: number;
  attempt: number;
  /** The scheduling attempt's `traceparent`, as stored with the job: checked, ignored when malformed. */
  traceparent?: unknown;
}

/**
 * Runs a job inside an `aftercommit.job` span of its own trace (its
 * transaction's attempts are children), linked to the span of the attempt that
 * scheduled it, when that one was traced.
 */
export function traceJobRun<T extends { state: 'done' } | { state: 'failed'; error: StoredError }>(job: TracedJobRun, run: () => Promise<T>): Promise<T> {
  const traced = tracing();
  if (!traced) return run();
  const { api, tracer } = traced;
  const attributes = {
    'aftercommit.job.name': job.name,
    'aftercommit.job.id': job.id,
    'aftercommit.job.queue': job.queue,
    'aftercommit.job.run': job.run,
    'aftercommit.job.attempt': job.attempt,
  };
  const links = isTraceparent(job.traceparent) ? [{ context: spanContextOf(job.traceparent) }] : [];
  const options = { kind: api.SpanKind.CONSUMER, root: true, attributes, links };
  return tracer.startActiveSpan('aftercommit.job', options, async (span) => {
    try {
      const outcome = await run();
      span.setAttribute('aftercommit.job.outcome', outcome.state);
      if (outcome.state === 'failed') recordFailure(api, span, outcome.error);
      return outcome;
    } finally {
      span.end();
    }
  });
}

/** The span context a checked traceparent names, as a remote parent would be. */
function spanContextOf(traceparent: string): OpenTelemetry.SpanContext {
  const [, traceId, spanId, flags] = TRACEPARENT.exec(traceparent)!;
  return { traceId: traceId!, spanId: spanId!, traceFlags: Number.parseInt(flags!, 16), isRemote: true };
}
