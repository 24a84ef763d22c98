import type { Knex } from 'knex';
import type { PersistentContextLike, Scheduler, Transaction } from '../interfaces.js';

export { aftercommit, type AftercommitOptions } from './middleware.js';
export { jobRoutes, type JobRoutesOptions } from './job-routes.js';
export { ClientGoneError, DatabaseUnavailableError, RequestTimeoutError, RetriesExhaustedError, RetryNotSafeError } from './errors.js';

declare module 'koa' {
  interface DefaultContext {
    /** The request's transaction (set by aftercommit for the guarded middleware). */
    transaction: Transaction;
    /** The request's transaction's knex; begins the transaction with its first statement. */
    db: Knex.Transaction;
    /** The scheduler given to aftercommit. */
    scheduler: Scheduler;
    /** `scheduler.context(positional, named)`: entities for a job, by table and key. */
    persistentContext(positional?: readonly unknown[], named?: Readonly<Record<string, unknown>>): PersistentContextLike;
  }
}
