/**
 * The public types of `aftercommit/koa`: the options of `aftercommit()` and
 * `jobRoutes()`, what aftercommit adds to Koa's context, and the context type of
 * the middleware it guards.
 */
import type { Knex } from 'knex';
import type { Context, DefaultContext } from 'koa';
import type { PersistentContextLike, Scheduler, Transaction } from '../interfaces.js';
import type { AftercommitFields, DashboardOptions as DashboardOptionsOf, GuardOptions, MetricsRouteOptions as MetricsRouteOptionsOf } from '../http/interfaces.js';

export type { JobRoutesOptions } from '../http/interfaces.js';

/** Options of `metricsRoute(options)`: `authorize` is given the request's `ctx`. */
export type MetricsRouteOptions = MetricsRouteOptionsOf<Context>;

/** Options of `jobsDashboard(options)`: `authorize` and `actor` are given the request's `ctx`. */
export type DashboardOptions = DashboardOptionsOf<Context>;
export type { DashboardAction } from '../http/interfaces.js';

/** Options of `aftercommit(options, ...middleware)`. */
export interface AftercommitOptions extends GuardOptions<Context> {
  /** Roll back instead of committing when this returns true after the handlers. Default: a 5xx status. */
  rollbackOn?: (ctx: Context) => boolean;
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
  transaction: AftercommitFields['transaction'];
  /** The request's transaction's knex; begins the transaction with its first statement. */
  readonly db: AftercommitFields['db'];
  /** The scheduler given to aftercommit; reading it throws when aftercommit was given none. */
  readonly scheduler: AftercommitFields['scheduler'];
  /** `scheduler.context(positional, named)`: entities for a job, by table and key. Throws when aftercommit was given no scheduler. */
  persistentContext: AftercommitFields['persistentContext'];
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
