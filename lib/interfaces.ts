/**
 * The public types of `aftercommit` are in lib/interfaces/, one file per concept,
 * re-exported here, and those of `aftercommit/koa` in lib/koa/interfaces.ts.
 *
 * - lib/interfaces/transactions.ts: the transaction manager, `run`, `Transaction` and its hooks.
 * - lib/interfaces/schedulers.ts: what both schedulers share (jobs, results, entity contexts).
 * - lib/interfaces/persistent.ts: the persistent scheduler and its workers.
 * - lib/interfaces/dialects.ts: what the manager needs to know about one database family.
 *
 * Import public types from this file (`../interfaces.js` in lib/), never from
 * lib/interfaces/ directly. The files there import each other's types in one
 * direction only: transactions.ts imports none of them, schedulers.ts and
 * dialects.ts import transactions.ts, persistent.ts imports both of the first two.
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
 *
 * The terms of the schedulers (schedule, job, result, entity context) open
 * lib/interfaces/schedulers.ts.
 */
export type * from './interfaces/transactions.js';
export type * from './interfaces/schedulers.js';
export type * from './interfaces/persistent.js';
export type * from './interfaces/dialects.js';
