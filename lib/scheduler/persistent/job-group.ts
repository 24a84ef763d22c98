/**
 * Groups of short jobs. A worker that claimed several jobs known to be short
 * runs them one after the other in ONE transaction with one COMMIT, instead of
 * one transaction each:
 * - each job runs in a savepoint, sent only before its first statement, so a
 *   job that throws rolls back to it alone and a job that sends nothing costs
 *   no round trip;
 * - the results are written by one UPDATE just before the COMMIT, fenced on the
 *   claim's lease token like a job's own result: a group with a job that is no
 *   longer its claim's (taken over after a stall, removed) cannot commit;
 * - a transaction stops taking jobs once it has run for the window: jobs later
 *   in the group go into the next one, so no job waits long for its COMMIT;
 * - whatever a savepoint cannot undo alone (a conflict, a lost lease, a failed
 *   COMMIT, a job that threw after it scheduled jobs or registered hooks, a
 *   checkpoint) rolls the whole transaction back: the jobs it ran then run
 *   again one by one, each in a transaction of its own, if still ours.
 * A job is short once one of its last three runs in this process took at most
 * half the window; a job that broke a group, or that has not run here three
 * times, runs alone.
 */
import { OVER } from '../../support/deadline.js';
import type { TransactionAttempt } from '../../transactions/transaction.js';
import type { JobOutcome } from '../base.js';
import type { ClaimedJob } from './claimed-job.js';
import type { WorkerHost } from './worker-host.js';

type Ran = { job: ClaimedJob; outcome?: JobOutcome & { durationMs: number } };

export class JobGroup {
  /** Jobs not yet run (in a transaction that committed, or alone). */
  private readonly left: ClaimedJob[];
  /** Jobs whose lease the group renews: not yet committed, nor handed to a run of their own. */
  private readonly leased = new Set<ClaimedJob>();

  constructor(
    private readonly host: WorkerHost,
    private readonly worker: string,
    jobs: readonly ClaimedJob[],
    private readonly token: string,
    private readonly window: number,
    /** Makes the worker claim at once (jobs were handed back). */
    private readonly wake: () => void,
  ) {
    this.left = [...jobs];
    for (const job of jobs) this.leased.add(job);
  }

  /** Runs every job of the group, in as few transactions as the window allows; never rejects for a job's failure. */
  async run(claimedAt: number): Promise<void> {
    const stopBeating = new AbortController();
    void this.heartbeat(stopBeating.signal);
    try {
      while (this.left.length > 0) await this.nextTransaction(claimedAt);
    } finally {
      stopBeating.abort(OVER);
      // Only after a failure of the group's own bookkeeping: their leases run out, and a worker (this one too) takes them over.
      for (const job of this.left.splice(0)) job.forget();
    }
  }

  private async nextTransaction(claimedAt: number): Promise<void> {
    const ran: Ran[] = [];
    const alone: ClaimedJob[] = [];
    const groupEnd = new AbortController();
    try {
      await this.host.manager.run((tx) => this.runSome(tx as TransactionAttempt, claimedAt, groupEnd, ran, alone), {
        name: `job group (worker ${this.worker})`,
        retries: 0, // a conflict re-runs its jobs one by one, with the retries of their own transactions
        signal: groupEnd.signal,
      });
    } catch (err) {
      this.host.logger.debug({ err, worker: this.worker, jobs: ran.length }, `worker ${this.worker}: a group of ${ran.length} job(s) rolled back; they run again one by one`);
      alone.unshift(...ran.map((r) => r.job));
      await this.oneByOne(alone, claimedAt);
      return;
    }
    for (const { job, outcome } of ran) {
      this.leased.delete(job);
      if (outcome!.state === 'done') this.host.jobDurations.record(job.row.name, outcome!.durationMs);
      await this.settling(job, () => job.groupCommitted(outcome!));
    }
    await this.oneByOne(alone, claimedAt);
  }

  /** Records how a job of the group ended; a failure to (the database went away) is logged and stops nothing else of the group. */
  private async settling(job: ClaimedJob, settle: () => Promise<void>): Promise<void> {
    try {
      await settle();
    } catch (err) {
      const { name, id } = job.row;
      this.host.logger.error({ err, id }, `worker ${this.worker}: job ${name} (${id}) could not be settled; its lease runs out and it is taken over`);
      job.forget();
    }
  }

  /** Runs jobs of the group in `tx` until the window has passed; returns with their results written. */
  private async runSome(tx: TransactionAttempt, claimedAt: number, groupEnd: AbortController, ran: Ran[], alone: ClaimedJob[]): Promise<void> {
    const { manager, store, outcomes } = this.host;
    tx.refuseCheckpoints('jobs run in a group share one transaction; a job that calls tx.commit() or tx.abort() runs alone from now on');
    const started = manager.clock.now();
    // Ended from outside (a job past its grace): the group's run has been given up, and its jobs run alone; take no more.
    const given = () => groupEnd.signal.aborted || !tx.isOpen;
    while (this.left.length > 0 && !given() && (ran.length === 0 || manager.clock.now() - started < this.window)) {
      const job = this.left.shift()!;
      if (job.ended) {
        alone.push(job); // removed or handed back before it started: settled without running
        continue;
      }
      const entry: Ran = { job };
      ran.push(entry);
      const hooks = tx.hookCount;
      const scheduled = this.host.scheduledIn(tx);
      const mark = tx.markSavepoint();
      const running = new AbortController();
      void this.releaseIfLong(running.signal);
      const outcome = (entry.outcome = await job.runInGroup(tx, claimedAt, groupEnd).finally(() => running.abort(OVER)));
      if (tx.checkpointRefused || tx.rollbackOnly) {
        this.host.jobDurations.refuse(job.row.name);
        throw new Error(`job ${job.row.name} (${job.row.id}) cannot share a transaction`);
      }
      if (outcome.state === 'failed') {
        if (manager.isTransient(outcome.cause) || manager.isUnavailable(outcome.cause) || tx.doomedBy !== undefined) throw outcome.cause;
        if (tx.hookCount !== hooks || this.host.scheduledIn(tx) !== scheduled) {
          this.host.jobDurations.refuse(job.row.name);
          throw new Error(`job ${job.row.name} (${job.row.id}) failed after it scheduled jobs or registered hooks: it cannot be rolled back alone`);
        }
        await tx.rollBackToMark(mark);
      }
    }
    const done = ran.filter((r) => r.outcome?.state === 'done');
    if (done.length === 0 || given()) return;
    const now = manager.clock.now();
    const endings = done.map(({ job, outcome }) => ({ id: job.row.id, result: (outcome as { value: string }).value, runLog: job.runLog('done', now) }));
    const changed = await store.completeAll(tx.db, this.token, endings, { now, expiresAt: outcomes.expiryOf(done[0]!.job.row, 'done', now) });
    if (changed !== done.length) throw new Error(`${done.length - changed} job(s) of the group are no longer this claim's`);
  }

  /**
   * Once a job has run for the window (it was short before, not now), hands the jobs still waiting behind it back
   * to the queue, so that a free slot here or another worker takes them instead of waiting for it to end.
   * Not with one writer (SQLite): nothing else could run them meanwhile.
   */
  private async releaseIfLong(jobEnded: AbortSignal): Promise<void> {
    const { manager, store, logger } = this.host;
    if (manager.dialect.singleWriter || this.left.length === 0) return;
    try {
      await manager.clock.sleep(this.window, jobEnded);
    } catch {
      return; // the job ended in time
    }
    const waiting = this.left.splice(0);
    if (waiting.length === 0) return;
    for (const job of waiting) this.leased.delete(job);
    try {
      await store.release(manager.knex, waiting.map((job) => job.row.id), this.token);
    } catch (err) {
      logger.warn({ err, jobs: waiting.length }, `worker ${this.worker}: could not hand back ${waiting.length} job(s) waiting in a group; they run once their lease runs out`);
    }
    for (const job of waiting) job.forget();
    this.wake();
  }

  /** Runs `jobs` one by one, each in a transaction of its own, if the claim is still ours. */
  private async oneByOne(jobs: readonly ClaimedJob[], claimedAt: number): Promise<void> {
    if (jobs.length === 0) return;
    for (const job of jobs) this.leased.delete(job); // each renews its own lease from now on
    let ours: Set<string>;
    try {
      ours = await this.host.store.stillClaimed(this.host.manager.knex, jobs.map((job) => job.row.id), this.token);
    } catch (err) {
      // Their leases run out and another run takes them over.
      this.host.logger.warn({ err }, `could not check the claims of ${jobs.length} job(s) whose group rolled back; they run again once their lease runs out`);
      for (const job of jobs) job.forget();
      return;
    }
    for (const job of jobs) {
      if (ours.has(job.row.id)) await this.settling(job, () => job.run(claimedAt));
      else job.forget(); // done by a COMMIT whose answer was lost, taken over, or removed
    }
  }

  /** Renews the leases of the jobs not yet committed, all in one statement, every third of the shortest lease. */
  private async heartbeat(stop: AbortSignal): Promise<void> {
    const { manager, store, logger } = this.host;
    const leaseMs = Math.min(...[...this.leased].map((job) => job.row.leaseMs));
    const every = Math.max(50, Math.floor(leaseMs / 3));
    while (this.leased.size > 0) {
      try {
        await manager.clock.sleep(every, stop);
      } catch {
        return; // the group ended
      }
      const ids = [...this.leased].map((job) => job.row.id);
      if (ids.length === 0) return;
      try {
        await store.renewAll(manager.knex, ids, this.token, manager.clock.now() + leaseMs);
      } catch (err) {
        logger.warn({ err, jobs: ids.length }, `could not renew the leases of ${ids.length} job(s) of a group; it tries again`);
      }
    }
  }
}
