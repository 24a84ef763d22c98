/**
 * TransactionalScheduler: schedules kept in this process's memory, jobs run in
 * this process after the scheduling transaction commits. Results can only be
 * fetched from this process.
 */
import { AsyncResource } from 'node:async_hooks';
import type {
  GetResultOptions,
  JobFunction,
  JobState,
  JobProgress,
  ScheduleResult,
  Scheduler,
  SchedulerOptions,
  SchedulerStats,
  StopOptions,
  StoredError,
  TransactionMeta,
} from '../interfaces.js';
import type { TransactionManager } from '../transactions/manager.js';
import { JobCancelledError, SchedulerStoppedError } from '../errors.js';
import { SchedulerBase, visibleTo } from './base.js';
import { isScheduleId, newScheduleId } from './ids.js';
import { Limiter } from './limiter.js';
import { within } from '../support/deadline.js';
import { storedError } from './stored-error.js';
import { integerIn } from '../support/validate.js';

/** A schedule in memory: `uncommitted` until its scheduling transaction commits, then a job state. */
type State = 'uncommitted' | JobState;

interface Entry {
  readonly id: string;
  readonly name: string;
  readonly fn: JobFunction;
  readonly args: string;
  readonly meta: TransactionMeta;
  readonly controller: AbortController;
  state: State;
  progress?: JobProgress;
  value?: string;
  error?: StoredError;
  /** When an unfetched result is forgotten. */
  expiresAt?: number;
}

export class TransactionalScheduler extends SchedulerBase implements Scheduler {
  private readonly entries = new Map<string, Entry>();
  private readonly limiter: Limiter;
  /** Jobs run in the async context the scheduler was made in, not in the request's that scheduled them. */
  private readonly detached = new AsyncResource('aftercommit.job');
  private stopped = false;
  private sweeping = false;
  private readonly shutdown = new AbortController();

  constructor(manager: TransactionManager, options: SchedulerOptions = {}) {
    super(manager, options);
    this.limiter = new Limiter(options.concurrency ?? 4);
  }

  /**
   * Schedules `job` (a defined name, or a function) with `args`, to start once
   * the current transaction commits. Returns the schedule id at once.
   */
  schedule(job: string | JobFunction, ...args: unknown[]): string {
    if (this.stopped) throw new SchedulerStoppedError('schedule()');
    const tx = this.schedulingTransaction();
    const name = typeof job === 'function' ? this.nameOf(job) ?? (job.name || 'anonymous') : job;
    const fn = typeof job === 'function' ? job : this.job(job);
    const entry: Entry = {
      id: newScheduleId(),
      name,
      fn,
      args: this.codec.encodeArguments(name, args),
      meta: this.codec.decodeValue(this.codec.encodeMeta(name, tx.meta)) as TransactionMeta,
      controller: new AbortController(),
      state: 'uncommitted',
    };
    this.entries.set(entry.id, entry);
    tx.afterCommit((ok) => (ok ? this.enqueue(entry) : this.forget(entry)));
    tx.afterAbort(() => this.forget(entry));
    return entry.id;
  }

  /**
   * What became of schedule `id`. A done or failed result fetched inside a
   * transaction is deleted when that transaction commits (unless `consume: false`).
   */
  async getResult(id: string, options: GetResultOptions = {}): Promise<ScheduleResult> {
    const entry = isScheduleId(id) ? this.entries.get(id) : undefined;
    if (!entry || this.expired(entry) || !visibleTo(entry.meta, options)) return { state: 'unknown' };
    if (entry.state !== 'done' && entry.state !== 'failed') {
      return entry.progress ? { state: 'pending', progress: { ...entry.progress } } : { state: 'pending' };
    }
    if (options.consume !== false) this.manager.current?.afterCommit((ok) => ok && this.forget(entry));
    return entry.state === 'done'
      ? { state: 'done', value: this.codec.decodeValue(entry.value!) }
      : { state: 'failed', error: { ...entry.error! } };
  }

  /** Deletes schedule `id` now: a job that has not started never will; a running one is signalled and rolled back. */
  async remove(id: string): Promise<void> {
    const entry = isScheduleId(id) ? this.entries.get(id) : undefined;
    if (!entry) return;
    this.forget(entry);
    entry.controller.abort(new JobCancelledError(id));
  }

  /** Counts of the schedules held in memory, by state (expired results count until the timer forgets them). */
  stats(): SchedulerStats {
    const stats: SchedulerStats = { uncommitted: 0, pending: 0, running: 0, done: 0, failed: 0 };
    for (const entry of this.entries.values()) stats[entry.state]++;
    return stats;
  }

  /**
   * Stops taking schedules, fails the jobs that have not started, waits for
   * running jobs up to `timeout` ms, then aborts their signal and waits for them
   * to end.
   */
  async stop(options: StopOptions = {}): Promise<void> {
    const timeout = integerIn(options.timeout ?? 10_000, 'stop({ timeout }) (ms)', 0);
    this.stopped = true;
    this.shutdown.abort();
    for (const entry of this.entries.values()) {
      if (entry.state === 'pending') this.finishUnstarted(entry);
    }
    const idle = this.limiter.idle();
    if (!(await within(idle, timeout, this.manager.clock)).inTime) {
      for (const entry of this.entries.values()) {
        if (entry.state === 'running') entry.controller.abort(new SchedulerStoppedError(`job ${entry.name} outlived stop()'s deadline`));
      }
      await idle;
    }
  }

  private enqueue(entry: Entry): void {
    if (this.entries.get(entry.id) !== entry) return; // removed before its transaction committed
    if (this.stopped) {
      this.finishUnstarted(entry);
      return;
    }
    entry.state = 'pending';
    this.start(() => this.execute(entry));
  }

  private async execute(entry: Entry): Promise<void> {
    if (entry.state !== 'pending' || entry.controller.signal.aborted) return; // removed or failed while waiting
    entry.state = 'running';
    const outcome = await this.runJob({
      id: entry.id,
      name: entry.name,
      fn: entry.fn,
      args: entry.args,
      meta: entry.meta,
      signal: entry.controller.signal,
      // Kept in memory, a job runs once: only conflicts, inside its transaction, run it again.
      attempt: 1,
      maxAttempts: 1,
      run: 1,
      progress: async (progress) => {
        entry.progress = progress;
      },
    });
    if (outcome.state === 'failed') this.reportFailure(entry, { ...outcome, attempt: 1, run: 1 });
    this.finish(entry, outcome.state === 'done' ? { value: outcome.value } : { error: outcome.error });
  }

  private finish(entry: Entry, result: { value: string } | { error: StoredError }): void {
    if (this.entries.get(entry.id) !== entry) return; // removed meanwhile: the result is not wanted
    entry.state = 'value' in result ? 'done' : 'failed';
    Object.assign(entry, result);
    entry.expiresAt = this.manager.clock.now() + this.ttl;
    this.sweepLater();
  }

  /** Starts `task` through the concurrency limit, outside the async context of whoever asked. */
  private start(task: () => Promise<void>): void {
    this.detached.runInAsyncScope(() => this.limiter.add(task));
  }

  /** A job the stopped scheduler will never start fails with SchedulerStoppedError. */
  private finishUnstarted(entry: Entry): void {
    this.finish(entry, { error: storedError(new SchedulerStoppedError(`job ${entry.name} never started`)) });
  }

  private forget(entry: Entry): void {
    if (this.entries.get(entry.id) === entry) this.entries.delete(entry.id);
  }

  private expired(entry: Entry): boolean {
    return entry.expiresAt !== undefined && entry.expiresAt <= this.manager.clock.now();
  }

  /**
   * Forgets unfetched results once their ttl is over, by a timer that runs while
   * results are kept (not only when another job completes, so an idle process forgets too).
   */
  private sweepLater(): void {
    if (this.sweeping) return;
    this.sweeping = true;
    const interval = Math.min(this.ttl, 60_000);
    const sweep = async () => {
      try {
        while (!this.shutdown.signal.aborted && [...this.entries.values()].some((e) => e.expiresAt !== undefined)) {
          await this.manager.clock.sleep(interval, this.shutdown.signal);
          for (const entry of this.entries.values()) if (this.expired(entry)) this.entries.delete(entry.id);
        }
      } catch {
        // stopped: nothing more to sweep
      } finally {
        this.sweeping = false;
      }
    };
    void sweep();
  }
}
