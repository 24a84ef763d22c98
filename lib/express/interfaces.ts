/**
 * The public types of `aftercommit/express`: the options of `aftercommit()` and
 * `jobRoutes()`, what aftercommit adds to Express's request, and the request
 * type of the handlers it guards.
 */
import type { Knex } from 'knex';
import type { NextFunction, Request, Response } from 'express';
import type { PersistentContextLike, RetryEvent, Scheduler, Transaction, TransactionMeta } from '../interfaces.js';
import type { TransactionManager } from '../transactions/manager.js';

/** Options of `aftercommit(options, ...handlers)`: those of the Koa adapter, given the request and response. */
export interface AftercommitOptions {
  /** The transaction manager whose transactions guard the requests. */
  manager: TransactionManager;
  /**
   * The scheduler handlers reach as `req.scheduler` (either kind); also gives
   * `req.persistentContext`. Without it, using either throws NoSchedulerError.
   */
  scheduler?: Scheduler;
  /**
   * The id of the request's user, who owns the jobs it schedules (only they can
   * poll them); undefined for none. Default: `req.user` itself when it is a
   * string or number, else its `id`, else its `sub`. A user from which no id can
   * be read makes `schedule()` refuse with JobOwnerError.
   */
  user?: (req: Request) => unknown;
  /**
   * The transaction metadata of a request. Default: `user` as the `user` option
   * gives it and `note` `METHOD path`. `extension.requestId` is always added.
   */
  metadata?: (req: Request) => TransactionMeta;
  /** Roll back instead of committing when this returns true after the handlers answered. Default: a 5xx status. */
  rollbackOn?: (req: Request, res: Response) => boolean;
  /** The header the request id is read from and echoed in. Default `X-Request-Id`. */
  requestIdHeader?: string;
  /** Seconds in the `Retry-After` header of the 503 sent when retries run out. Default 1. */
  retryAfter?: number;
  /** Extra attempts after a transient error, for requests. Default: the manager's `retries`. */
  retries?: number;
  /** Called before each retry of a request, e.g. for a metrics counter. */
  onRetry?: (event: RetryEvent, req: Request) => void;
  /**
   * Ms a request may take, retries included, before its transaction is ended
   * from outside and the request fails with RequestTimeoutError (503). 0: none.
   * Default 30,000.
   */
  timeout?: number;
  /** Commit a request whose client went away before the commit. Default false (ClientGoneError, rolled back). */
  commitWhenClientGone?: boolean;
}

/** Options of `jobRoutes(options)`. */
export interface JobRoutesOptions {
  /** Path under which schedules are polled: `GET {prefix}/:id`. Default `/jobs`. */
  prefix?: string;
  /** Delete a done/failed result when the polling request commits. Default true. */
  consume?: boolean;
}

/** What aftercommit adds to the request of the handlers it guards, present. */
export interface AftercommitFields {
  /** The request's transaction (the current attempt's). */
  transaction: Transaction;
  /** The request's transaction's knex; begins the transaction with its first statement. */
  readonly db: Knex.Transaction;
  /** The scheduler given to aftercommit; reading it throws when aftercommit was given none. */
  readonly scheduler: Scheduler;
  /** `scheduler.context(positional, named)`: entities for a job, by table and key. Throws when aftercommit was given no scheduler. */
  persistentContext(positional?: readonly unknown[], named?: Readonly<Record<string, unknown>>): PersistentContextLike;
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
