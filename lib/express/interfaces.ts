/**
 * The public types of `aftercommit/express`: the options of `aftercommit()` and
 * `jobRoutes()`, what aftercommit adds to Express's request, and the request
 * type of the handlers it guards.
 */
import type { Knex } from 'knex';
import type { NextFunction, Request, Response } from 'express';
import type { PersistentContextLike, Scheduler, Transaction } from '../interfaces.js';
import type { AftercommitFields, DashboardOptions as DashboardOptionsOf, GuardOptions, MetricsRouteOptions as MetricsRouteOptionsOf } from '../http/interfaces.js';

export type { AftercommitFields, JobRoutesOptions } from '../http/interfaces.js';

/** Options of `metricsRoute(options)`: `authorize` is given the request's `req`. */
export type MetricsRouteOptions = MetricsRouteOptionsOf<Request>;

/** Options of `jobsDashboard(options)`: `authorize` and `actor` are given the request's `req`. */
export type DashboardOptions = DashboardOptionsOf<Request>;
export type { DashboardAction } from '../http/interfaces.js';

/** Options of `aftercommit(options, ...handlers)`: those of the Koa adapter, given the request (and response). */
export interface AftercommitOptions extends GuardOptions<Request> {
  /** Roll back instead of committing when this returns true after the handlers answered. Default: a 5xx status. */
  rollbackOn?: (req: Request, res: Response) => boolean;
}

/**
 * The request of the handlers aftercommit guards, with what it adds present:
 * `(req: AftercommitRequest, res) => …` in a handler written apart (inline
 * handlers in `aftercommit(options, ...)` get it by themselves).
 */
export type AftercommitRequest = Request & AftercommitFields;

/** A request handler (or router) aftercommit guards. */
export type AftercommitRequestHandler = (req: AftercommitRequest, res: Response, next: NextFunction) => unknown;

/** An error handler (four parameters) among those aftercommit guards: it takes the errors of the handlers before it. */
export type AftercommitErrorHandler = (err: any, req: AftercommitRequest, res: Response, next: NextFunction) => unknown;

/** A handler aftercommit guards. */
export type AftercommitHandler = AftercommitRequestHandler | AftercommitErrorHandler;

// Every Express request has these names, but only those that went through
// aftercommit() have values: optional here, present in AftercommitRequest.
declare module 'express-serve-static-core' {
  interface Request {
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
