import { randomFillSync } from 'node:crypto';

/** Random bytes drawn from the CSPRNG a few kilobytes at a time: one call per 256 ids instead of one per id. */
const pool = Buffer.alloc(4096);
let used = pool.length;

/** A schedule id: 128 random bits as 32 lowercase hex characters. */
export function newScheduleId(): string {
  if (used === pool.length) {
    randomFillSync(pool);
    used = 0;
  }
  used += 16;
  return pool.toString('hex', used - 16, used);
}

const SCHEDULE_ID = /^[0-9a-f]{32}$/;

/** True for strings shaped like a schedule id; anything else is unknown without a lookup. */
export function isScheduleId(id: unknown): id is string {
  return typeof id === 'string' && SCHEDULE_ID.test(id);
}
