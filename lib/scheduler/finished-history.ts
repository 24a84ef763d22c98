/**
 * Jobs finished per minute over the last hour, done and failed: kept by each
 * process in memory, written with its workers' heartbeats to the registry, and
 * summed over the registry's rows for the dashboard's chart. So the chart needs
 * no finished rows, and reading it scans no jobs.
 */
import { randomBytes } from 'node:crypto';
import type { FinishedPerMinute } from '../interfaces.js';

const MINUTES = 60;
const MINUTE_MS = 60_000;

const zeros = () => new Array<number>(MINUTES).fill(0);

/** A scheduler's last hour as the registry keeps it: `source` tells schedulers apart, however many workers write it. */
export type SourcedHour = FinishedPerMinute & { source: string };

/** The minutes from `minute - 59` to `minute` (ms of each minute's start), oldest first, all zero. */
function emptyHour(now: number): FinishedPerMinute {
  return { minute: Math.floor(now / MINUTE_MS) * MINUTE_MS, done: zeros(), failed: zeros() };
}

/**
 * `counts` (oldest first, ending at minute `from`) moved to end at minute `to`:
 * minutes older than the hour drop out, and minutes after `to` (a writer whose
 * clock is ahead) count in the last one.
 */
function shifted(counts: readonly number[], from: number, to: number): number[] {
  const by = Math.round((to - from) / MINUTE_MS);
  const moved = zeros();
  counts.forEach((n, i) => {
    if (i - by >= 0) moved[Math.min(MINUTES - 1, i - by)]! += n;
  });
  return moved;
}

export class FinishedHistory {
  private readonly source = randomBytes(6).toString('hex');
  private hour: FinishedPerMinute = emptyHour(0);

  /** Counts a job that finished in `state` at `now`. */
  count(state: 'done' | 'failed', now: number): void {
    this.at(now);
    this.hour[state][MINUTES - 1]!++;
  }

  /** The last hour's counts as of `now`. */
  at(now: number): SourcedHour {
    const minute = Math.floor(now / MINUTE_MS) * MINUTE_MS;
    if (minute > this.hour.minute) {
      this.hour = { minute, done: shifted(this.hour.done, this.hour.minute, minute), failed: shifted(this.hour.failed, this.hour.minute, minute) };
    }
    return { source: this.source, ...this.hour };
  }
}

/** Sums hours as written by several processes, each moved to end at `now`'s minute; a malformed one is skipped. */
export function sumHours(hours: readonly unknown[], now: number): FinishedPerMinute {
  const sum = emptyHour(now);
  for (const hour of hours) {
    if (!isHour(hour)) continue;
    for (const state of ['done', 'failed'] as const) {
      shifted(hour[state], hour.minute, sum.minute).forEach((n, i) => (sum[state][i]! += n));
    }
  }
  return sum;
}

function isHour(value: unknown): value is FinishedPerMinute {
  const hour = value as FinishedPerMinute | null;
  const counts = (list: unknown) => Array.isArray(list) && list.length === MINUTES && list.every((n) => Number.isSafeInteger(n) && n >= 0);
  return typeof hour === 'object' && hour !== null && Number.isSafeInteger(hour.minute) && counts(hour.done) && counts(hour.failed);
}
