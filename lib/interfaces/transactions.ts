// Public types of `aftercommit`, transactions: the transaction manager, its
// options and its statistics, one call of `run`, one attempt (`Transaction`) and
// its hooks, and what the manager is given (logger, clock, context bridge).
// Re-exported by lib/interfaces.ts: import them from there.
// Imports no other file of lib/interfaces/ (the others import from this one).
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
