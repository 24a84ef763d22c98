import { randomBytes } from 'node:crypto';

/** A schedule id: 128 random bits as 32 lowercase hex characters. */
export function newScheduleId(): string {
  return randomBytes(16).toString('hex');
}

const SCHEDULE_ID = /^[0-9a-f]{32}$/;

/** True for strings shaped like a schedule id; anything else is unknown without a lookup. */
export function isScheduleId(id: unknown): id is string {
  return typeof id === 'string' && SCHEDULE_ID.test(id);
}
