import type { Clock } from '../interfaces.js';

/** What {@link within} saw: the work's value when it settled in time. */
export type WithinOutcome<T> = { inTime: true; value: T } | { inTime: false };

const TOO_LATE: WithinOutcome<never> = { inTime: false };

/**
 * The reason internal controllers abort with when what they watched is over: `abort()` without one
 * makes a DOMException, stack trace included, each time (on every job run, every poll).
 */
export const OVER = new Error('over');

/**
 * Waits for `work` for up to `ms` on `clock`: its value when it resolves in time,
 * `{ inTime: false }` when the time runs out first; a rejection in time rejects.
 * The sleep is cancelled either way, so no timer outlives the wait.
 */
export async function within<T>(work: Promise<T>, ms: number, clock: Clock): Promise<WithinOutcome<T>> {
  const deadline = new AbortController();
  // Cancelling the sleep rejects it; by then the race is decided.
  const timeUp = clock.sleep(ms, deadline.signal).then(
    () => TOO_LATE,
    () => TOO_LATE,
  );
  try {
    return await Promise.race([work.then((value): WithinOutcome<T> => ({ inTime: true, value })), timeUp]);
  } finally {
    deadline.abort(OVER);
  }
}
