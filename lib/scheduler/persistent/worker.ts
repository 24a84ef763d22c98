/**
 * A worker of the persistent scheduler: claims due jobs in a tiny transaction
 * (FOR UPDATE SKIP LOCKED, then UPDATE by primary key), runs each in a
 * transaction of its own under a lease that a heartbeat renews, and records
 * how it ended. The lease makes crashes recoverable (a dead worker's jobs are
 * claimed again once it runs out) and the fencing on its token makes a job's
 * writes land once, even when a stalled worker wakes up after a take-over.
 */
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type {
  JobFunction,
  JobProgress,
  Logger,
  SchedulerEvents,
  Transaction,
  TransactionMeta,
  WorkerOptions,
  WorkerStopOptions,
} from '../../interfaces.js';
import type { TransactionManager } from '../../transactions/manager.js';
import { CommitOutcomeUnknownError, JobCancelledError, JobTimeoutError, LeaseLostError, UnknownJobError } from '../../errors.js';
import { retryDelay, type DelayPolicy } from '../../transactions/backoff.js';
import { storedError } from '../stored-error.js';
import type { JobOutcome, JobRun } from '../base.js';
import type { JobRow, JobStore } from './store.js';

/** A job running in this process: how remove() and getResult() reach it at once. */
export interface LocalRun {
  controller: AbortController;
  /** meta.user of the schedule, for getResult's visibility check. */
  owner: string | null;
  progress?: JobProgress;
  /** The job's result is written in its transaction, which is committing: the row is no longer ours to renew. */
  completing?: boolean;
  /** The attempt of the job's transaction whose own COMMIT failed (its outcome may be unknown). */
  commitFailedIn?: number;
}

/** What a worker uses of its scheduler. */
export interface WorkerHost {
  manager: TransactionManager;
  store: JobStore;
  /** Emits a scheduler event; a listener that throws is logged, never fails the job or the worker. */
  emitSafely<K extends keyof SchedulerEvents>(event: K, ...args: SchedulerEvents[K]): void;
  logger: Logger;
  ttl: number;
  maxRuns: number;
  concurrency: number;
  localRuns: Map<string, LocalRun>;
  job(name: string): JobFunction;
  decodeMeta(meta: string): TransactionMeta;
  runJob(run: JobRun): Promise<JobOutcome>;
  reportFailure(run: { id: string; name: string }, outcome: Extract<JobOutcome, { state: 'failed' }>): void;
  register(worker: Worker): () => void;
}

/** Why a stopping worker aborts a job: it goes back to the queue for another worker, unchanged. */
class WorkerStoppingError extends Error {
  constructor(worker: string) {
    super(`worker ${worker} is stopping: the job goes back to the queue`);
    this.name = 'WorkerStoppingError';
  }
}

/** The longest re-queue delay a valid backoff gives (its `max` is at most 2^31 - 1 ms). */
const MAX_REQUEUE_DELAY_MS = 2 ** 31 - 1;
/** What stop() allows, beyond the grace, for the jobs ended from outside to be handed back. */
const HAND_BACK_MS = 5000;
const noop = () => undefined;

export class Worker {
  /** How this worker names itself in the jobs it claims (`locked_by`). */
  readonly id: string;
  private readonly concurrency: number;
  private readonly queues: readonly string[];
  private readonly minPoll: number;
  private readonly maxPoll: number;
  private readonly active = new Map<string, { done: Promise<void>; local: LocalRun }>();
  private state: 'idle' | 'running' | 'stopping' | 'stopped' = 'idle';
  private loopDone: Promise<void> = Promise.resolve();
  private stopping: Promise<void> | undefined;
  private woken = false;
  private nudge: () => void = noop;
  private unregister: () => void = noop;
  private nextLeaseCheck = 0;
  private nextSweep = 0;
  /** Ms a job whose signal was aborted has before it is ended from outside. */
  private readonly grace: number;

  constructor(
    private readonly host: WorkerHost,
    options: WorkerOptions = {},
  ) {
    this.id = options.id ?? `${hostname().slice(0, 60)}:${process.pid}:${randomBytes(3).toString('hex')}`;
    if (this.id.length > 100) throw new TypeError(`a worker id is at most 100 characters (locked_by), got ${this.id.length}`);
    this.concurrency = options.concurrency ?? host.concurrency;
    if (!Number.isInteger(this.concurrency) || this.concurrency < 1) throw new TypeError(`concurrency must be an integer >= 1, got ${this.concurrency}`);
    this.queues = options.queues ?? ['default'];
    if (this.queues.length === 0) throw new TypeError('queues must name at least one queue');
    this.minPoll = options.minPollInterval ?? 50;
    this.maxPoll = options.maxPollInterval ?? 2000;
    this.grace = options.grace ?? 5000;
    if (!Number.isInteger(this.grace) || this.grace < 0 || this.grace > 2 ** 31 - 1) {
      throw new TypeError(`grace must be an integer number of ms from 0 to 2147483647, got ${String(options.grace)}`);
    }
  }

  /** Jobs this worker is running now. */
  get running(): number {
    return this.active.size;
  }

  /** Starts claiming and running jobs. */
  start(): this {
    if (this.state !== 'idle') throw new Error(`worker ${this.id} was already started`);
    this.state = 'running';
    this.unregister = this.host.register(this);
    // Outside the caller's transaction: started from a request, claims and jobs must not join it.
    this.loopDone = this.host.manager.outside(() => this.loop());
    return this;
  }

  /** Claims at once instead of at the next poll (a transaction in this process committed new jobs). */
  wake(): void {
    this.woken = true;
    this.nudge();
  }

  /**
   * Stops claiming, lets running jobs finish for up to `timeout` ms, then aborts
   * their signal and hands them back to the queue for another worker.
   */
  stop(options: WorkerStopOptions = {}): Promise<void> {
    if (this.state === 'idle' || this.state === 'stopped') return Promise.resolve();
    return (this.stopping ??= this.shutDown(options)); // a second call waits for the same end
  }

  private async shutDown({ timeout = 30_000 }: WorkerStopOptions): Promise<void> {
    this.state = 'stopping';
    this.nudge();
    await this.loopDone;
    this.unregister();
    if (!(await this.settled(timeout))) {
      for (const { local } of this.active.values()) local.controller.abort(new WorkerStoppingError(this.id));
      // Jobs that ignore their signal are ended from outside after the grace; handing them back takes a moment more.
      await this.settled(this.grace + HAND_BACK_MS);
    }
    this.state = 'stopped';
  }

  /** True when the running jobs ended within `ms`. */
  private async settled(ms: number): Promise<boolean> {
    if (this.active.size === 0) return true;
    const deadline = new AbortController();
    const ended = Promise.allSettled([...this.active.values()].map((a) => a.done)).then(() => true);
    const timedOut = this.host.manager.clock.sleep(ms, deadline.signal).then(() => false, () => true);
    const result = await Promise.race([ended, timedOut]);
    deadline.abort();
    return result;
  }

  private async loop(): Promise<void> {
    let interval = this.minPoll;
    while (this.state === 'running') {
      const free = this.concurrency - this.active.size;
      let claimed = 0;
      if (free > 0) {
        try {
          claimed = await this.claim(free);
        } catch (err) {
          this.host.logger.warn({ err, worker: this.id }, `worker ${this.id}: claiming jobs failed; it tries again`);
        }
      }
      await this.sweep();
      // Short waits while there is work, doubling up to maxPoll while claims come back empty.
      // A full worker did not look: it waits for a free slot (which wakes it), then starts short again.
      interval = claimed > 0 || free === 0 ? this.minPoll : Math.min(interval * 2, this.maxPoll);
      if (this.state === 'running') await this.pause(free === 0 ? this.maxPoll : interval);
    }
  }

  /** Waits `ms`, or less when woken, or when a slot frees after the worker was full. */
  private async pause(ms: number): Promise<void> {
    if (this.woken) {
      this.woken = false;
      return;
    }
    const sleeping = new AbortController();
    await new Promise<void>((resolve) => {
      this.nudge = resolve;
      this.host.manager.clock.sleep(ms, sleeping.signal).then(resolve, noop);
    });
    sleeping.abort();
    this.nudge = noop;
    this.woken = false;
  }

  /** Deletes finished rows past their expiry (unfetched results), now and then. */
  private async sweep(): Promise<void> {
    const { manager, store, logger, ttl } = this.host;
    const now = manager.clock.now();
    if (now < this.nextSweep) return;
    this.nextSweep = now + Math.min(ttl, 60_000);
    try {
      while ((await store.sweep(manager.knex, now, 1000)) === 1000) {
        if (this.state !== 'running') return;
      }
    } catch (err) {
      logger.warn({ err, worker: this.id }, `worker ${this.id}: deleting expired results failed; it tries again later`);
    }
  }

  /** Claims up to `limit` jobs (expired leases first, then due jobs of each queue) and starts them. */
  private async claim(limit: number): Promise<number> {
    const { manager, store } = this.host;
    const now = manager.clock.now();
    const token = randomBytes(16).toString('hex');
    const checkLeases = now >= this.nextLeaseCheck;
    const rows = await manager.run(
      async (tx) => {
        const claimed: JobRow[] = [];
        if (checkLeases) {
          // Not our own: a job running here has a live worker even if its heartbeat is late.
          const expired = await store.expiredLeases(tx.db, now, limit);
          claimed.push(...expired.filter((row) => !this.host.localRuns.has(row.id)));
        }
        for (const queue of this.queues) {
          if (claimed.length >= limit) break;
          claimed.push(...(await store.duePending(tx.db, queue, now, limit - claimed.length)));
        }
        if (claimed.length > 0) await store.claim(tx.db, claimed, { token, worker: this.id, now });
        return claimed;
      },
      // The worker's own bookkeeping (here and below) touches job rows only, never the app's: it takes
      // no part in escalation, so a crowd of retried requests does not hold up claims.
      // READ COMMITTED: under MySQL's REPEATABLE READ, the claim's locking reads also take
      // gap locks (even on delete-marked index entries of finished jobs), so concurrent
      // claimers block and deadlock each other when they insert into those gaps.
      { name: `claim jobs (worker ${this.id})`, isolationLevel: 'read committed', escalate: false },
    );
    if (checkLeases) this.nextLeaseCheck = now + this.maxPoll;
    for (const row of rows) this.begin(row, token, now);
    return rows.length;
  }

  private begin(row: JobRow, token: string, now: number): void {
    const local: LocalRun = { controller: new AbortController(), owner: row.owner };
    this.host.localRuns.set(row.id, local);
    const done = this.runClaimed(row, token, local, now)
      .catch((err: unknown) => this.host.logger.error({ err, id: row.id }, `worker ${this.id}: job ${row.name} (${row.id}) could not be settled`))
      .finally(() => {
        this.host.localRuns.delete(row.id);
        this.active.delete(row.id);
        this.wake(); // a slot is free: claim at once, even if the loop is busy right now
      });
    this.active.set(row.id, { done, local });
  }

  private async runClaimed(row: JobRow, token: string, local: LocalRun, now: number): Promise<void> {
    const { manager, store } = this.host;
    if (row.state === 'running') {
      // Its lease ran out: the worker that had it died or stalled.
      this.host.logger.warn(
        { id: row.id, job: row.name, previousWorker: row.lockedBy, expiredMs: now - (row.lockedUntil ?? now), run: row.runs + 1 },
        `worker ${this.id}: recovered job ${row.name} (${row.id}) from ${row.lockedBy}, whose lease ran out ${now - (row.lockedUntil ?? now)} ms ago`,
      );
      if (row.runs >= this.host.maxRuns) {
        const error = { name: 'WorkerLostError', message: `job ${row.name} was started ${row.runs} times and each time its worker died or lost its lease` };
        await this.settle(row, token, { state: 'failed', error, cause: new Error(error.message), attempt: row.runs }, { final: true });
        return;
      }
    }
    const stopBeating = new AbortController();
    void this.heartbeat(row, token, local, stopBeating.signal);
    const end = this.endAfterGrace(local.controller.signal, stopBeating.signal);
    if (row.timeoutMs !== null) {
      manager.clock.sleep(row.timeoutMs, stopBeating.signal).then(
        () => local.controller.abort(new JobTimeoutError(row.name, row.timeoutMs!)),
        noop,
      );
    }
    let outcome: JobOutcome;
    try {
      outcome = await this.host.runJob({
        id: row.id,
        name: row.name,
        fn: this.host.job(row.name),
        args: row.args,
        meta: this.host.decodeMeta(row.meta),
        signal: local.controller.signal,
        previousRuns: row.runs,
        progress: (progress) => this.progress(row, token, local, progress),
        end,
        beforeCommit: async (tx, result) => {
          const at = manager.clock.now();
          // Fencing: the result (and with it the job's writes) commits only while the claim is still ours.
          if ((await store.complete(tx.db, row.id, token, result, at, at + this.host.ttl)) === 0) throw new LeaseLostError(row.id);
          local.completing = true;
          tx.afterCommit((ok) => {
            if (!ok) local.commitFailedIn = tx.attempt;
          });
          tx.afterAbort(() => {
            local.completing = false; // the attempt is retried: the claim is ours again, and renewed
          });
          this.forgetLocalRunAtCommit(tx, row.id);
        },
      });
    } catch (cause) {
      outcome = { state: 'failed', error: storedError(cause), cause, attempt: row.runs + 1 }; // e.g. an unknown job name here
    } finally {
      stopBeating.abort();
    }
    if (outcome.state === 'failed') {
      // Only the job's own COMMIT, not one of other work inside the job, can leave it done after all.
      const ownCommitLost = outcome.cause instanceof CommitOutcomeUnknownError && local.commitFailedIn === outcome.attempt - row.runs;
      await this.settle(row, token, outcome, { abortReason: local.controller.signal.reason, ownCommitLost });
    }
  }

  /**
   * A signal that aborts `grace` ms after `jobSignal` (timeout, removal, stop),
   * with its reason, unless the run has ended by then (`runEnded`): the job's
   * transaction is then ended from outside, whether or not the job listens.
   */
  private endAfterGrace(jobSignal: AbortSignal, runEnded: AbortSignal): AbortSignal {
    const end = new AbortController();
    jobSignal.addEventListener(
      'abort',
      () => {
        const timer = setTimeout(() => end.abort(jobSignal.reason), this.grace);
        runEnded.addEventListener('abort', () => clearTimeout(timer), { once: true });
      },
      { once: true },
    );
    return end.signal;
  }

  /** Records a failed run: re-queued with backoff while attempts remain, failed for good after. */
  private async settle(
    row: JobRow,
    token: string,
    outcome: Extract<JobOutcome, { state: 'failed' }>,
    { abortReason, final = false, ownCommitLost = false }: { abortReason?: unknown; final?: boolean; ownCommitLost?: boolean },
  ): Promise<void> {
    const { manager, store } = this.host;
    if (outcome.cause instanceof LeaseLostError && !(abortReason instanceof LeaseLostError)) this.lostLease(row); // found by the fencing
    if (abortReason instanceof LeaseLostError || abortReason instanceof JobCancelledError || outcome.cause instanceof LeaseLostError) {
      return; // not ours any more: another worker has it, or it was removed
    }
    const now = manager.clock.now();
    if (abortReason instanceof WorkerStoppingError) {
      await manager.run((tx) => store.requeue(tx.db, row.id, token, now, { runs: row.runs }), { name: 'hand back a job', escalate: false });
      return;
    }
    if (ownCommitLost) {
      this.host.logger.warn(
        { err: outcome.cause, id: row.id, job: row.name },
        `worker ${this.id}: job ${row.name} (${row.id}) lost its connection during COMMIT; it goes back to the queue and runs again only if that COMMIT did not land`,
      );
    }
    // A database that went away is like a conflict: the run says nothing about the job. So is the
    // job's own COMMIT whose outcome is unknown (had it landed, the row is done and the requeue,
    // fenced on our claim, changes nothing), and a job this worker does not know (another version of
    // the app may define it): it goes back to the queue.
    const transient =
      manager.isTransient(outcome.cause) || manager.isUnavailable(outcome.cause) || ownCommitLost || outcome.cause instanceof UnknownJobError;
    const failures = row.failures + (transient ? 0 : 1);
    const runs = row.runs + 1;
    const again = !final && (transient ? runs < this.host.maxRuns : failures < row.maxAttempts);
    if (again) {
      let requeued: number;
      try {
        const delay = Math.round(retryDelay(transient ? runs : failures, JSON.parse(row.backoff) as DelayPolicy, manager.random));
        if (!(delay >= 0 && delay <= MAX_REQUEUE_DELAY_MS)) throw new RangeError(`its stored backoff ${row.backoff} gives a delay of ${delay} ms`);
        requeued = await manager.run((tx) => store.requeue(tx.db, row.id, token, now + delay, { failures, error: outcome.error }), {
          name: 'requeue a job',
          escalate: false,
        });
      } catch (err) {
        if (manager.isUnavailable(err) || manager.isTransient(err)) throw err; // the lease brings it back
        // A run that cannot be re-queued (a stored backoff that makes no sense) fails for what it is,
        // instead of being re-run until its worker counts as lost.
        this.host.logger.error({ err, id: row.id, job: row.name }, `worker ${this.id}: job ${row.name} (${row.id}) could not be re-queued; it fails`);
        const error = { name: 'RequeueError', message: `the run failed and could not be re-queued: ${storedError(err).message}` };
        return this.settle(row, token, { state: 'failed', error, cause: err, attempt: outcome.attempt }, { final: true });
      }
      if (requeued) this.host.emitSafely('retried', { id: row.id, name: row.name, attempt: outcome.attempt, error: outcome.cause });
      return;
    }
    const failed = await manager.run(
      (tx) => {
        this.forgetLocalRunAtCommit(tx, row.id);
        return store.fail(tx.db, row.id, token, outcome.error, now, now + this.host.ttl, failures);
      },
      { name: 'record a failed job', escalate: false },
    );
    if (failed) this.host.reportFailure(row, outcome);
  }

  /** From the commit that records a job's outcome on, getResult here reads it instead of answering "pending" from memory. */
  private forgetLocalRunAtCommit(tx: Transaction, id: string): void {
    tx.afterCommit((ok) => {
      if (ok) this.host.localRuns.delete(id);
    });
  }

  /** Reports that a job's claim is no longer this worker's (found by the heartbeat or by the fencing). */
  private lostLease(row: JobRow): void {
    this.host.logger.warn(
      { id: row.id, job: row.name, worker: this.id },
      `worker ${this.id}: job ${row.name} (${row.id}) lost its lease (taken over or removed); its writes roll back`,
    );
    this.host.emitSafely('lost-lease', { id: row.id, name: row.name, worker: this.id });
  }

  /** Renews the lease every third of it, on its own connection; a lost lease aborts the job. */
  private async heartbeat(row: JobRow, token: string, local: LocalRun, stop: AbortSignal): Promise<void> {
    const { manager, store, logger } = this.host;
    const every = Math.max(50, Math.floor(row.leaseMs / 3));
    while (!stop.aborted) {
      try {
        await manager.clock.sleep(every, stop);
      } catch {
        return; // the run ended
      }
      try {
        if ((await store.renew(manager.knex, row.id, token, manager.clock.now() + row.leaseMs)) === 0) {
          if (stop.aborted || local.controller.signal.aborted) return;
          // The renewal waited for the job's own COMMIT and found the result: nothing was lost. Should
          // that COMMIT fail instead, the retried attempt owns the claim again (or its fencing reports the loss).
          if (local.completing) continue;
          this.lostLease(row);
          local.controller.abort(new LeaseLostError(row.id));
          return;
        }
      } catch (err) {
        logger.warn({ err, id: row.id }, `worker ${this.id}: could not renew the lease of job ${row.id}; it tries again`);
      }
    }
  }

  /** Writes progress at once on its own connection (pollers see it while the job's transaction is open). */
  private async progress(row: JobRow, token: string, local: LocalRun, progress: JobProgress): Promise<void> {
    const { manager, store, logger } = this.host;
    local.progress = progress;
    // SQLite has one writer: a second connection would wait for this job's own transaction.
    // getResult in this process still sees the progress, through localRuns.
    if (manager.dialect.singleWriter && manager.current?.began) return;
    try {
      await store.progress(manager.knex, row.id, token, progress);
    } catch (err) {
      logger.warn({ err, id: row.id }, `worker ${this.id}: could not write the progress of job ${row.id}`);
    }
  }
}
