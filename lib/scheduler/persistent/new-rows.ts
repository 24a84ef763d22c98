/**
 * The rows a schedule writes: a job's, with its options resolved (per schedule
 * over the job's `define` defaults over the scheduler's), and a batch's, itself
 * and its steps, due in turn.
 */
import type { Clock, JobOptions } from '../../interfaces.js';
import { newScheduleId } from '../ids.js';
import { StoredBatchSpec } from '../specs.js';
import { resolveJobOptions } from './job-options.js';
import type { Origin } from './origin.js';
import type { NewJob } from './rows.js';

export class NewRows {
  /** Options given to `define(name, fn, options)`, by job name. */
  readonly defaults = new Map<string, JobOptions>();
  private lastSeq = 0;

  constructor(
    private readonly clock: Clock,
    /** The scheduler's default lease (ms). */
    private readonly lease: number,
  ) {}

  /** The row of a new job `name` with stored `args`, its options resolved now (over `defined`, its `define()` options). */
  job(name: string, args: string, options: JobOptions, origin: Origin, defined = this.defaults.get(name) ?? {}): NewJob {
    const now = this.clock.now();
    const resolved = resolveJobOptions(defined, options, this.lease, now);
    return {
      id: newScheduleId(),
      name,
      queue: resolved.queue,
      priority: resolved.priority,
      runAt: resolved.runAt,
      args,
      ...origin,
      maxAttempts: resolved.maxAttempts,
      backoff: JSON.stringify(resolved.backoff),
      timeoutMs: resolved.timeout,
      leaseMs: resolved.lease,
      dedupeKey: resolved.dedupeKey,
      createdAt: now,
      seq: this.nextSeq(now),
      callbacks: resolved.callbacks,
      stopOnFailure: resolved.stopOnFailure,
      concurrencyKey: resolved.concurrencyKey,
    };
  }

  /** The rows of `batch` (itself first), its steps due at once when `due` (for a serial batch: its first). */
  batch(batch: StoredBatchSpec, options: JobOptions, origin: Origin, due: boolean, place?: { parentId: string; stepIndex: number }): NewJob[] {
    // A batch row has no job of its own, so no define() options: a job named 'serial' lends it none.
    const head: NewJob = { ...this.job(batch.kind, '[]', options, origin, {}), ...place, kind: batch.kind, state: 'waiting', stepsTotal: batch.steps.length };
    const rows = [head];
    batch.steps.forEach((step, stepIndex) => {
      // A batch starts when it is due: its first steps with it, the others when their turn comes.
      const stepDue = due && (batch.kind === 'parallel' || stepIndex === 0);
      const at = { parentId: head.id, stepIndex };
      if (step instanceof StoredBatchSpec) rows.push(...this.batch(step, { runAt: head.runAt, stopOnFailure: head.stopOnFailure }, origin, stepDue, at));
      else rows.push({ ...this.job(step.name, step.args, { runAt: head.runAt }, origin), ...at, state: stepDue ? 'pending' : 'waiting' });
    });
    return rows;
  }

  /**
   * Submission order of this process's schedules: ms since the epoch × 1024, and
   * one more than the last, so schedules of the same ms keep their order.
   */
  private nextSeq(now: number): number {
    this.lastSeq = Math.max(this.lastSeq + 1, now * 1024);
    return this.lastSeq;
  }
}
