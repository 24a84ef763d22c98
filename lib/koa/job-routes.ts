/**
 * jobRoutes({ prefix }): `GET {prefix}/:id` answers what became of a schedule,
 * to the user who scheduled it only. Mounted among the middleware aftercommit
 * guards, it reads through the request's transaction: a done or failed result
 * it returns is consumed when that request commits, so it is handed out once
 * (`consume: false` keeps it until its ttl).
 */
import type { Context, Middleware, Next } from 'koa';
import type { JobRoutesOptions } from './interfaces.js';
import { NOT_MOUNTED, pollAnswer, pollBase, polledId } from '../http/job-poll.js';

/** The polling endpoint for schedules, mounted among the middleware aftercommit guards. */
export function jobRoutes({ prefix = '/jobs', consume = true }: JobRoutesOptions = {}): Middleware {
  const base = pollBase(prefix);

  return async function jobRoutesMiddleware(ctx: Context, next: Next) {
    const id = polledId(ctx.method, ctx.path, base);
    if (id === undefined) return next();
    // Inside aftercommit, ctx.scheduler is the scheduler or throws NoSchedulerError (it was given none).
    const { transaction, scheduler } = ctx;
    // Not a failure of the request but of the app's setup, found on its first poll: a TypeError, like aftercommit()'s bad options.
    if (!transaction || !scheduler) throw new TypeError(NOT_MOUNTED);
    ctx.set('Cache-Control', 'no-store');
    const { status, body } = await pollAnswer(id, ctx.method, transaction, scheduler, consume);
    ctx.status = status;
    ctx.body = body;
  };
}
