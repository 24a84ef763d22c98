/**
 * The public types of `aftercommit/koa`: the options of `aftercommit()` and
 * `jobRoutes()`, what aftercommit adds to Koa's context, and the context type of
 * the middleware it guards.
 */
import type { Knex } from 'knex';
import type { Context, DefaultContext } from 'koa';
import type { PersistentContextLike, RetryEvent, Scheduler, Transaction, TransactionMeta } from '../interfaces.js';
import type { TransactionManager } from '../transactions/manager.js';

/** Options of `aftercommit(options, ...middleware)`. */
export interface AftercommitOptions {
  /** The transaction manager whose transactions guard the requests. */
  manager: TransactionManager;
  /**
   * The scheduler handlers reach as `ctx.scheduler` (either kind); also gives
   * `ctx.persistentContext`. Without it, using either throws an error saying so.
   */
  scheduler?: Scheduler;
  /**
   * The id of the request's user, who owns the jobs it schedules (only they can
   * poll them); undefined for none. Default: `ctx.state.user` itself when it is a
   * string or number, else its `id`, else its `sub`. A user from which no id can
   * be read makes `schedule()` refuse with JobOwnerError.
   */
  user?: (ctx: Context) => unknown;
  /**
   * The transaction metadata of a request. Default: `user` as the `user` option
   * gives it and `note` `METHOD path`. `extension.requestId` is always added.
   * A `user` that is not a string or number makes `schedule()` refuse.
   */
  metadata?: (ctx: Context) => TransactionMeta;
  /** Roll back instead of committing when this returns true after the handlers. Default: a 5xx status. */
  rollbackOn?: (ctx: Context) => boolean;
  /** The header the request id is read from and echoed in. Default `X-Request-Id`. */
  requestIdHeader?: string;
  /** Seconds in the `Retry-After` header of the 503 sent when retries run out. Default 1. */
  retryAfter?: number;
  /** Extra attempts after a transient error, for requests. Default: the manager's `retries`. */
  retries?: number;
  /** Called before each retry of a request, e.g. for a metrics counter. */
  onRetry?: (event: RetryEvent, ctx: Context) => void;
  /**
   * Ms a request may take, retries included, before its transaction is ended
   * from outside (its connection closed, so the database rolls back and frees its
   * locks, even while the handler waits) and the client gets 503
   * RequestTimeoutError; `ctx.transaction.signal` tells the handler. 0: none.
   * Default 30,000.
   */
  timeout?: number;
  /**
   * Commit a request whose client went away before the commit. Default false:
   * its transaction is ended at once and rolled back (ClientGoneError), since
   * nobody will see the answer.
   */
  commitWhenClientGone?: boolean;
}

/** Options of `jobRoutes(options)`. */
export interface JobRoutesOptions {
  /** Path under which schedules are polled: `GET {prefix}/:id`. Default `/jobs`. */
  prefix?: string;
  /** Delete a done/failed result when the polling request commits. Default true. */
  consume?: boolean;
}

/**
 * The context of the middleware aftercommit guards: what it adds, present. Give
 * it as the context type of those middleware, e.g.
 * `new Router<Koa.DefaultState, AftercommitContext>()`; handlers written inline
 * in `aftercommit(options, ...)` get it by themselves. It extends Koa's
 * `DefaultContext`, so the app's own additions to that stay visible.
 */
export interface AftercommitContext extends DefaultContext {
  /** The request's transaction (the current attempt's). */
  transaction: Transaction;
  /** The request's transaction's knex; begins the transaction with its first statement. */
  readonly db: Knex.Transaction;
  /** The scheduler given to aftercommit; reading it throws when aftercommit was given none. */
  readonly scheduler: Scheduler;
  /** `scheduler.context(positional, named)`: entities for a job, by table and key. Throws when aftercommit was given no scheduler. */
  persistentContext(positional?: readonly unknown[], named?: Readonly<Record<string, unknown>>): PersistentContextLike;
}

// Every Koa context of the app has these names, but only requests that went
// through aftercommit() have values: optional here, present in AftercommitContext.
declare module 'koa' {
  interface DefaultContext {
    /** The request's transaction, once the request has entered aftercommit(); it stays, ended, after the commit. */
    transaction?: Transaction;
    /** The request's transaction's knex inside aftercommit(); undefined outside it; throws TransactionEndedError after the commit. */
    readonly db?: Knex.Transaction;
    /** The scheduler given to aftercommit(), once the request has entered it; throws there when it was given none. */
    readonly scheduler?: Scheduler;
    /** `scheduler.context(positional, named)`, once the request has entered aftercommit(); throws when it was given no scheduler. */
    persistentContext?(positional?: readonly unknown[], named?: Readonly<Record<string, unknown>>): PersistentContextLike;
  }
}
