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
import type { Transaction } from '../interfaces.js';
import type { AftercommitContext, AftercommitOptions } from './interfaces.js';
import { compose } from './compose.js';
import { ClientGoneError, RetryNotSafeError } from '../http/errors.js';
import { defineGetters, guard, guardSettings, ON_THE_REQUEST, requestEnded, requestFailure } from '../http/guard.js';
import { noteRetry } from '../http/request-metrics.js';
import { defaultMetadata, requestIdOf, requestLine, withRequestId } from './request-metadata.js';
import { restoreResponse, snapshotResponse } from './response-snapshot.js';
import { abandonResponse, requestStart, unsafeToRetry } from './retry-safety.js';
import { RUN_STOPPER } from '../transactions/run-stopper.js';
import { clientGone } from '../http/request-watch.js';
import type { InternalRunOptions } from '../transactions/manager.js';

/** Whether the client of `ctx` has gone away before the response was sent. */
function clientGoneOf(ctx: Context): boolean {
  return clientGone(ctx.req, ctx.res);
}

/** The template of the route that matched, as @koa/router and koa-router record it. */
const matchedRoute = (ctx: Context): unknown => (ctx as { _matchedRoute?: unknown })._matchedRoute;

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
  const settings = guardSettings(options, 'ctx', 'middleware', matchedRoute);
  const { manager, requests, watchClient, requestIdHeader: header } = settings;
  const chain = compose(middleware);
  const rollbackOn = options.rollbackOn ?? ((ctx: Context) => ctx.status >= 500);

  async function aftercommitMiddleware(ctx: Context, next: Next) {
    const requestId = requestIdOf(ctx, header);
    ctx.res.setHeader(header, requestId);
    const line = requestLine(ctx);
    const meta = settings.metadata ? withRequestId(settings.metadata(ctx), requestId) : defaultMetadata(ctx, line, requestId, settings.user);
    const start = requestStart(ctx);
    const snapshot = snapshotResponse(ctx);
    defineGetters(Object.getPrototypeOf(ctx) as object, 'ctx', ON_THE_REQUEST); // the app's context prototype
    const guarded = guard(ON_THE_REQUEST, ctx, settings);
    let lastError: unknown;
    let attempts = 0;
    const watched = requests.watch(ctx.req, ctx.res);
    const runOptions: InternalRunOptions = {
      name: line,
      metadata: meta,
      retries: options.retries,
      [RUN_STOPPER]: watched?.stopper,
      onRetry: (event) => {
        lastError = event.error;
        noteRetry(guarded, event);
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
          guarded.transaction = tx;
          await chain(ctx);
          if (rollbackOn(ctx)) tx.setRollbackOnly();
          if (watchClient && clientGoneOf(ctx)) throw new ClientGoneError(); // nobody will see the answer: no commit
        },
        runOptions,
      );
    } catch (err) {
      const failure = requestFailure(settings, err, line, requestId, attempts);
      requestEnded(settings, guarded, ctx, true, failure);
      throw failure;
    } finally {
      requests.forget(watched);
    }
    requestEnded(settings, guarded, ctx, false);
    await next();
  }
  return aftercommitMiddleware;
}
