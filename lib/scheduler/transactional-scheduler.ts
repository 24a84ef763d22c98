/**
 * TransactionalScheduler: schedules kept in this process's memory, jobs run in
 * this process after the scheduling transaction commits. Results can only be
 * fetched from this process. Batches (serial, parallel, nested) and callbacks
 * are schedules too; the bookkeeping of a batch's steps and of callbacks is in
 * memory-batches.ts, the schedules held (and their expiry) in memory-entries.ts.
 */
import { AsyncResource } from 'node:async_hooks';
import type {
  GetResultOptions,
  JobFunction,
  JobOptions,
  JobProgress,
  QueueGauges,
  ScheduleResult,
  Scheduler,
  SchedulerOptions,
  SchedulerStats,
  Scheduling,
  StepSpec,
  StopOptions,
  StoredError,
  Transaction,
} from '../interfaces.js';
import type { TransactionManager } from '../transactions/manager.js';
import { JobCancelledError, SchedulerStoppedError } from '../errors.js';
import { SchedulerBase, visibleTo } from './base.js';
import { isScheduleId } from './ids.js';

/** The queue the in-memory scheduler's jobs are counted in (it has no queues of its own). */
const MEMORY_QUEUE = 'default';
import { Limiter } from './limiter.js';
import { within } from '../support/deadline.js';
import { storedError } from './stored-error.js';
import { integerIn } from '../support/validate.js';
import { StoredBatchSpec, checkSteps } from './specs.js';
import { MemoryEntries } from './memory-entries.js';
import {
  NO_OPTIONS,
  callbackEntry,
  callbackOf,
  checkMemoryOptions,
  entryValue,
  neverStarted,
  newBatchEntry,
  newJobEntry,
  stepRecord,
  type BatchEntry,
  type Entry,
  type JobEntry,
  type MemoryJobOptions,
  type StepRecord,
} from './memory-batches.js';

export class TransactionalScheduler extends SchedulerBase implements Scheduler {
  private readonly entries: MemoryEntries;
  private readonly limiter: Limiter;
  /** Jobs run in the async context the scheduler was made in, not in the request's that scheduled them. */
  private readonly detached = new AsyncResource('aftercommit.job');
  private stopped = false;
  private readonly shutdown = new AbortController();
  private readonly decode = (stored: string) => this.codec.decodeValue(stored);

  constructor(manager: TransactionManager, options: SchedulerOptions = {}) {
    super(manager, options);
    this.limiter = new Limiter(options.concurrency ?? 4);
    this.entries = new MemoryEntries(manager.clock, this.ttl, this.shutdown.signal);
  }

  /**
   * Schedules `job` (a defined name, or a function) with `args`, to start once
   * the current transaction commits. Returns the schedule id at once.
   */
  schedule(job: string | JobFunction, ...args: unknown[]): string {
    return this.scheduleJob(NO_OPTIONS, job, args);
  }

  /**
   * Schedules a serial batch: once the current transaction commits, its steps
   * run one after another, each in its own transaction, in the order given.
   * Returns the batch's id at once; its value is one StepOutcome per step.
   */
  serial(...steps: StepSpec[]): string {
    return this.scheduleBatch(NO_OPTIONS, 'serial', steps);
  }

  /** Schedules a parallel batch: every step starts at once (within `concurrency`); it is done when the last one ends. */
  parallel(...steps: StepSpec[]): string {
    return this.scheduleBatch(NO_OPTIONS, 'parallel', steps);
  }

  /** Schedules with options: `onSuccess`, `onFailure` (job specs) and `stopOnFailure` only; any other is a TypeError. */
  with(options: Pick<JobOptions, 'onSuccess' | 'onFailure' | 'stopOnFailure'>): Scheduling {
    const checked = checkMemoryOptions(this, options, 'with()');
    return {
      schedule: (job, ...args) => this.scheduleJob(checked, job, args),
      serial: (...steps) => this.scheduleBatch(checked, 'serial', steps),
      parallel: (...steps) => this.scheduleBatch(checked, 'parallel', steps),
    };
  }

  /**
   * What became of schedule `id`. A done or failed result fetched inside a
   * transaction is deleted when that transaction commits (unless `consume: false`).
   */
  async getResult(id: string, options: GetResultOptions = {}): Promise<ScheduleResult> {
    const entry = isScheduleId(id) ? this.entries.get(id) : undefined;
    if (!entry || this.entries.expired(entry) || !visibleTo(entry.meta, options)) return { state: 'unknown' };
    if (entry.state !== 'done' && entry.state !== 'failed') {
      return entry.progress ? { state: 'pending', progress: { ...entry.progress } } : { state: 'pending' };
    }
    if (options.consume !== false) this.manager.current?.afterCommit((ok) => ok && this.entries.forget(entry));
    if (entry.state === 'failed') return { state: 'failed', error: { ...entry.error! } };
    return { state: 'done', value: entryValue(entry, this.decode) };
  }

  /**
   * Deletes schedule `id` now: a job that has not started never will; a running
   * one is signalled and rolled back; so are the steps of a batch. A step removed
   * by its own id (`job.id`) ends as failed (JobCancelledError) in its batch, which goes on.
   */
  async remove(id: string): Promise<void> {
    const entry = isScheduleId(id) ? this.entries.get(id) : undefined;
    if (!entry) return;
    if (!entry.parent) return this.cancel(entry);
    const error = storedError(new JobCancelledError(id));
    if (entry.kind === 'job') {
      entry.controller.abort(new JobCancelledError(id));
      if (entry.state === 'pending') this.finish(entry, { error }); // a running one ends by itself, failed
    } else {
      for (const child of entry.children) this.cancel(child);
      this.finish(entry, { error });
    }
  }

  /** Counts of the schedules held in memory, by state: jobs, batches, their steps and callbacks (expired results count until the timer forgets them). */
  /** @internal */
  protected async queueGauges(): Promise<Record<string, QueueGauges>> {
    const { waiting, pending, running } = this.entries.stats();
    return { [MEMORY_QUEUE]: { waiting, pending, running, oldestDueMs: null } };
  }

  stats(): SchedulerStats {
    return this.entries.stats();
  }

  /**
   * Stops taking schedules, fails the jobs that have not started (and the steps
   * of batches not reached yet), waits for running jobs up to `timeout` ms, then
   * aborts their signal and waits for them to end.
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
        if (entry.kind === 'job' && entry.state === 'running') entry.controller.abort(new SchedulerStoppedError(`job ${entry.name} outlived stop()'s deadline`));
      }
      await idle;
    }
  }

  private scheduleJob(options: MemoryJobOptions, job: string | JobFunction, args: unknown[]): string {
    if (this.stopped) throw new SchedulerStoppedError('schedule()');
    const tx = this.schedulingTransaction();
    const name = typeof job === 'function' ? this.nameOf(job) ?? (job.name || 'anonymous') : job;
    const fn = typeof job === 'function' ? job : this.definedJob(job);
    const fields = { name, fn, args: this.codec.encodeArguments(name, args), storedMeta: this.codec.encodeMeta(name, tx.meta), options };
    return this.afterCommitOf(tx, newJobEntry(fields, this.decode));
  }

  private scheduleBatch(options: MemoryJobOptions, kind: 'serial' | 'parallel', steps: StepSpec[]): string {
    if (this.stopped) throw new SchedulerStoppedError(`${kind}()`);
    const spec = new StoredBatchSpec(kind, checkSteps(this, steps, `${kind}(...steps)`));
    const tx = this.schedulingTransaction();
    return this.afterCommitOf(tx, newBatchEntry({ spec, storedMeta: this.codec.encodeMeta(`${kind} batch`, tx.meta), options }, this.decode));
  }

  /** Keeps `entry` as uncommitted and starts it once `tx` commits; forgets it if `tx` aborts. */
  private afterCommitOf(tx: Transaction, entry: Entry): string {
    this.entries.add(entry);
    tx.afterCommit((ok) => (ok ? this.begin(entry) : this.entries.forget(entry)));
    tx.afterAbort(() => this.entries.forget(entry));
    return entry.id;
  }

  /** Starts a committed schedule, a step or a callback: a job waits for a free slot, a batch starts its first steps. */
  private begin(entry: Entry): void {
    if (!this.entries.holds(entry)) return; // removed before its transaction committed
    if (this.stopped) return this.finishUnstarted(entry);
    if (entry.kind === 'job') {
      entry.state = 'pending';
      this.detached.runInAsyncScope(() => this.limiter.add(() => this.execute(entry)));
      return;
    }
    entry.state = 'waiting';
    entry.progress = entry.run.progress;
    this.advance(entry, entry.run.first());
  }

  /** Starts the steps `queue` names; those that cannot start (the scheduler stopped) end at once, in this loop, not by recursion. */
  private advance(batch: BatchEntry, queue: number[]): void {
    for (let index = queue.shift(); index !== undefined; index = queue.shift()) {
      const ended = this.startStep(batch, index);
      if (ended && this.recorded(batch, index, ended, queue)) return;
    }
  }

  /** Starts step `index` of `batch`, in the batch's name; when the stopped scheduler cannot, returns how it ended instead. */
  private startStep(batch: BatchEntry, index: number): StepRecord | undefined {
    const spec = batch.run.spec.steps[index]!;
    if (this.stopped) return { state: 'failed', error: neverStarted(spec.kind === 'job' ? `job ${spec.name}` : `${spec.kind} batch`) };
    const inherited = { storedMeta: batch.storedMeta, parent: { batch, index } };
    const step =
      spec.kind === 'job'
        ? newJobEntry({ name: spec.name, fn: this.definedJob(spec.name), args: spec.args, ...inherited }, this.decode)
        : newBatchEntry({ spec, stopOnFailure: batch.run.stopOnFailure, ...inherited }, this.decode);
    batch.children.add(step);
    this.entries.add(step);
    this.begin(step);
    return undefined;
  }

  /** Records how step `index` ended and queues the next; true once the batch is done (and finished). */
  private recorded(batch: BatchEntry, index: number, record: StepRecord, queue: number[]): boolean {
    const next = batch.run.record(index, record);
    batch.progress = batch.run.progress;
    if (next === 'done') {
      this.finish(batch, {});
      return true;
    }
    queue.push(...next);
    return false;
  }

  private async execute(entry: JobEntry): Promise<void> {
    if (entry.state !== 'pending' || entry.controller.signal.aborted) return; // removed or failed while waiting
    entry.state = 'running';
    const { id, name, fn, args, meta } = entry;
    const progress = async (reported: JobProgress) => void (entry.progress = reported);
    // Kept in memory, a job runs once: only conflicts, inside its transaction, run it again.
    const outcome = await this.runJob({ id, name, queue: MEMORY_QUEUE, fn, args, meta, signal: entry.controller.signal, attempt: 1, maxAttempts: 1, run: 1, progress });
    if (outcome.state === 'failed') this.reportFailure({ id, name, queue: MEMORY_QUEUE }, { ...outcome, attempt: 1, run: 1 });
    this.finish(entry, outcome.state === 'done' ? { value: outcome.value } : { error: outcome.error });
  }

  /** Records how `entry` ended: a step's outcome goes to its batch, a schedule's result is kept (and its callback started). */
  private finish(entry: Entry, result: { value?: string; error?: StoredError }): void {
    if (!this.entries.holds(entry)) return; // removed meanwhile: the result is not wanted
    entry.state = result.error ? 'failed' : 'done';
    Object.assign(entry, result);
    if (entry.parent || entry.callback) this.entries.forget(entry);
    if (entry.parent) {
      const { batch, index } = entry.parent;
      batch.children.delete(entry);
      if (!this.entries.holds(batch)) return;
      const queue: number[] = [];
      if (!this.recorded(batch, index, stepRecord(entry), queue)) this.advance(batch, queue);
      return;
    }
    if (entry.callback) return;
    this.entries.keepResult(entry);
    this.startCallback(entry);
  }

  /**
   * Starts the callback `parent` was scheduled with for how it ended, if any: a job
   * of its own, owned like its parent. A batch with a failed or skipped step (or a
   * nested batch with a failed step) ends badly: onFailure, with a BatchFailedError.
   */
  private startCallback(parent: Entry): void {
    const spec = callbackOf(parent);
    if (!spec) return;
    if (this.stopped) {
      this.logger.warn({ job: spec.name, parent: parent.id }, `callback ${spec.name} of ${parent.id} not started: the scheduler has been stopped`);
      return;
    }
    const callback = callbackEntry(parent, spec, this.definedJob(spec.name), this.decode);
    this.entries.add(callback);
    this.begin(callback);
  }

  /** Forgets `entry` and, for a batch, the steps it has started; signals the jobs among them that run. */
  private cancel(entry: Entry): void {
    this.entries.forget(entry);
    if (entry.kind === 'job') entry.controller.abort(new JobCancelledError(entry.id));
    else for (const child of entry.children) this.cancel(child);
  }

  /** A schedule the stopped scheduler will never start fails with SchedulerStoppedError. */
  private finishUnstarted(entry: Entry): void {
    this.finish(entry, { error: neverStarted(entry.kind === 'job' ? `job ${entry.name}` : `${entry.name} batch`) });
  }
}
