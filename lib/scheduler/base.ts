/**
 * What both schedulers share: the job registry, entity contexts, the stored
 * form of arguments and results, and running one job in a transaction of its
 * own with its handle.
 */
import { EventEmitter } from 'node:events';
import type {
  ArgumentCodec,
  BatchSpec,
  EntityKey,
  GetResultOptions,
  JobFunction,
  JobHandle,
  JobProgress,
  JobSpec,
  Logger,
  QueueGauges,
  SchedulerEvents,
  SchedulerMetrics,
  SchedulerOptions,
  StoredError,
  StepSpec,
  Transaction,
  TransactionMeta,
} from '../interfaces.js';
import type { TransactionManager } from '../transactions/manager.js';
import { NoTransactionError, UnknownJobError } from '../errors.js';
import { Entities } from '../context/entities.js';
import { EntityRef, ref } from '../context/ref.js';
import { PersistentContext } from '../context/persistent-context.js';
import { ValueCodec } from './codec.js';
import { storedError } from './stored-error.js';
import { jobOwner } from './owner.js';
import { integerIn } from '../support/validate.js';
import { StoredBatchSpec, StoredJobSpec, checkSteps } from './specs.js';
import { RunMetrics } from './run-metrics.js';
import { traceJobRun } from '../support/tracing.js';

const JOB_NAME = /^[A-Za-z0-9_.:-]{1,100}$/;
/** The longest a result is kept: its expiry, a time in ms, must stay a storable integer. */
export const MAX_TTL_MS = 10 * 365 * 86_400_000;

/** One run of a job, as the scheduler hands it to {@link SchedulerBase.runJob}. */
export interface JobRun {
  id: string;
  name: string;
  /** The job's queue (the in-memory scheduler's jobs are all in `default`). */
  queue: string;
  /** When the job was due (to report how long it waited), if known. */
  dueAt?: number;
  fn: JobFunction;
  /** The stored arguments. */
  args: string;
  meta: TransactionMeta;
  signal: AbortSignal;
  /** The try of the job against `maxAttempts` this run is (see JobHandle.attempt). */
  attempt: number;
  maxAttempts: number;
  /** The number of this run among the job's runs (see JobHandle.run). */
  run: number;
  progress(progress: JobProgress): Promise<void>;
  /** Writes the stored result inside the job's transaction, before it commits. */
  commitResult?(tx: Transaction, result: string): Promise<void>;
  /** Ends the run from outside when it aborts, even if the job ignores its signal (see RunOptions.signal). */
  end?: AbortSignal;
  /** The scheduling attempt's W3C trace context, as stored with the job: the run's span links to it. */
  traceparent?: string;
}

/** How a run ended, and in which attempt of its transaction. */
export type JobOutcome =
  | { state: 'done'; value: string; transactionAttempt: number }
  | { state: 'failed'; error: StoredError; cause: unknown; transactionAttempt: number };

/** Whether a schedule made with `meta` may be shown to `options.visibleTo` (see GetResultOptions). */
export function visibleTo(meta: TransactionMeta, options: GetResultOptions): boolean {
  if (options.visibleTo === undefined) return true;
  if (meta.user === undefined || meta.user === null) return true;
  return options.visibleTo !== null && String(options.visibleTo) === String(meta.user);
}

function checkProgress(fraction: unknown, message: unknown): JobProgress {
  if (typeof fraction !== 'number' || !(fraction >= 0 && fraction <= 1)) {
    throw new RangeError(`job.progress(fraction, message): fraction must be a number from 0 to 1, got ${String(fraction)}`);
  }
  if (message !== undefined && typeof message !== 'string') {
    throw new TypeError('job.progress(fraction, message): message must be a string');
  }
  return message === undefined ? { fraction } : { fraction, message: message.slice(0, 500) };
}

export abstract class SchedulerBase extends EventEmitter<SchedulerEvents> {
  readonly manager: TransactionManager;
  /** @internal */
  protected readonly logger: Logger;
  /** @internal */
  protected readonly entities: Entities;
  /** @internal */
  protected readonly codec: ValueCodec;
  /** @internal */
  protected readonly ttl: number;
  private readonly jobs = new Map<string, JobFunction>();
  /** Counters of this process's runs. @internal */
  protected readonly runMetrics: RunMetrics;

  constructor(manager: TransactionManager, options: SchedulerOptions = {}) {
    super();
    this.manager = manager;
    this.logger = manager.logger;
    this.runMetrics = new RunMetrics(manager.clock);
    this.entities = new Entities(options.entities);
    this.ttl = integerIn(options.ttl ?? 3_600_000, 'ttl (ms)', 1, MAX_TTL_MS);
    this.codec = new ValueCodec(
      {
        codecs: options.codecs ?? [],
        maxArgumentBytes: integerIn(options.maxArgumentBytes ?? 65_536, 'maxArgumentBytes', 1),
        maxResultBytes: integerIn(options.maxResultBytes ?? 1_048_576, 'maxResultBytes', 1),
      },
      this.contextCodec(),
    );
  }

  /** Registers `fn` as the job called `name`. */
  define<A extends any[]>(name: string, fn: JobFunction<A>): this {
    if (typeof name !== 'string' || !JOB_NAME.test(name)) {
      throw new TypeError(`define(name, fn): name must be 1-100 characters of letters, digits, _ . : -, got ${JSON.stringify(name)}`);
    }
    if (typeof fn !== 'function') throw new TypeError(`define('${name}', fn): fn must be a function`);
    if (this.jobs.has(name) && this.jobs.get(name) !== fn) throw new Error(`a different job named '${name}' is already defined`);
    this.jobs.set(name, fn as JobFunction);
    return this;
  }

  /**
   * Describes a run of the defined job `name` with `args` without scheduling it:
   * a step of a batch, or a callback. The arguments are checked and stored now,
   * as `schedule()` would.
   */
  job(name: string, ...args: unknown[]): JobSpec {
    this.definedJob(name);
    return new StoredJobSpec(this, name, this.codec.encodeArguments(name, args));
  }

  /** Describes a batch without scheduling it: a step of another batch. */
  batch(kind: 'serial' | 'parallel', ...steps: StepSpec[]): BatchSpec {
    if (kind !== 'serial' && kind !== 'parallel') throw new TypeError(`batch(kind, ...steps): kind must be 'serial' or 'parallel', got ${JSON.stringify(kind)}`);
    return new StoredBatchSpec(kind, checkSteps(this, steps, `batch('${String(kind)}', ...steps)`));
  }

  /** Names of the defined jobs. */
  definedJobs(): string[] {
    return [...this.jobs.keys()];
  }

  /**
   * A persistent context of entities for a job: positional ones read back with
   * `context.get(0)`, named ones with `context.get('name')`. Each entity is a
   * `ref(table, key)` or a row loaded with `load()`.
   */
  context(positional: readonly unknown[] = [], named: Readonly<Record<string, unknown>> = {}): PersistentContext {
    return new PersistentContext(positional, named, this.entities, this.manager);
  }

  /** Loads a row of an allowed table in the current transaction; the row can go into a context as is. */
  load<T = Record<string, unknown>>(table: string, key: EntityKey): Promise<T> {
    const tx = this.transaction(`load('${table}', …)`);
    return this.entities.load(tx.db, ref(table, key), `load('${table}', ${JSON.stringify(key)})`) as Promise<T>;
  }

  /** The transaction `schedule()` writes to, once it is known who will own the job (see jobOwner). @internal */
  protected schedulingTransaction(): Transaction {
    const tx = this.transaction('schedule()');
    jobOwner(tx.meta);
    return tx;
  }

  /** The open transaction `what` needs, or a clear error. @internal */
  protected transaction(what: string): Transaction {
    const tx = this.manager.current;
    if (!tx) throw new NoTransactionError(what);
    return tx;
  }

  /** The registered job called `name`, or an error listing the defined ones. @internal */
  protected definedJob(name: string): JobFunction {
    const fn = this.jobs.get(name);
    if (!fn) throw new UnknownJobError(name, this.definedJobs());
    return fn;
  }

  /** The name under which `fn` was defined, if it was. @internal */
  protected nameOf(fn: JobFunction): string | undefined {
    for (const [name, defined] of this.jobs) if (defined === fn) return name;
    return undefined;
  }

  /**
   * Runs one job in a transaction of its own: its writes commit together with
   * its result, or roll back when it throws (or is cancelled through its signal).
   * With OpenTelemetry, the run is a span of its own (see support/tracing.ts).
   * @internal
   */
  protected runJob(run: JobRun): Promise<JobOutcome> {
    return traceJobRun(run, () => this.runJobInTransaction(run));
  }

  private async runJobInTransaction(run: JobRun): Promise<JobOutcome> {
    const started = this.jobStarted(run);
    let transactionAttempt = 0;
    let value: string;
    try {
      value = await this.manager.run(
        async (tx) => {
          transactionAttempt = tx.attempt;
          const stored = await this.callJob(run, tx);
          await run.commitResult?.(tx, stored);
          return stored;
        },
        {
          name: `job ${run.name}`,
          metadata: { ...run.meta, note: `job ${run.name}` },
          signal: run.end,
          onRetry: (event) =>
            this.emitSafely('retried', { id: run.id, name: run.name, queue: run.queue, attempt: run.attempt, run: run.run, transactionAttempt: event.attempt, error: event.error }),
        },
      );
    } catch (cause) {
      return { state: 'failed', error: storedError(cause), cause, transactionAttempt };
    }
    this.jobSucceeded(run, transactionAttempt, this.manager.clock.now() - started);
    return { state: 'done', value, transactionAttempt };
  }

  /**
   * Runs a job of a group inside the group's open transaction `tx` (see job-group.ts): its stored
   * result, or how it failed. `succeeded` is emitted by the group once its COMMIT landed. @internal
   */
  protected runJobInGroup(run: JobRun, tx: Transaction): Promise<JobOutcome & { durationMs: number }> {
    return traceJobRun(run, async () => {
      const started = this.jobStarted(run);
      try {
        const value = await this.callJob(run, tx);
        return { state: 'done', value, transactionAttempt: tx.attempt, durationMs: this.manager.clock.now() - started };
      } catch (cause) {
        return { state: 'failed', error: storedError(cause), cause, transactionAttempt: tx.attempt, durationMs: this.manager.clock.now() - started };
      }
    });
  }

  /** Emits `started`; returns when. */
  private jobStarted(run: JobRun): number {
    const started = this.manager.clock.now();
    const { id, name, queue } = run;
    this.emitSafely('started', { id, name, queue, run: run.run, ...(run.dueAt === undefined ? {} : { delayMs: started - run.dueAt }) });
    return started;
  }

  /** Emits `succeeded` for a run whose result committed. @internal */
  protected jobSucceeded(run: Pick<JobRun, 'id' | 'name' | 'queue' | 'attempt' | 'run'>, transactionAttempt: number, durationMs: number): void {
    const { id, name, queue, attempt } = run;
    this.emitSafely('succeeded', { id, name, queue, attempt, run: run.run, transactionAttempt, durationMs });
  }

  /** Calls the job's function in `tx` and returns its result, stored. */
  private async callJob(run: JobRun, tx: Transaction): Promise<string> {
    const handle: JobHandle = {
      id: run.id,
      name: run.name,
      attempt: run.attempt,
      run: run.run,
      maxAttempts: run.maxAttempts,
      transactionAttempt: tx.attempt,
      meta: run.meta,
      db: tx.db,
      signal: run.signal,
      progress: async (fraction, message) => run.progress(checkProgress(fraction, message)),
    };
    const result = await run.fn(handle, ...this.codec.decodeArguments(run.args));
    run.signal.throwIfAborted();
    return this.codec.encodeResult(run.name, result);
  }

  /** Emits a scheduler event; a listener that throws is logged and never fails a job or a worker. @internal */
  protected emitSafely<K extends keyof SchedulerEvents>(event: K, ...args: SchedulerEvents[K]): void {
    this.runMetrics.record(event, ...args);
    try {
      (this.emit as (event: K, ...args: SchedulerEvents[K]) => boolean)(event, ...args);
    } catch (err) {
      this.logger.error({ err, event }, `a '${String(event)}' listener threw; ignored`);
    }
  }

  /** Logs a job's failure for good and emits `failed`. @internal */
  protected reportFailure(job: { id: string; name: string; queue: string }, failure: { error: StoredError; cause: unknown; attempt: number; run: number }): void {
    const { error, cause, attempt, run } = failure;
    this.logger.error({ err: cause, job: job.name, id: job.id, attempt, run }, `job ${job.name} (${job.id}) failed: ${error.name}: ${error.message}`);
    this.emitSafely('failed', { id: job.id, name: job.name, queue: job.queue, attempt, run, error });
  }

  /** Unfinished jobs by queue, counted where they are kept. @internal */
  protected abstract queueGauges(): Promise<Record<string, QueueGauges>>;

  async metrics(): Promise<SchedulerMetrics> {
    const queues = await this.queueGauges();
    const runs = this.runMetrics.snapshot();
    // A queue this process ran jobs of, or the default one, reports 0 when nothing waits (absent would read as unknown).
    for (const queue of ['default', ...Object.keys(runs)]) queues[queue] ??= { waiting: 0, pending: 0, running: 0, oldestDueMs: null };
    return { queues, runs };
  }

  /** Stores a context as the refs of its entities; a stored context is re-checked against the allow-list when read. */
  private contextCodec(): ArgumentCodec<PersistentContext> {
    const toStored = (entity: EntityRef) => ({ table: entity.table, key: entity.key });
    const fromStored = (stored: { table: string; key: EntityKey }) => ref(stored.table, stored.key);
    return {
      name: 'context',
      test: (value) => value instanceof PersistentContext,
      encode: (context) => ({
        positional: context.positional.map(toStored),
        named: Object.fromEntries(Object.entries(context.named).map(([name, entity]) => [name, toStored(entity)])),
      }),
      decode: (stored) => {
        const { positional, named } = stored as { positional: { table: string; key: EntityKey }[]; named: Record<string, { table: string; key: EntityKey }> };
        return new PersistentContext(
          positional.map(fromStored),
          Object.fromEntries(Object.entries(named).map(([name, entity]) => [name, fromStored(entity)])),
          this.entities,
          this.manager,
        );
      },
    };
  }
}
