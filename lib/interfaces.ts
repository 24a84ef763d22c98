/**
 * The public types of `aftercommit` are here, those of `aftercommit/koa` in
 * lib/koa/interfaces.ts.
 *
 * Terminology
 * -----------
 * - **transaction**: one unit of work run by {@link TransactionManager.run}. It
 *   commits when the function returns and rolls back when it throws. One call of
 *   `run` may take several *attempts*.
 * - **attempt**: one execution of the function inside a fresh database
 *   transaction. A transient error ends the attempt and, while retries are left,
 *   starts the next one (escalated, or after a random delay with `escalate: false`).
 * - **transient error** (or **conflict**): an error that means "the whole
 *   transaction is gone, run it again": a deadlock, a serialization failure,
 *   `SQLITE_BUSY`, a Galera certification failure, or a {@link TransientError}
 *   thrown by application code.
 * - **escalated attempt**: an attempt that follows a conflict. It runs alone: the
 *   other attempts of the process wait until it ends, and escalated attempts of
 *   all processes take turns on a database lock. See `escalate`.
 * - **hook**: a function registered on a transaction to run before its commit, after
 *   its commit, or after its rollback.
 * - **metadata**: who a transaction runs for and why (`user`, `note`, `extension`);
 *   it travels with every job the transaction schedules.
 */
import type { Knex } from 'knex';

/** Who a transaction runs for and why; kept on `tx.meta` and handed to scheduled jobs. */
export interface TransactionMeta {
  /** The user the transaction runs for (an id or a name), if any. */
  user?: string | number;
  /** A short description of the work, e.g. `POST /reports` or the function's name. */
  note?: string;
  /** Anything else worth carrying (request id, tenant, ...); must be JSON-serialisable to reach persistent jobs. */
  extension?: Record<string, unknown>;
}

/** Bounds of the random delay before each retry, in milliseconds. */
export interface RetryDelay {
  /** Upper bound of the delay before the first retry; the delay is uniform(0, bound). Default 50. */
  initial?: number;
  /** The bound is multiplied by this after each retry. Default 2. */
  factor?: number;
  /** The bound never grows beyond this. Default 2000. */
  max?: number;
}

/**
 * A pino-compatible logger: each method takes a merging object and a message.
 * `pino()` instances, `console`-backed adapters and test recorders all fit.
 */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** Time as the library sees it; injectable so tests never wait for wall time. */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Resolves after `ms` milliseconds, or rejects with the signal's reason when it aborts first. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/**
 * The part of a cls-hooked namespace the bridge uses, typed structurally so that
 * `aftercommit` never imports cls-hooked.
 */
export interface ClsNamespaceLike {
  /** Runs `fn` in a new context of the namespace and returns its result. */
  runAndReturn<T>(fn: (...args: unknown[]) => T): T;
  /** Sets a key in the active context. */
  set<T>(key: string, value: T): T;
  /** The active context object, or null/undefined outside one. */
  active: object | null | undefined;
}

/** Mirrors the current transaction into another context-propagation mechanism. */
export interface ContextBridge {
  /** Runs `fn` with `tx` visible through the bridged mechanism, and hides it again when `fn` settles. */
  run<T>(tx: Transaction, fn: () => Promise<T>): Promise<T>;
}

/** Options of a {@link TransactionManager}. */
export interface TransactionManagerOptions {
  /** Extra attempts after a transient error, so a call makes at most `retries + 1` attempts. Default 3. */
  retries?: number;
  /** Bounds of the random delay between attempts. */
  delay?: RetryDelay;
  /** Metadata for each top-level transaction, called once per attempt. */
  metadata?: () => TransactionMeta | undefined;
  /**
   * Awaited before the rollback of a call whose error is about to reach the caller
   * (not for an attempt that will be retried), with the transaction still open.
   */
  debug?: (err: unknown, tx: Transaction) => unknown;
  /** Also retry MySQL/MariaDB lock wait timeouts (errno 1205); each attempt may wait `innodb_lock_wait_timeout`. Default false. */
  retryLockWaitTimeout?: boolean;
  /** Where retries and hook failures are logged. Default: warnings and errors to stderr, silent when NODE_ENV=test. */
  logger?: Logger;
  /** Time source for retry delays. Default: the system clock. */
  clock?: Clock;
  /** Source of randomness for retry delays, and for the delays of re-queued jobs, returning [0, 1). Default `Math.random`. */
  random?: () => number;
  /** Mirrors each transaction into an existing context mechanism, e.g. {@link clsBridge}. */
  bridge?: ContextBridge;
  /**
   * Guaranteed progress under contention. When true, an attempt that follows a
   * conflict runs alone (escalated): it waits until the attempts of this manager
   * in flight have ended, none begins before it ends, and escalated attempts of
   * all processes take turns on a database lock (MySQL/MariaDB `GET_LOCK`,
   * PostgreSQL advisory lock); it starts without a random delay. Each conflict
   * also halves how many attempts may be in their database transaction at once
   * (doubled back each second without one, reset when the manager is idle, never
   * above the pool's size); while it is lowered, ordinary attempts take the
   * database lock too (shared on PostgreSQL), and on PostgreSQL their lock waits
   * are cancelled and retried escalated rather than waited out until
   * `deadlock_timeout`. False restores plain retries after a random delay.
   * Default true.
   */
  escalate?: boolean;
}

/** How the manager's attempts took turns under contention, counted since it was made (`tm.contention`). */
export interface ContentionStats {
  /** Attempts that ran escalated (alone) because they followed a conflict. */
  escalations: number;
  /** Attempts that waited for their turn before their database transaction began (and got it). */
  gateWaits: number;
  /** Milliseconds those attempts waited, summed. */
  gateWaitMs: number;
  /** The longest such wait, in milliseconds. */
  longestGateWaitMs: number;
  /** How many ordinary attempts may be in their database transaction at once now: the pool's size while nothing collides, halved by each conflict. */
  concurrencyLimit: number;
  /** Lock waits of ordinary attempts cancelled under contention (PostgreSQL; those attempts ran again, escalated). */
  preempted: number;
}

/** A transaction isolation level (SQLite's transactions are always serializable). */
export type IsolationLevel = 'read committed' | 'repeatable read' | 'serializable';

/** Options of one {@link TransactionManager.run} call. */
export interface RunOptions {
  /** Isolation level of this transaction. Default: the database's (REPEATABLE READ on MySQL/MariaDB, READ COMMITTED on PostgreSQL). */
  isolationLevel?: IsolationLevel;
  /** Name used in retry log lines and as the default `note`. Default: the function's name. */
  name?: string;
  /** Metadata of this transaction; merged over the manager's `metadata()`. */
  metadata?: TransactionMeta;
  /** Extra attempts after a transient error, for this call only. Default: the manager's `retries`. */
  retries?: number;
  /** Called before each retry of this call (after the manager's `onRetry` listeners). */
  onRetry?: (event: RetryEvent) => void;
  /**
   * Ends the call from outside when it aborts: the attempt in flight has its
   * database transaction ended at once (a server's connection is closed, so the
   * database rolls back and frees its locks, even while a statement waits or the
   * function never returns), no attempt follows, and `run` rejects with the
   * signal's reason. Once the function has returned, its COMMIT is let finish.
   */
  signal?: AbortSignal;
  /**
   * False: this call takes no part in the manager's contention handling: its
   * attempts never wait for a turn and its retries wait a random delay instead
   * of running alone. Default: the manager's `escalate`.
   */
  escalate?: boolean;
}

/** Reported before the delay of each retry. */
export interface RetryEvent {
  /** The function's name (or `RunOptions.name`). */
  name: string;
  /** The attempt that failed (1-based). */
  attempt: number;
  /** The transient error that ended it. */
  error: unknown;
  /** How long the manager waits before the next attempt, in ms (0 when it is escalated: it waits for its turn instead). */
  delay: number;
  /** True when the next attempt runs escalated: alone, after the attempts in flight (see `escalate`). */
  escalated: boolean;
}

/** A hook that runs after the commit; `ok` is false when the commit itself failed. */
export type AfterCommitHook<A extends unknown[]> = (ok: boolean, ...args: A) => unknown;
/** A hook that runs before the commit or after a rollback. */
export type Hook<A extends unknown[]> = (...args: A) => unknown;

/**
 * One attempt of a transaction, handed to the function run by
 * {@link TransactionManager.run} and reachable as `tm.current`.
 */
export interface Transaction {
  /**
   * The knex query builder bound to this transaction. The database transaction
   * begins lazily, with the first statement, so work that never touches `db`
   * takes no connection. `tx.db.transaction(fn)` runs `fn` in a savepoint.
   */
  readonly db: Knex.Transaction;
  /** Who this transaction runs for and why. */
  readonly meta: TransactionMeta;
  /** 1 for the first attempt, 2 for the first retry, and so on. */
  readonly attempt: number;
  /** True when this attempt follows a conflict and runs alone (see `TransactionManagerOptions.escalate`). */
  readonly escalated: boolean;
  /**
   * Aborted when the attempt is ended from outside: `RunOptions.signal` aborted
   * (a request's timeout, a client that went away, a job past its timeout).
   * Its transaction is already rolled back then; stop waiting on anything.
   */
  readonly signal: AbortSignal;
  /** True once a statement has been sent in the current database transaction (a connection is held). */
  readonly began: boolean;
  /** True after {@link Transaction.setRollbackOnly}. */
  readonly rollbackOnly: boolean;
  /** False once the transaction has ended: its statements and hooks are refused with `TransactionEndedError`. */
  readonly isOpen: boolean;
  /** Registers `hook(ok, ...args)` to run after the commit; `ok` is false when the commit failed. */
  afterCommit<A extends unknown[]>(hook: AfterCommitHook<A>, ...args: A): void;
  /** Registers `hook(...args)` to run after a rollback. */
  afterAbort<A extends unknown[]>(hook: Hook<A>, ...args: A): void;
  /** Registers `hook(...args)` to run (awaited) before the commit, inside the transaction. */
  beforeCommit<A extends unknown[]>(hook: Hook<A>, ...args: A): void;
  /** Commits the work so far and goes on in a fresh database transaction (batch checkpoints). */
  commit(): Promise<void>;
  /** Rolls back the work so far and goes on in a fresh database transaction. */
  abort(): Promise<void>;
  /** Makes the end of this transaction a rollback instead of a commit; `run` still returns the value. */
  setRollbackOnly(): void;
}

// ---- schedulers --------------------------------------------------------------

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
 *   transaction commits, or after `ttl` when nobody fetches it.
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
 * `pending` (committed, waiting to be due, for a worker or for a free slot),
 * `running`, `done` (its result committed) or `failed` (for good).
 */
export type JobState = 'pending' | 'running' | 'done' | 'failed';

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

/** What the Koa adaptation and other callers need of a scheduler, whichever kind it is. */
export interface Scheduler {
  /** Schedules `job` to start once the current transaction commits; returns the 32-hex id at once. */
  schedule(job: string | JobFunction, ...args: unknown[]): string;
  /** What became of schedule `id`. */
  getResult(id: string, options?: GetResultOptions): Promise<ScheduleResult>;
  /** Deletes schedule `id` (and cancels its job). */
  remove(id: string): Promise<void>;
  /** A persistent context of entities for a job. */
  context(positional?: readonly unknown[], named?: Readonly<Record<string, unknown>>): PersistentContextLike;
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
   * worker handed it back). Bounded by the persistent scheduler's `maxRuns`.
   */
  readonly run: number;
  /** The attempt of this run's transaction: 1, then 2, 3, … when a conflict re-runs the job at once (`retries`). */
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
  /** How long (ms) a finished result is kept when nobody fetches it. Default 3,600,000 (one hour). */
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
  /** A job committed its result. */
  succeeded: [event: JobCounts & { id: string; name: string; durationMs: number }];
  /** A job failed for good; its writes were rolled back. `run` is the run that failed (the last one lost, for WorkerLostError). */
  failed: [event: Omit<JobCounts, 'transactionAttempt'> & { id: string; name: string; error: StoredError }];
  /**
   * A job runs again: its transaction hit a transient error and runs again at
   * once (`transactionAttempt` is the one that failed), or (persistent scheduler)
   * a failed run was re-queued (`attempt` and `run` are those of the run that failed).
   */
  retried: [event: JobCounts & { id: string; name: string; error: unknown }];
  /** A running job's claim was taken over (its lease expired) or the schedule was removed: its writes roll back. */
  'lost-lease': [event: { id: string; name: string; worker: string }];
}

// ---- the persistent scheduler -----------------------------------------------

/** How and when one job runs (persistent scheduler): given to `define()` as defaults, or per schedule with `with()`. */
export interface JobOptions {
  /** Start no earlier than this (a Date, or ms since the epoch). Default: at once. */
  runAt?: Date | number;
  /** Start no earlier than this many ms after schedule(). Not together with `runAt`. */
  delay?: number;
  /** Lower runs first among due jobs of a queue; an integer. Default 0. */
  priority?: number;
  /** The queue; workers take the queues they are given. Default `default`. */
  queue?: string;
  /** Runs allowed for application errors: 1 means a job that throws fails at once, without a retry. Default 1. */
  maxAttempts?: number;
  /** Delay before re-running a failed job: uniform(0, bound), the bound growing by factor. Default 1 s, ×2, up to 1 h. */
  backoff?: RetryDelay;
  /** Abort the job's signal after this many ms of running; it then fails with JobTimeoutError. Default: none. */
  timeout?: number;
  /** How long (ms) a claim lasts without a heartbeat; a crashed worker's job is taken over after it. Default: the scheduler's `lease`. */
  lease?: number;
  /** A second schedule with the same key, while the first has not started, returns the first id (`with({ dedupeKey })` resolves to it). */
  dedupeKey?: string;
}

/** Options of a {@link PersistentTransactionalScheduler}. */
export interface PersistentSchedulerOptions extends SchedulerOptions {
  /** Prefix of the scheduler's tables (`<prefix>jobs`, `<prefix>schema`). Default `aftercommit_`. */
  tablePrefix?: string;
  /** Default lease (ms) of a claimed job; renewed by a heartbeat every third of it. Default 30,000. */
  lease?: number;
  /** Claims after which a job whose workers keep dying (or losing its lease) fails for good. Default 5. */
  maxRuns?: number;
}

/** Schedules with options: `scheduler.with({ runAt, priority, ... }).schedule(job, ...args)`. */
export interface Scheduling {
  schedule(job: string | JobFunction, ...args: unknown[]): string;
}

/** Schedules with a dedupe key: resolves to the id of the same owner's pending job with that key, or of the new one. */
export interface DedupedScheduling {
  schedule(job: string | JobFunction, ...args: unknown[]): Promise<string>;
}

/** Counts of the jobs in the table, by state, and the age (ms) of the oldest due pending job. */
export interface PersistentSchedulerStats {
  pending: number;
  running: number;
  done: number;
  failed: number;
  oldestDueMs: number | null;
}

/** Options of `scheduler.worker()`. */
export interface WorkerOptions {
  /** Jobs this worker runs at once. Default: the scheduler's `concurrency`. */
  concurrency?: number;
  /** Queues it takes jobs from, in order of preference. Default `['default']`. */
  queues?: readonly string[];
  /** Shortest wait (ms) between claims while there is work. Default 50. */
  minPollInterval?: number;
  /** Longest wait (ms) between claims when idle (the wait doubles while claims come back empty). Default 2,000. */
  maxPollInterval?: number;
  /** How the worker names itself in `locked_by`. Default `<host>:<pid>:<random>`. */
  id?: string;
  /**
   * Ms a job whose signal was aborted (its timeout passed, it was removed, the
   * worker is stopping) has to end by itself; after that its transaction is ended
   * from outside (its connection closed, so the database rolls back and frees the
   * locks), its slot freed and its lease no longer renewed. Default 5,000.
   */
  grace?: number;
}

/** Options of `worker.stop()`. */
export interface WorkerStopOptions {
  /** How long (ms) running jobs may go on; then their signal is aborted and they are handed back. Default 30,000. */
  timeout?: number;
}

// ---- dialects -----------------------------------------------------------------

/** Runs one statement on an attempt's connection; resolves to knex's query object (its `response` is the driver's answer). */
export type SendStatement = (sql: string) => Promise<unknown>;

/** How an attempt holds the escalation lock: alone (escalated), or beside other ordinary attempts of contended processes. */
export type EscalationLockMode = 'exclusive' | 'shared';

/**
 * The lock escalated attempts of all processes take turns on. It is a session
 * lock, taken on the attempt's connection before BEGIN (so a REPEATABLE READ
 * snapshot is not taken while waiting) and given back after COMMIT or ROLLBACK;
 * a connection that breaks gives it back by itself.
 */
export interface EscalationLock {
  /**
   * True when the lock has a shared mode (PostgreSQL). Ordinary attempts of a
   * process that has seen conflicts take the lock too, so that an escalated
   * attempt of another process waits for them and they wait for it: shared
   * where it can be, else exclusive.
   */
  readonly shared: boolean;
  /** Waits up to `waitMs` for the lock; resolves false when that time ran out first. */
  acquire(send: SendStatement, mode: EscalationLockMode, waitMs: number): Promise<boolean>;
  /** Gives the lock back. */
  release(send: SendStatement, mode: EscalationLockMode): Promise<unknown>;
}

/**
 * Cancelling the lock waits of ordinary attempts under contention: for a
 * database that looks for deadlocks only after a wait (PostgreSQL's
 * deadlock_timeout), where a crowd caught in lock waits would otherwise break
 * its deadlocks one wait at a time.
 */
export interface LockWaitCancel {
  /** The server's id of a connection's session, once connected. */
  sessionId(connection: unknown): number | undefined;
  /**
   * One statement that cancels the statements of the sessions in its first
   * binding (an array of ids) that wait for a row or table lock and began at
   * least its second binding (milliseconds) ago; it returns their ids as `id`.
   */
  readonly sql: string;
  /** True for the error a statement cancelled so fails with. */
  isCancelled(err: unknown): boolean;
  /** Lets the process exit while the connection the cancels are sent from is open. */
  unref(connection: unknown): void;
}

/**
 * How much one multi-row INSERT may carry. A larger batch is split into several
 * statements (in the same transaction), each within all three bounds.
 */
export interface InsertLimits {
  /** Bound values per statement. */
  readonly bindings: number;
  /** Rows per statement. */
  readonly rows: number;
  /** Bytes of values per statement, counted as UTF-8 text before the driver escapes or encodes them. */
  readonly bytes: number;
}

/** What the transaction manager needs to know about one database family. */
export interface Dialect {
  /** The family, for messages and for tests. */
  readonly name: 'mysql' | 'postgresql' | 'sqlite';
  /** The statements that open a read-write transaction, at the given isolation level or the database's default. */
  begin(isolation?: IsolationLevel): string[];
  /**
   * True when `err` means the database rolled the whole transaction back (or
   * must), so running it again may succeed. Decided by errno/SQLSTATE/code only.
   */
  isTransient(err: unknown, options: { retryLockWaitTimeout: boolean }): boolean;
  /** True when `err` came from a broken connection rather than from the server's verdict on a statement. */
  isConnectionFailure(err: unknown): boolean;
  /**
   * True when the result of a COMMIT says the database rolled back instead
   * (PostgreSQL answers COMMIT with ROLLBACK, and no error, when a statement of
   * the transaction failed and the code went on).
   */
  committedAsRollback(result: unknown): boolean;
  /** True when `err` says the database cannot be reached or went away (connection refused or lost, server shutting down). */
  isUnavailable(err: unknown): boolean;
  /** True when `err` is a unique-key violation. */
  isUniqueViolation(err: unknown): boolean;
  /** Makes a claim's SELECT skip rows other workers hold (FOR UPDATE SKIP LOCKED), where the database needs it. */
  lockForClaim(query: Knex.QueryBuilder): Knex.QueryBuilder;
  /** Makes a SELECT read the latest committed rows, not the transaction's snapshot (FOR SHARE), where that differs. */
  lockingRead(query: Knex.QueryBuilder): Knex.QueryBuilder;
  /**
   * Statements that serialise migrations across processes inside one transaction
   * (on one connection), or none where the transaction itself is exclusive.
   */
  migrationLock(name: string): { acquire?: string; release?: string };
  /**
   * One writer at a time (SQLite): a second connection cannot write while a
   * transaction holds the write lock, so progress cannot be written beside an
   * open job transaction.
   */
  readonly singleWriter: boolean;
  /** How much one multi-row INSERT may carry; the persistent scheduler splits larger batches of jobs. */
  readonly insertLimits: InsertLimits;
  /**
   * Makes `table` store its text as UTF-8 (all of Unicode) and compare it byte
   * for byte (case and trailing spaces count), whatever the database's defaults;
   * it does nothing where text already is so.
   */
  exactUtf8Text(db: Knex | Knex.Transaction, table: string): Promise<void>;
  /** The lock escalated attempts of all processes take turns on; none where there is a single writer anyway. */
  readonly escalationLock: EscalationLock | undefined;
  /** How to cancel lock waits under contention; none where deadlocks are found at once (InnoDB) or cannot happen (SQLite). */
  readonly lockWaitCancel: LockWaitCancel | undefined;
  /**
   * Ends the transaction open on `connection` from outside, whatever is running
   * on it (a statement waiting for a lock, a handler that never returns): a
   * server's connection is closed, so the server rolls back and frees the locks;
   * SQLite's is rolled back in place. True when the connection is gone.
   */
  abortTransaction(connection: unknown): boolean;
}
