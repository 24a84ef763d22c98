/**
 * jobRoutes({ prefix }): `GET {prefix}/:id` answers what became of a schedule,
 * to the user who scheduled it only. Mounted among the middleware aftercommit
 * guards, it reads through the request's transaction, so a done or failed
 * result it returns is consumed when that request commits (the seed's
 * protocol; `consume: false` keeps it until its ttl).
 */
import type { Context, Middleware, Next } from 'koa';
import { isScheduleId } from '../scheduler/ids.js';

/** Options of {@link jobRoutes}. */
export interface JobRoutesOptions {
  /** Path under which schedules are polled: `GET {prefix}/:id`. Default `/jobs`. */
  prefix?: string;
  /** Delete a done/failed result when the polling request commits. Default true. */
  consume?: boolean;
}

const NOT_FOUND = { error: 'no such job' };

/** Who polls: the request's user when it is an id; anyone else (no user, or one without an id) sees only jobs without an owner. */
function pollerOf(ctx: Context): string | number | null {
  const user = ctx.transaction.meta.user as unknown;
  return typeof user === 'string' || typeof user === 'number' ? user : null;
}

export function jobRoutes({ prefix = '/jobs', consume = true }: JobRoutesOptions = {}): Middleware {
  const base = `/${prefix.replace(/^\/+|\/+$/g, '')}/`;

  return async function jobRoutesMiddleware(ctx: Context, next: Next) {
    if ((ctx.method !== 'GET' && ctx.method !== 'HEAD') || !ctx.path.startsWith(base)) return next();
    const id = ctx.path.slice(base.length);
    if (id.includes('/')) return next();
    if (!ctx.transaction || !ctx.scheduler) {
      throw new Error('jobRoutes() must be mounted inside aftercommit({ manager, scheduler }, ...), which gives it its transaction and scheduler');
    }
    ctx.set('Cache-Control', 'no-store');
    // Unknown, malformed and someone else's ids get the same answer: an id reveals nothing.
    const result = isScheduleId(id)
      ? await ctx.scheduler.getResult(id, { visibleTo: pollerOf(ctx), consume: consume && ctx.method === 'GET' }) // a HEAD (a link preview, a monitor) must not consume
      : ({ state: 'unknown' } as const);
    if (result.state === 'unknown') {
      ctx.status = 404;
      ctx.body = NOT_FOUND;
      return;
    }
    ctx.body = { id, ...result };
  };
}
