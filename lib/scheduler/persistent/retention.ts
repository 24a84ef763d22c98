/**
 * How long finished rows stay (`retention`): a done job's for the history, a
 * failed one's until an operator retries or removes it, unless the app sets a
 * retention. Fetching a result deletes its row only when its state has no
 * retention; otherwise the row stays until its retention ends.
 */
import type { JobRetention } from '../../interfaces.js';
import { integerIn } from '../../support/validate.js';
import { MAX_TTL_MS } from '../base.js';

/** The retention of each finished state, checked: ms after the job finished, or null for "until acted on". */
export interface Retention {
  done: number;
  failed: number | null;
}

export function checkRetention(retention: JobRetention | undefined): Retention {
  if (retention === undefined) return { done: 0, failed: null };
  if (typeof retention !== 'object' || retention === null || Array.isArray(retention)) {
    throw new TypeError(`retention must be an object like { done: 86_400_000, failed: null }, got ${JSON.stringify(retention)}`);
  }
  for (const key of Object.keys(retention)) {
    if (key !== 'done' && key !== 'failed') throw new TypeError(`retention takes done and failed, not ${JSON.stringify(key)}`);
  }
  const done = retention.done === undefined ? 0 : integerIn(retention.done, 'retention.done (ms)', 0, MAX_TTL_MS); // null is no "keep": refused
  const failed = retention.failed === undefined || retention.failed === null ? null : integerIn(retention.failed, 'retention.failed (ms)', 0, MAX_TTL_MS);
  return { done, failed };
}

/**
 * When a job's row that finished at `now` in `state` expires: unfetched, not
 * before `ttl`; kept longer by its state's retention; never (null) for a failed
 * job kept until acted on.
 */
export function expiryOf(retention: Retention, state: 'done' | 'failed', now: number, ttl: number): number | null {
  const keep = retention[state];
  return keep === null ? null : now + Math.max(ttl, keep);
}
