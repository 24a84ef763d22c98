/**
 * jobRoutes({ prefix }): `GET {prefix}/:id` answers what became of a schedule,
 * to the user who scheduled it only. Mounted among the middleware aftercommit
 * guards, it reads through the request's transaction: a done or failed result
 * it returns is consumed when that request commits, so it is handed out once
 * (`consume: false` keeps it until its ttl).
 */
import type { Context, Middleware, Next } from 'koa';
import type { Transaction } from '../interfaces.js';
import { isScheduleId } from '../scheduler/ids.js';
import type { JobRoutesOptions } from './interfaces.js';

const NOT_FOUND = { error: 'no such job' };

/** Who polls: the request's user when it is an id; anyone else (no user, or one without an id) sees only jobs without an owner. */
function pollerOf(transaction: Transaction): string | number | null {
  const user = transaction.meta.user as unknown;
  return typeof user === 'string' || typeof user === 'number' ? user : null;
}

/** The polling endpoint for schedules, mounted among the middleware aftercommit guards. */
export function jobRoutes({ prefix = '/jobs', consume = true }: JobRoutesOptions = {}): Middleware {
  const base = `/${prefix.replace(/^\/+|\/+$/g, '')}/`;

  return async function jobRoutesMiddleware(ctx: Context, next: Next) {
    if ((ctx.method !== 'GET' && ctx.method !== 'HEAD') || !ctx.path.startsWith(base)) return next();
    const id = ctx.path.slice(base.length);
    if (id.includes('/')) return next();
    // Inside aftercommit, ctx.scheduler is the scheduler or throws NoSchedulerError (it was given none).
    const { transaction, scheduler } = ctx;
    if (!transaction || !scheduler) {
      // Not a failure of the request but of the app's setup, found on its first poll: a TypeError, like aftercommit()'s bad options.
      throw new TypeError('jobRoutes() must be mounted inside aftercommit({ manager, scheduler }, ...), which gives it its transaction and scheduler');
    }
    ctx.set('Cache-Control', 'no-store');
    // Unknown, malformed and someone else's ids get the same answer: an id reveals nothing.
    const result = isScheduleId(id)
      ? await scheduler.getResult(id, { visibleTo: pollerOf(transaction), consume: consume && ctx.method === 'GET' }) // a HEAD (a link preview, a monitor) must not consume
      : ({ state: 'unknown' } as const);
    if (result.state === 'unknown') {
      ctx.status = 404;
      ctx.body = NOT_FOUND;
      return;
    }
    ctx.body = { id, ...result };
  };
}
