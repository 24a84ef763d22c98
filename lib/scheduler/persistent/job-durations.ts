/**
 * Which claimed jobs run together: what this process learned of how long each
 * job takes (a job is short once one of its last three runs took at most half
 * the group window), and how a claim's rows are shared among free slots, one
 * job or a group of short ones each (job-group.ts runs the groups).
 */
import type { JobRow } from './rows.js';

/** Runs of a job this process must have seen before the job is grouped. */
const RUNS_SEEN = 3;
/** Job names remembered; later names are not grouped (names come from stored rows). */
const NAMES_KEPT = 1000;

/** What this process learned of how long each job takes, for all its workers. */
export class JobDurations {
  private readonly recent = new Map<string, number[]>();
  private readonly refused = new Set<string>();

  /** True when at least one job is short for `window`. */
  anyShort(window: number): boolean {
    return window > 0 && [...this.recent.keys()].some((name) => this.isShort(name, window));
  }

  record(name: string, ms: number): void {
    const runs = this.recent.get(name) ?? [];
    if (runs.length === 0 && this.recent.size >= NAMES_KEPT) return;
    runs.push(ms);
    if (runs.length > RUNS_SEEN) runs.shift();
    this.recent.set(name, runs);
  }

  /** Never groups `name` again in this process: one of its runs could not share a transaction. */
  refuse(name: string): void {
    this.refused.add(name);
  }

  /**
   * Whether one of the last runs of `name` took at most half of `window`. One is enough: on a busy machine a short
   * job's runs also take long waiting for the CPU or the database, and that is when groups help most. A job that
   * is never that short is never grouped.
   */
  isShort(name: string, window: number): boolean {
    const runs = this.recent.get(name);
    return window > 0 && !this.refused.has(name) && runs !== undefined && runs.length === RUNS_SEEN && runs.some((ms) => ms * 2 <= window);
  }

  /** Whether `row` may join a group: a short plain job claimed from the queue (not a batch, a step, a job with callbacks, or a recovered one). */
  groupable(row: JobRow, window: number): boolean {
    return row.state === 'pending' && row.kind === 'job' && row.parentId === null && row.callbacks === null && this.isShort(row.name, window);
  }
}

/**
 * What each of `free` slots runs of the claimed `rows` (in claim order): one job,
 * or a group of up to `size` short ones. The first `free` rows each take a slot,
 * as without groups; later short rows join the smallest group with room. Rows
 * that fit nowhere are left out (the claim does not take them).
 */
export function planSlots(rows: readonly JobRow[], free: number, group: { size: number; window: number }, durations: JobDurations): JobRow[][] {
  const slots: JobRow[][] = [];
  const groups: JobRow[][] = [];
  for (const row of rows) {
    const short = group.size > 1 && durations.groupable(row, group.window);
    if (slots.length < free) {
      slots.push([row]);
      if (short) groups.push(slots[slots.length - 1]!);
    } else if (short) {
      const smallest = groups.reduce<JobRow[] | undefined>((best, candidate) => (candidate.length < group.size && (!best || candidate.length < best.length) ? candidate : best), undefined);
      smallest?.push(row);
    }
  }
  return slots;
}
