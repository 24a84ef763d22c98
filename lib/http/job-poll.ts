/**
 * The answer to `GET {prefix}/:id`, framework-neutral: what became of a
 * schedule, to the user who scheduled it only. Unknown, malformed and someone
 * else's ids get the same 404: an id reveals nothing.
 */
import type { Scheduler, Transaction } from '../interfaces.js';
import { isScheduleId } from '../scheduler/ids.js';

const NOT_FOUND = { error: 'no such job' };

/** Who polls: the request's user when it is an id; anyone else (no user, or one without an id) sees only jobs without an owner. */
function pollerOf(transaction: Transaction): string | number | null {
  const user = transaction.meta.user as unknown;
  return typeof user === 'string' || typeof user === 'number' ? user : null;
}

/** `/{prefix}/`, the start of the polled paths. */
export function pollBase(prefix: string): string {
  return `/${prefix.replace(/^\/+|\/+$/g, '')}/`;
}

/** The schedule id polled by `method path`, or undefined when the request is not a poll. */
export function polledId(method: string, path: string, base: string): string | undefined {
  if ((method !== 'GET' && method !== 'HEAD') || !path.startsWith(base)) return undefined;
  const id = path.slice(base.length);
  return id.includes('/') ? undefined : id;
}

export const NOT_MOUNTED = 'jobRoutes() must be mounted inside aftercommit({ manager, scheduler }, ...), which gives it its transaction and scheduler';

/** The status and body answering a poll of `id`, read through the request's transaction. */
export async function pollAnswer(
  id: string,
  method: string,
  transaction: Transaction,
  scheduler: Scheduler,
  consume: boolean,
): Promise<{ status: number; body: unknown }> {
  const result = isScheduleId(id)
    ? await scheduler.getResult(id, { visibleTo: pollerOf(transaction), consume: consume && method === 'GET' }) // a HEAD (a link preview, a monitor) must not consume
    : ({ state: 'unknown' } as const);
  if (result.state === 'unknown') return { status: 404, body: NOT_FOUND };
  return { status: 200, body: { id, ...result } };
}
