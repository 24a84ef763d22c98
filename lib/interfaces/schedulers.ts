// Public types of `aftercommit`, schedulers: what both schedulers (in-memory and
// persistent) share: jobs and their handle, results, entity contexts, codecs,
// scheduler options, statistics and events.
// Re-exported by lib/interfaces.ts: import them from there.
// Imports types of transactions.ts only. The terms of transactions are in the
// terminology block of lib/interfaces.ts; those of the schedulers follow.
import type { Knex } from 'knex';
import type { TransactionMeta } from './transactions.js';

/**
 * More terminology
 * ----------------
 * - **schedule**: a request to run a job once the scheduling transaction commits;
 *   identified by a 32-hex id returned at once by `schedule()`.
 * - **job**: a function registered with `define(name, fn)` (or, for the in-memory
 *   scheduler, passed directly); it receives a {@link JobHandle} and the scheduled
 *   arguments, and runs in a transaction of its own.
 * - **result**: what a finished job left: its return value (`done`) or its error
 *   (`failed`); fetched with `getResult(id)` and deleted when the fetching
 *   transaction commits, or after `ttl` when nobody fetches it (the persistent
 *   scheduler keeps failed ones until acted on, and more by its `retention`).
 * - **entity context**: table and primary key of rows handed to a job, re-loaded in
 *   the job's own transaction.
 */

/** How far a running job has come, as reported by `job.progress()`. */
export interface JobProgress {
  /** Between 0 and 1. */
  fraction: number;
  /** A short human-readable note, e.g. "42 of 100 orders". */
  message?: string;
}

/** A job's failure as stored and reported: never a stack, never SQL with its bound values. */
export interface StoredError {
  name: string;
  message: string;
  /** For a database error (`name` is `DatabaseError`): the driver's code, e.g. `ER_DUP_ENTRY`, `23505`, `SQLITE_CONSTRAINT_UNIQUE`; its `message` is then a fixed description of that kind of error, never the database's text. */
  code?: string;
  /** For a database error: its SQLSTATE, when the driver reports one (MySQL/MariaDB, PostgreSQL). */
  sqlState?: string;
  /** For a MySQL/MariaDB error: its error number, e.g. 1062. */
  errno?: number;
}

/**
 * Where a job is in its life, in every scheduler and in the jobs table:
 * `waiting` (a batch whose steps run, or a step whose turn in its batch has not
 * come), `pending` (committed, waiting to be due, for a worker or for a free
 * slot), `running`, `done` (its result committed) or `failed` (for good).
 */
export type JobState = 'waiting' | 'pending' | 'running' | 'done' | 'failed';

/** A job described, not scheduled: `scheduler.job(name, ...args)`, its arguments checked and stored at that call. A step of a batch, or a callback. */
export interface JobSpec {
  readonly kind: 'job';
  /** The defined job it runs. */
  readonly name: string;
}

/** A batch described, not scheduled: `scheduler.batch('serial' | 'parallel', ...steps)`, a step of another batch. */
export interface BatchSpec {
  readonly kind: 'serial' | 'parallel';
  readonly steps: readonly StepSpec[];
}

/** A step of a batch: a job or a batch. */
export type StepSpec = JobSpec | BatchSpec;

/** One step's outcome in the `value` of a finished batch, in the order the steps were given. */
export type StepOutcome = { state: 'done'; value: unknown } | { state: 'failed'; error: StoredError } | { state: 'skipped' };

/**
 * What a callback job receives after its own arguments: the outcome of the job (or batch) it was
 * attached to. `value` is left out when it cannot be passed (larger than `maxArgumentBytes`, or no
 * longer decodable): read it with `getResult(id)`.
 */
export type ParentOutcome = { id: string; state: 'done'; value?: unknown } | { id: string; state: 'failed'; error: StoredError };

/** What `getResult(id)` resolves to: a running job reads `pending` (with its progress), an id nobody may see `unknown`. */
export type ScheduleResult<T = unknown> =
  | { state: 'unknown' }
  | { state: 'pending'; progress?: JobProgress }
  | { state: 'done'; value: T }
  | { state: 'failed'; error: StoredError };

/** Options of `getResult`. */
export interface GetResultOptions {
  /**
   * Who asks: a schedule made for another user is reported `unknown` (and left
   * alone). `null` is an anonymous caller, who sees only schedules made with no
   * user. Leave it out to skip the check (trusted code).
   */
  visibleTo?: string | number | null;
  /** Delete a done/failed result when the fetching transaction commits: fetching consumes the result. Default true. */
  consume?: boolean;
}

/** What the HTTP adapters and other callers need of a scheduler, whichever kind it is. */
export interface Scheduler {
  /** Schedules `job` to start once the current transaction commits; returns the 32-hex id at once. */
  schedule(job: string | JobFunction, ...args: unknown[]): string;
  /** Describes a run of the defined job `name` without scheduling it (a batch's step, a callback); the arguments are checked now. */
  job(name: string, ...args: unknown[]): JobSpec;
  /** Describes a batch without scheduling it: a step of another batch. */
  batch(kind: 'serial' | 'parallel', ...steps: StepSpec[]): BatchSpec;
  /** Schedules a serial batch (its steps one after another); returns its id at once. */
  serial(...steps: StepSpec[]): string;
  /** Schedules a parallel batch (its steps at once); returns its id at once. */
  parallel(...steps: StepSpec[]): string;
  /** What became of schedule `id`. */
  getResult(id: string, options?: GetResultOptions): Promise<ScheduleResult>;
  /** Deletes schedule `id` (and cancels its job). */
  remove(id: string): Promise<void>;
  /** A persistent context of entities for a job. */
  context(positional?: readonly unknown[], named?: Readonly<Record<string, unknown>>): PersistentContextLike;
  /** What a metrics endpoint reports: unfinished jobs by queue, and what this process's runs did. */
  metrics(): Promise<SchedulerMetrics>;
}

/** Unfinished jobs of one queue, counted where they are kept (the database for the persistent scheduler). */
export interface QueueGauges {
  waiting: number;
  pending: number;
  running: number;
  /** Ms since the longest-waiting due pending job of the queue became due; null when none is due. */
  oldestDueMs: number | null;
}

/** A histogram of durations in ms: `counts[i]` runs took at most `bounds[i]` ms (cumulative), `count` all of them. */
export interface DurationHistogram {
  readonly bounds: readonly number[];
  readonly counts: readonly number[];
  readonly count: number;
  readonly sumMs: number;
}

/** What this process's runs of one queue did since the scheduler was created. */
export interface QueueRuns {
  /** Runs that committed their result. */
  done: number;
  /** Jobs that failed for good. */
  failed: number;
  /** Runs that went again: a transaction's transient error, or a failed run re-queued. */
  retried: number;
  /** Runs whose claim was taken over or whose schedule was removed while they ran. */
  lostLeases: number;
  /** From the moment a job was due to its run's start (persistent scheduler: claim latency). */
  startDelay: DurationHistogram;
  /** From a run's start to its commit, for the runs that committed. */
  runTime: DurationHistogram;
}

/** `scheduler.metrics()`: gauges of unfinished jobs read from where they are kept, and counters of this process's runs. */
export interface SchedulerMetrics {
  /** Unfinished jobs by queue (finished rows are not counted: they may be millions). */
  queues: Record<string, QueueGauges>;
  /** This process's runs by queue. */
  runs: Record<string, QueueRuns>;
}

/** Jobs finished per minute over the last hour (the dashboard's chart): 60 counts each, oldest first. */
export interface FinishedPerMinute {
  /** The start (ms since the epoch) of the newest minute, the last of the counts. */
  minute: number;
  /** Jobs that committed their result, per minute. */
  done: number[];
  /** Jobs that failed for good, per minute. */
  failed: number[];
}

/** A persistent context, as `Scheduler.context` returns it. */
export interface PersistentContextLike {
  readonly length: number;
  names(): string[];
  get<T = Record<string, unknown>>(key: number | string): Promise<T>;
  /** The table and key of entity `key`, without loading it. */
  ref(key: number | string): EntityReference;
}

/**
 * Where a run of a job stands. Three counts, each with one meaning; each only
 * goes up over the job's life (`transactionAttempt` starts at 1 in each run).
 */
export interface JobCounts {
  /**
   * Which try of the job against `maxAttempts` this is: 1 at first, one more
   * after each run that failed with an error of the job's own and was re-queued.
   * Conflicts, crashes and hand-backs run the same attempt again. Never above
   * `maxAttempts`: `attempt === maxAttempts` is the last try.
   */
  readonly attempt: number;
  /**
   * The number of this run among the job's runs: 1 at first, one more each
   * time a worker claims it again (after a failure, a conflict that outlasted
   * the transaction's retries, a crash or a lost lease; not after a stopping
   * worker handed it back). At most `maxAttempts + maxRuns - 1`: runs that failed
   * with the job's own error count against `maxAttempts`, the others against `maxRuns`.
   */
  readonly run: number;
  /**
   * The attempt of this run's transaction: 1, then 2, 3, … when a conflict re-runs
   * the job at once (`retries`). In an event of a run that ended before its
   * transaction began (e.g. a job this worker does not define), 0.
   */
  readonly transactionAttempt: number;
}

/** What a job function receives first, before the scheduled arguments. */
export interface JobHandle extends JobCounts {
  /** The schedule id. */
  readonly id: string;
  /** The job's name. */
  readonly name: string;
  /** Tries allowed for errors of the job's own (`JobOptions.maxAttempts`; 1 for the in-memory scheduler). */
  readonly maxAttempts: number;
  /** The scheduling transaction's metadata: `meta.user` is whom the job runs for. */
  readonly meta: TransactionMeta;
  /** The job's own transaction (knex bound to it). */
  readonly db: Knex.Transaction;
  /** Reports progress, visible to `getResult` pollers at once, while the job still runs. */
  progress(fraction: number, message?: string): Promise<void>;
  /** Aborted when the schedule is removed or the scheduler stops; a job that honours it ends early. */
  readonly signal: AbortSignal;
}

/** A job: the handle, then the scheduled arguments; its (storable) return value is the result. */
export type JobFunction<A extends any[] = any[], R = unknown> = (job: JobHandle, ...args: A) => R | Promise<R>;

/** Stores values of one type among job arguments and results, which are otherwise JSON. */
export interface ArgumentCodec<T = unknown> {
  /** A short name, unique among the codecs, stored with each value it encodes. */
  name: string;
  /** True for the values this codec stores. */
  test(value: unknown): boolean;
  /** Turns a value into JSON-compatible data. */
  encode(value: T): unknown;
  /** Turns stored data back into the value. */
  decode(stored: unknown): T;
}

/** The primary key of an entity: one value, or column → value for a composite key. */
export type EntityKey = string | number | { readonly [column: string]: string | number };

/**
 * A row named by its table and primary key: what an `EntityRef` made by
 * `ref(table, key)` shows. Described here by its shape, so these public types
 * need no import of the class.
 */
export interface EntityReference {
  readonly table: string;
  readonly key: EntityKey;
  /** `table` and the key as JSON, for messages. */
  toString(): string;
}

/** The JavaScript type a key column's values must have in a ref: `'integer'` a safe integer number, `'string'` a string (see `SchedulerOptions.entities`). */
export type EntityKeyType = 'integer' | 'string';

/** Options shared by both schedulers. */
export interface SchedulerOptions {
  /** How many jobs run at once in this process; more wait in a queue. Default 4. */
  concurrency?: number;
  /** How long (ms) a finished result is kept when nobody fetches it (the persistent scheduler's `retention` keeps rows longer). Default 3,600,000 (one hour). */
  ttl?: number;
  /**
   * The tables jobs may load entities from, each with its primary key column(s)
   * and their types, e.g. `{ users: { id: 'integer' }, invites: { token: 'string' },
   * order_lines: { order_id: 'integer', line: 'integer' } }`. A context naming any
   * other table, or giving a key of another type, is refused, when it is built and
   * when it is loaded. Columns named without a type (`{ users: 'id' }`,
   * `['order_id', 'line']`, the older forms) take integer keys only: a safe
   * integer, or its decimal digits as a string, compared as that string.
   */
  entities?: Readonly<Record<string, string | readonly string[] | Readonly<Record<string, EntityKeyType>>>>;
  /** Extra codecs for argument and result types beyond JSON, Date and entity contexts (e.g. {@link bigIntCodec}). */
  codecs?: readonly ArgumentCodec[];
  /** Largest size (bytes, once encoded) of a job's arguments. Default 65,536. */
  maxArgumentBytes?: number;
  /** Largest size (bytes, once encoded) of a job's result. Default 1,048,576. */
  maxResultBytes?: number;
}

/** Counts of the schedules a scheduler knows, by state. */
export interface SchedulerStats {
  /** Waiting for their scheduling transaction to commit. */
  uncommitted: number;
  /** Batches whose steps run, and steps whose turn has not come. */
  waiting: number;
  /** Committed, waiting for a free slot. */
  pending: number;
  running: number;
  done: number;
  failed: number;
}

/** Options of `stop()`. */
export interface StopOptions {
  /** How long (ms) running jobs may go on before their signal is aborted. Default 10,000. */
  timeout?: number;
}

/** Events a scheduler emits, for logging and metrics. */
export interface SchedulerEvents {
  /** A run of a job starts; `delayMs` is the time since the job was due, when known. */
  started: [event: { id: string; name: string; queue: string; run: number; delayMs?: number }];
  /** A job committed its result. */
  succeeded: [event: JobCounts & { id: string; name: string; queue: string; durationMs: number }];
  /** A job failed for good; its writes were rolled back. `run` is the run that failed (the last one lost, for WorkerLostError). */
  failed: [event: Omit<JobCounts, 'transactionAttempt'> & { id: string; name: string; queue: string; error: StoredError }];
  /**
   * A job runs again: its transaction hit a transient error and runs again at
   * once (`transactionAttempt` is the one that failed), or (persistent scheduler)
   * a failed run was re-queued (`attempt` and `run` are those of the run that failed).
   */
  retried: [event: JobCounts & { id: string; name: string; queue: string; error: unknown }];
  /** A running job's claim was taken over (its lease expired) or the schedule was removed: its writes roll back. */
  'lost-lease': [event: { id: string; name: string; queue: string; worker: string }];
}
