// Public types of `aftercommit`, dialects: what the transaction manager and the
// persistent scheduler need to know about one database family (MySQL/MariaDB,
// PostgreSQL, SQLite): transient errors, the escalation lock, lock-wait
// cancelling, INSERT limits.
// Re-exported by lib/interfaces.ts: import them from there.
// Imports types of transactions.ts only.
import type { Knex } from 'knex';
import type { IsolationLevel } from './transactions.js';

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

/** Asks the server `sql` on some connection; resolves to the rows and fields (knex.raw's answer on MySQL). */
export type AskServer = (sql: string) => Promise<unknown>;

/** A cluster lock whose holds are rows: they outlive the session that took them, so they are also given back by holder. */
export type ClusterHeld<L> = L & {
  /** Gives back every hold of this holder through a pooled connection of `knex`: after the connection it took them on broke. */
  giveAllBack(knex: Knex): Promise<void>;
};

/**
 * What changes on a cluster whose nodes certify each other's commits but keep
 * their named locks to themselves and apply others' commits a little later
 * (MariaDB Galera): the locks that must hold on every node are rows, and reads
 * that must see a commit made through another node wait for it.
 */
export interface ClusterSupport {
  /**
   * Whether `knex` talks to a node of such a cluster; asked of the server once per knex instance, through `ask` (a
   * connection the caller holds) when given. Rejects when the server could not be asked.
   */
  isNode(knex: Knex, ask?: AskServer): Promise<boolean>;
  /** A new holder of the escalation lock, to take instead of the dialect's: one per database transaction that takes it. */
  escalationLock(): ClusterHeld<EscalationLock>;
  /** A new holder of limited queues' locks, to take instead of the dialect's: one per session that takes them. */
  queueLock(): ClusterHeld<QueueLock>;
  /** Runs `work` holding lock `name` of the cluster on a connection of its own; rejects with `timedOut()` when `waitMs` ran out first. */
  holdingLock<T>(knex: Knex, name: string, waitMs: number, timedOut: () => Error, work: () => Promise<T>): Promise<T>;
  /** The rows of SELECT `query`, read once the node has applied every commit the cluster had made when it was sent. */
  causalRows<T>(db: Knex | Knex.Transaction, query: Knex.QueryBuilder): Promise<T[]>;
}

/**
 * The lock claimers of one limited queue (a persistent scheduler's `queues`
 * option) take in turn, in every process, so that counting the queue's running
 * jobs and claiming more is one step. It is held until the claim's transaction
 * has ended: the next claimer counts the jobs this one started.
 */
export interface QueueLock {
  /**
   * True for a session lock that no COMMIT gives back (MySQL's named locks): it
   * is taken on a connection of its own before the claim's transaction begins,
   * and given back after that transaction ended. False: `acquire` runs in the
   * claim's transaction, whose end gives the lock back (PostgreSQL's advisory
   * transaction locks).
   */
  readonly session: boolean;
  /**
   * Waits up to `waitMs` for the lock called `name` (letters, digits and `_ . : -`
   * only); resolves false when that time ran out. Only a session lock reads the
   * answers `send` resolves to (knex's query object).
   */
  acquire(send: SendStatement, name: string, waitMs: number): Promise<boolean>;
  /** Gives a session lock back; resolves false when its session no longer held it (the connection broke meanwhile). */
  release(send: SendStatement, name: string): Promise<boolean>;
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
 * The database's own messages between sessions (PostgreSQL's LISTEN/NOTIFY): a
 * transaction's notification is delivered when, and only if, it commits. The
 * persistent scheduler sends one per committed queue, so that workers of other
 * processes claim at once instead of at their next poll.
 */
export interface CommitNotifications {
  /** A statement, run inside the transaction, whose bindings are the channel and the payload. */
  readonly notifySql: string;
  /** The statement that makes a session receive the notifications of `channel` (letters, digits and _ only). */
  listenSql(channel: string): string;
  /**
   * Hands each notification that arrives on `connection` (a connection of its
   * own, outside the pool) to `deliver`, and calls `ended` once, when the
   * connection broke or closed.
   */
  subscribe(connection: unknown, deliver: (channel: string, payload: string) => void, ended: (err?: unknown) => void): void;
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
  /**
   * The statements that open a read-write transaction, at the given isolation level or the database's default;
   * `causal` (asked only of a dialect with `cluster`, on a node of a cluster): the transaction first waits until
   * the node has applied every commit the cluster had made.
   */
  begin(isolation?: IsolationLevel, causal?: boolean): string[];
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
  /** Whether `table` has an index named `index` (a migration cut short between its statements re-runs what is missing). */
  hasIndex(db: Knex | Knex.Transaction, table: string, index: string): Promise<boolean>;
  /** The lock escalated attempts of all processes take turns on; none where there is a single writer anyway. */
  readonly escalationLock: EscalationLock | undefined;
  /** What changes when the server is a node of a cluster (MariaDB Galera); none where no such cluster exists. */
  readonly cluster: ClusterSupport | undefined;
  /** The lock claimers of a limited queue take turns on; none where a claim is exclusive anyway (a single writer). */
  readonly queueLock: QueueLock | undefined;
  /** How to cancel lock waits under contention; none where deadlocks are found at once (InnoDB) or cannot happen (SQLite). */
  readonly lockWaitCancel: LockWaitCancel | undefined;
  /**
   * How a commit tells other processes' workers about new jobs: the database's
   * notifications where it has them (PostgreSQL); none where the persistent
   * scheduler sends datagrams instead (MySQL), or where one process uses the
   * database (SQLite, a single writer).
   */
  readonly commitNotifications: CommitNotifications | undefined;
  /**
   * Ends the transaction open on `connection` from outside, whatever is running
   * on it (a statement waiting for a lock, a handler that never returns): a
   * server's connection is closed, so the server rolls back and frees the locks;
   * SQLite's is rolled back in place. True when the connection is gone.
   */
  abortTransaction(connection: unknown): boolean;
}
