/**
 * The options both HTTP adapters take, framework-neutral. `R` is what the
 * option functions are given: Koa's `ctx`, Express's `req`.
 */
import type { Knex } from 'knex';
import type { JobAdminFilter, PersistentContextLike, RetryEvent, Scheduler, SchedulerMetrics, Transaction, TransactionMeta } from '../interfaces.js';
import type { TransactionManager } from '../transactions/manager.js';
import type { PersistentTransactionalScheduler } from '../scheduler/persistent/persistent-scheduler.js';

/** Options of `aftercommit(options, ...)` that Koa's and Express's share. */
export interface GuardOptions<R> {
  /** The transaction manager whose transactions guard the requests. */
  manager: TransactionManager;
  /**
   * The scheduler handlers reach as `ctx.scheduler` / `req.scheduler` (either
   * kind); also gives `persistentContext`. Without it, using either throws
   * NoSchedulerError.
   */
  scheduler?: Scheduler;
  /**
   * The id of the request's user, who owns the jobs it schedules (only they can
   * poll them); undefined for none. Default: the request's user
   * (`ctx.state.user` in Koa, `req.user` in Express) itself when it is a string
   * or number, else its `id`, else its `sub`. A user from which no id can be read
   * makes `schedule()` refuse with JobOwnerError.
   */
  user?: (request: R) => unknown;
  /**
   * The transaction metadata of a request. Default: `user` as the `user` option
   * gives it and `note` `METHOD path`. `extension.requestId` is always added.
   * A `user` that is not a string or number makes `schedule()` refuse.
   */
  metadata?: (request: R) => TransactionMeta;
  /** The header the request id is read from and echoed in. Default `X-Request-Id`. */
  requestIdHeader?: string;
  /** Seconds in the `Retry-After` header of the 503 sent when retries run out or the database is unavailable. Default 1. */
  retryAfter?: number;
  /** Extra attempts after a transient error, for requests. Default: the manager's `retries`. */
  retries?: number;
  /** Called before each retry of a request, e.g. for a metrics counter. */
  onRetry?: (event: RetryEvent, request: R) => void;
  /**
   * The route template a request is counted under in the request metrics
   * (metricsRoute, the dashboard's Requests), e.g. `/accounts/:id`; undefined
   * for none (counted as `(unmatched)`). Never return the raw URL: every distinct
   * value is a series. Default: the template of the route that matched
   * (`ctx._matchedRoute` of @koa/router or koa-router; Express's
   * `req.baseUrl + req.route.path`).
   */
  route?: (request: R) => string | undefined;
  /**
   * Ms a request may take, retries included, before its transaction is ended
   * from outside (its connection closed, so the database rolls back and frees its
   * locks, even while the handler waits) and the client gets 503
   * RequestTimeoutError; `transaction.signal` tells the handler. 0: none.
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

/** What aftercommit adds to the request (Koa's `ctx`, Express's `req`) of the handlers it guards, present. */
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

/** Options of `metricsRoute(options)`; `R` is what `authorize` is given (Koa's `ctx`, Express's `req`). */
export interface MetricsRouteOptions<R> {
  /** The scheduler whose `metrics()` are served. */
  scheduler: { metrics(): Promise<SchedulerMetrics> };
  /**
   * Whether the request may read the metrics; every other request gets 404, as
   * if there were no route. Required: give `() => true` to serve them to anyone
   * who can reach the route (e.g. on a port only Prometheus reaches).
   */
  authorize: (request: R) => boolean | Promise<boolean>;
  /** The path served (GET and HEAD). Default `/metrics`. */
  path?: string;
}

/** The kind of a transient error that ended an attempt of a request, as `aftercommit_request_conflicts_total` labels it. */
export type ConflictKind = 'deadlock' | 'serialization' | 'lock_wait_timeout' | 'busy' | 'preempted' | 'application' | 'other';

/** This process's request counters of one route (`GET {prefix}/api/requests` of the jobs dashboard, and metricsRoute). */
export interface RouteRequestMetrics {
  /** The route's template (e.g. `/accounts/:id/transfer`), `(unmatched)` for requests that matched none, `(other)` for routes past the first 200. */
  route: string;
  /** Requests that ended (answered or failed). */
  requests: number;
  /** Of those, the requests that needed more than one attempt. */
  retried: number;
  /**
   * Transient errors that ended an attempt, by kind: deadlock, serialization
   * failure, lock wait timeout (with `retryLockWaitTimeout`), SQLite busy, a lock
   * wait preempted under contention, the app's ConflictError (or TransientError),
   * other; the last attempt's of a request whose retries ran out included.
   */
  conflicts: Record<ConflictKind, number>;
  /** Retries that ran escalated: alone, after the attempts in flight (the manager's contention handling). */
  escalations: number;
  /** Requests whose retries ran out (answered 503 RetriesExhaustedError). */
  exhausted: number;
  /** Requests refused a retry because it was not safe (RetryNotSafeError: a streamed response, a body read inside, …). */
  notRetrySafe: number;
}

/** Options of `jobsDashboard(options)`; `R` is what `authorize` and `actor` are given (Koa's `ctx`, Express's `req`). */
export interface DashboardOptions<R> {
  /** The persistent scheduler whose jobs, queues and workers the dashboard shows. */
  scheduler: PersistentTransactionalScheduler;
  /** Whether the request is an admin's. Required: every other request gets 404 on every route, as if there were none. */
  authorize: (request: R) => boolean | Promise<boolean>;
  /** Where it is mounted. Default `/admin/jobs`. */
  prefix?: string;
  /** Show, but offer and accept no action. Default false. */
  readOnly?: boolean;
  /** Argument, metadata and result fields (at any depth) shown as "[redacted]", e.g. `['password', 'token']`. */
  redact?: readonly string[];
  /** Who acts, for the log and `onAction` (e.g. the admin's user id). Default: not named. */
  actor?: (request: R) => string;
  /** Called after each action, e.g. for an audit trail. */
  onAction?: (event: DashboardAction) => void;
}

/** An action taken through the dashboard, as logged and reported to `onAction`. */
export interface DashboardAction {
  /** Who, as `actor` named them; null when not given. */
  actor: string | null;
  action: 'retry' | 'run-now' | 'remove' | 'retry-all' | 'delete-all' | 'pause' | 'resume';
  /** The job acted on. */
  id?: string;
  /** The queue paused or resumed. */
  queue?: string;
  /** The filter of a bulk action. */
  filter?: JobAdminFilter;
  /** How many jobs (or queues) it changed. */
  affected: number;
}
