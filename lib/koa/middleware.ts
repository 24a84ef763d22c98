/**
 * aftercommit(options, ...middleware): one transaction per request around the
 * guarded middleware, committed before the response is sent, and the whole
 * guarded chain run again on a transient error.
 *
 * A Koa middleware cannot call `next()` twice, so the guarded handlers are given
 * to aftercommit, which composes them afresh for each attempt. Its own `next()`
 * runs once, after the commit, outside the transaction.
 */
import type { Context, DefaultContext, DefaultState, Middleware, Next } from 'koa';
import type { Scheduler, Transaction } from '../interfaces.js';
import type { AftercommitContext, AftercommitOptions } from './interfaces.js';
import { compose } from './compose.js';
import { ClientGoneError, DatabaseUnavailableError, NoSchedulerError, RequestTimeoutError, RetriesExhaustedError, RetryNotSafeError } from '../http/errors.js';
import { TransactionEndedError } from '../errors.js';
import { defaultMetadata, requestIdOf, requestLine, withRequestId } from './request-metadata.js';
import { restoreResponse, snapshotResponse } from './response-snapshot.js';
import { abandonResponse, requestStart, unsafeToRetry } from './retry-safety.js';
import { RUN_STOPPER } from '../transactions/run-stopper.js';
import { clientGone, RequestWatch } from '../http/request-watch.js';
import type { InternalRunOptions } from '../transactions/manager.js';
import { integerIn } from '../support/validate.js';

/** Whether the client of `ctx` has gone away before the response was sent. */
function clientGoneOf(ctx: Context): boolean {
  return clientGone(ctx.req, ctx.res);
}

/** The scheduler the request's aftercommit() was given, null for none; unset on requests that never entered one. */
const GIVEN_SCHEDULER = Symbol('aftercommit: the request’s scheduler');
type GuardedContext = Context & { [GIVEN_SCHEDULER]?: Scheduler | null };

/** Apps whose context prototype already has the `ctx.db` and `ctx.scheduler` getters. */
const withGetters = new WeakSet<object>();

/**
 * `ctx.db` and `ctx.scheduler` are getters on the app's context prototype
 * (defined once per app, not per request). On a request that never entered
 * aftercommit they are undefined, as Koa's context type declares them.
 */
function defineGetters(ctx: Context): void {
  const proto = Object.getPrototypeOf(ctx) as object;
  if (withGetters.has(proto)) return;
  withGetters.add(proto);
  Object.defineProperties(proto, {
    db: {
      configurable: true,
      get(this: Context) {
        const transaction = this.transaction;
        if (transaction && !transaction.isOpen) throw new TransactionEndedError('ctx.db after the request’s commit');
        return transaction?.db;
      },
    },
    scheduler: {
      configurable: true,
      get(this: GuardedContext) {
        const scheduler = this[GIVEN_SCHEDULER];
        if (scheduler === null) throw new NoSchedulerError('ctx.scheduler');
        return scheduler;
      },
    },
  });
}

/**
 * Guards `middleware` with one transaction per request. The guarded middleware
 * see `ctx` as an {@link AftercommitContext} (`ctx.db`, `ctx.transaction`,
 * `ctx.scheduler` and `ctx.persistentContext` present): inline handlers need no
 * annotation. The middleware returned has the app's own context type.
 */
export function aftercommit<StateT = DefaultState, ContextT = DefaultContext>(
  options: AftercommitOptions,
  ...middleware: Middleware<StateT, ContextT & AftercommitContext>[]
): Middleware<StateT, ContextT>;
/** The same, for middleware of differing state and context types (e.g. routers of several kinds). */
export function aftercommit(options: AftercommitOptions, ...middleware: Middleware<any, any>[]): Middleware<any, any>;
export function aftercommit(options: AftercommitOptions, ...middleware: Middleware<any, any>[]): Middleware<any, any> {
  const { manager, scheduler } = options;
  if (!manager || typeof manager.run !== 'function') {
    throw new TypeError('aftercommit(options, ...middleware): options.manager must be a TransactionManager');
  }
  const chain = compose(middleware);
  const metadata = options.metadata;
  if (options.user !== undefined && typeof options.user !== 'function') {
    throw new TypeError('aftercommit(options): options.user must be a function (ctx) => the id of the request’s user');
  }
  if (options.user && metadata) throw new TypeError('aftercommit(options): give user or metadata, not both (metadata sets user itself)');
  const rollbackOn = options.rollbackOn ?? ((ctx: Context) => ctx.status >= 500);
  const header = options.requestIdHeader ?? 'X-Request-Id';
  const timeout = integerIn(options.timeout ?? 30_000, 'aftercommit(options): timeout', 0);
  const watchClient = options.commitWhenClientGone !== true;
  const requests = new RequestWatch(timeout, watchClient);
  const retryAfter = options.retryAfter ?? 1;
  const persistentContext = (positional?: readonly unknown[], named?: Readonly<Record<string, unknown>>) => {
    if (!scheduler) throw new NoSchedulerError('ctx.persistentContext');
    return scheduler.context(positional, named);
  };

  async function aftercommitMiddleware(ctx: Context, next: Next) {
    const requestId = requestIdOf(ctx, header);
    ctx.res.setHeader(header, requestId);
    const line = requestLine(ctx);
    const meta = metadata ? withRequestId(metadata(ctx), requestId) : defaultMetadata(ctx, line, requestId, options.user);
    const start = requestStart(ctx);
    const snapshot = snapshotResponse(ctx);
    defineGetters(ctx);
    (ctx as GuardedContext)[GIVEN_SCHEDULER] = scheduler ?? null;
    ctx.persistentContext = persistentContext;
    let lastError: unknown;
    let attempts = 0;
    const runOptions: InternalRunOptions = {
      name: line,
      metadata: meta,
      retries: options.retries,
      [RUN_STOPPER]: requests.watch(ctx, ctx.req, ctx.res),
      onRetry: (event) => {
        lastError = event.error;
        options.onRetry?.(event, ctx);
      },
    };

    try {
      await manager.run(
        async (tx: Transaction) => {
          attempts = tx.attempt;
          if (tx.attempt > 1) {
            const unsafe = unsafeToRetry(ctx, start);
            if (unsafe) {
              abandonResponse(ctx);
              throw new RetryNotSafeError(unsafe, lastError);
            }
            restoreResponse(ctx, snapshot);
          }
          ctx.transaction = tx;
          await chain(ctx);
          if (rollbackOn(ctx)) tx.setRollbackOnly();
          if (watchClient && clientGoneOf(ctx)) throw new ClientGoneError(); // nobody will see the answer: no commit
        },
        runOptions,
      );
    } catch (err) {
      if (err instanceof RetryNotSafeError) {
        manager.logger.error({ err, requestId }, `${line}: ${err.message}`);
      } else if (manager.isTransient(err)) {
        manager.logger.error({ err, requestId, attempts }, `${line}: giving up after ${attempts} attempts`);
        throw new RetriesExhaustedError(attempts, retryAfter, err);
      } else if (manager.isUnavailable(err)) {
        manager.logger.error({ err, requestId }, `${line}: the database is unavailable`);
        throw new DatabaseUnavailableError(retryAfter, err);
      } else if (err instanceof RequestTimeoutError) {
        manager.logger.error({ err, requestId }, `${line}: ${err.message}`);
      }
      throw err;
    } finally {
      requests.forget(ctx);
    }
    await next();
  }
  return aftercommitMiddleware;
}
