/**
 * One job a worker claimed under a lease token: runs it in a transaction of its
 * own while a heartbeat renews the lease, then records how it ended. Every write
 * that finishes or renews the job is fenced on the token, so a worker that lost
 * the claim (a stall, a take-over, a removal) changes nothing; in particular the
 * result commits, with the job's writes, only while the claim is still ours.
 */
import type { JobProgress, JobRunRecord, Transaction } from '../../interfaces.js';
import {
  CommitOutcomeUnknownError,
  JobCancelledError,
  JobTimeoutError,
  LeaseLostError,
  RequeueError,
  UnknownJobError,
  WorkerLostError,
  WorkerStoppingError,
} from '../../errors.js';
import { retryDelay, type DelayPolicy } from '../../transactions/backoff.js';
import { OVER } from '../../support/deadline.js';
import { INT_MAX } from '../../support/validate.js';
import { storedError } from '../stored-error.js';
import { lineageOf } from '../lineage.js';
import type { JobOutcome, JobRun } from '../base.js';
import type { LocalRun } from './local-runs.js';
import { decideRun, failAfterRequeueError, type EndedRun, type RunDecision, type RunEnd } from './outcome-rule.js';
import type { JobRow } from './rows.js';
import { withRuns } from './run-log.js';
import type { WorkerHost } from './worker-host.js';

type Failure = Extract<JobOutcome, { state: 'failed' }>;


export class ClaimedJob {
  /** The job's result is written in its transaction, which is committing: the row is no longer ours to renew. */
  private completing = false;
  /** The attempt of the job's transaction whose own COMMIT failed (its outcome may be unknown). */
  private commitFailedIn: number | undefined;
  private readonly local: LocalRun;
  private claimedAt = 0;
  /** Whether the job ran here (a job taken over may fail for good before it runs). */
  private ran = false;
  /** The run that went before, when its worker died or stalled: logged with this one's end. */
  private expiredRun: JobRunRecord | undefined;

  constructor(
    private readonly host: WorkerHost,
    readonly worker: string,
    readonly row: JobRow,
    private readonly token: string,
    /** Ms a job whose signal was aborted has before it is ended from outside. */
    private readonly grace: number,
  ) {
    this.local = host.localRuns.begin(row.id, row.owner);
  }

  /** How long its run took, when it ran here alone and succeeded (what tells a short job, job-group.ts). */
  succeededInMs: number | undefined;

  /** Told to end (removed, handed back) before it ran to its end. */
  get ended(): boolean {
    return this.local.controller.signal.aborted;
  }

  /** Runs the job and records how it ended; never rejects for the job's own failure. */
  async run(claimedAt: number): Promise<void> {
    this.claimedAt = claimedAt;
    try {
      if (this.row.state === 'running' && !(await this.recover(claimedAt))) return;
      this.ran = true;
      await this.runOnce();
    } finally {
      this.host.localRuns.end(this.row.id, this.local);
    }
  }

  /** Asks the job to end because its worker stops; it then goes back to the queue unchanged. */
  handBack(): void {
    this.local.controller.abort(new WorkerStoppingError(this.worker));
  }

  /** A job whose lease ran out (its worker died or stalled): true when it may run again here. */
  private async recover(claimedAt: number): Promise<boolean> {
    const { row } = this;
    const expiredMs = claimedAt - (row.lockedUntil ?? claimedAt);
    const worker = row.lockedBy ?? 'unknown';
    this.expiredRun = { run: row.runs, worker, claimedAt: row.startedAt ?? claimedAt, endedAt: claimedAt, outcome: 'lease expired' };
    this.host.logger.warn(
      { id: row.id, job: row.name, previousWorker: row.lockedBy, expiredMs, run: row.runs + 1 },
      `worker ${this.worker}: recovered job ${row.name} (${row.id}) from ${row.lockedBy}, whose lease ran out ${expiredMs} ms ago`,
    );
    const lost: EndedRun = { ...this.limits(), end: 'worker-lost', ownCommitLost: false, leaseLost: false, runs: row.runs };
    const decision = decideRun(lost);
    if (decision.action === 'recover') return true;
    const error = new WorkerLostError(row.name, row.runs - row.failures);
    await this.carryOut(decision, lost, { state: 'failed', error: storedError(error), cause: error, transactionAttempt: 0 });
    return false;
  }

  private async runOnce(): Promise<void> {
    const { signal } = this.local.controller;
    if (signal.aborted) {
      // Removed or handed back while it waited for its turn in a group: settled without running.
      const cause: unknown = signal.reason;
      return this.settle({ state: 'failed', error: storedError(cause), cause, transactionAttempt: 0 });
    }
    const started = this.host.manager.clock.now();
    const stopBeating = new AbortController();
    void this.heartbeat(stopBeating.signal);
    let outcome: JobOutcome;
    try {
      outcome = await this.host.runJob(this.jobRun(stopBeating.signal, (tx, result) => this.commitResult(tx, result)));
    } catch (cause) {
      outcome = { state: 'failed', error: storedError(cause), cause, transactionAttempt: 0 }; // e.g. an unknown job name here
    } finally {
      stopBeating.abort(OVER);
    }
    if (outcome.state === 'failed') await this.settle(outcome);
    else this.succeededInMs = this.host.manager.clock.now() - started;
  }

  /**
   * Runs the job in `tx`, the open transaction of its group (job-group.ts), which writes the result.
   * Its timeout and grace hold as in a run of its own: past the grace, `groupEnd` ends the group's transaction.
   */
  async runInGroup(tx: Transaction, claimedAt: number, groupEnd: AbortController): Promise<JobOutcome & { durationMs: number }> {
    this.claimedAt = claimedAt;
    this.ran = true;
    const ended = new AbortController();
    try {
      const run = this.jobRun(ended.signal);
      run.end?.addEventListener('abort', () => groupEnd.abort(run.end?.reason), { once: true });
      return await this.host.runJobInGroup(run, tx);
    } catch (cause) {
      return { state: 'failed', error: storedError(cause), cause, transactionAttempt: tx.attempt, durationMs: 0 }; // e.g. an unknown job name here
    } finally {
      ended.abort(OVER);
    }
  }

  /** The group that ran this job committed: its result with it (`ok`), or, failed, what its run did not write. */
  async groupCommitted(outcome: JobOutcome & { durationMs: number }): Promise<void> {
    try {
      const { id, name, queue, failures, runs } = this.row;
      if (outcome.state === 'done') this.host.jobSucceeded({ id, name, queue, attempt: failures + 1, run: runs + 1 }, outcome.transactionAttempt, outcome.durationMs);
      else await this.settle(outcome);
    } finally {
      this.forget();
    }
  }

  /** Forgets a job of a group that is no longer this claim's (taken over, removed, or done by a COMMIT whose answer was lost). */
  forget(): void {
    this.host.localRuns.end(this.row.id, this.local);
  }

  /** The run handed to the scheduler; `runEnded` stops its timeout and grace once it is over. */
  private jobRun(runEnded: AbortSignal, commitResult?: JobRun['commitResult']): JobRun {
    const { manager } = this.host;
    const { row, local } = this;
    if (row.timeoutMs !== null && !runEnded.aborted) {
      const timeout = row.timeoutMs;
      manager.clock.sleep(timeout, runEnded).then(
        () => local.controller.abort(new JobTimeoutError(row.name, timeout)),
        () => undefined, // the run ended first
      );
    }
    return {
      id: row.id,
      name: row.name,
      queue: row.queue,
      dueAt: row.runAt,
      fn: this.host.job(row.name),
      args: row.args,
      meta: this.host.decodeMeta(row.meta),
      signal: local.controller.signal,
      attempt: row.failures + 1,
      maxAttempts: row.maxAttempts,
      run: row.runs + 1,
      progress: (progress) => this.progress(progress),
      end: this.endAfterGrace(local.controller.signal, runEnded),
      traceparent: lineageOf(row.meta)?.traceparent, // the scheduling attempt's, for the run's span
      ...(commitResult === undefined ? {} : { commitResult }),
    };
  }

  /** Writes the result in the job's transaction: it commits, with the job's writes, only while the claim is ours. */
  private async commitResult(tx: Transaction, result: string): Promise<void> {
    const { manager, store, outcomes } = this.host;
    const at = manager.clock.now();
    const ending = { result, now: at, expiresAt: outcomes.expiryOf(this.row, 'done', at), runLog: this.runLog('done', at) };
    if ((await store.complete(tx.db, this.row.id, this.token, ending)) === 0) throw new LeaseLostError(this.row.id);
    await outcomes.recorded(tx.db, this.row, { state: 'done', result });
    this.completing = true;
    tx.afterCommit((ok) => {
      if (!ok) this.commitFailedIn = tx.attempt;
    });
    tx.afterAbort(() => {
      this.completing = false; // the attempt is retried: the claim is ours again, and renewed
    });
    this.host.localRuns.endAtCommit(tx, this.row.id, this.local);
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
        if (runEnded.aborted) return; // it ran to its end already (in a group whose transaction is still open)
        const timer = setTimeout(() => end.abort(jobSignal.reason), this.grace);
        runEnded.addEventListener('abort', () => clearTimeout(timer), { once: true });
      },
      { once: true },
    );
    return end.signal;
  }

  /** How a failed run ended, in the terms of the outcome rule. */
  private runEnd(cause: unknown, abortReason: unknown): RunEnd {
    const { manager } = this.host;
    if (abortReason instanceof JobCancelledError) return 'removed';
    if (abortReason instanceof WorkerStoppingError) return 'stopping';
    // A database that went away is like a conflict: the run says nothing about the job. So is a job
    // this worker does not know (another version of the app may define it).
    if (manager.isTransient(cause) || manager.isUnavailable(cause) || cause instanceof UnknownJobError) return 'transient';
    return 'application';
  }

  /** Records a failed run as the outcome rule decides. */
  private async settle(outcome: Failure): Promise<void> {
    const { row } = this;
    const abortReason = this.local.controller.signal.reason;
    const foundByFencing = outcome.cause instanceof LeaseLostError && !(abortReason instanceof LeaseLostError);
    if (foundByFencing) this.lostLease();
    // Only the job's own COMMIT, not one of other work inside the job, can leave it done after all.
    const ownCommitLost = outcome.cause instanceof CommitOutcomeUnknownError && this.commitFailedIn === outcome.transactionAttempt;
    const ended: EndedRun = {
      ...this.limits(),
      end: this.runEnd(outcome.cause, abortReason),
      ownCommitLost,
      leaseLost: outcome.cause instanceof LeaseLostError || abortReason instanceof LeaseLostError,
      runs: row.runs + 1,
    };
    const decision = decideRun(ended);
    if (ownCommitLost && decision.action === 'requeue') {
      this.host.logger.warn(
        { err: outcome.cause, id: row.id, job: row.name },
        `worker ${this.worker}: job ${row.name} (${row.id}) lost its connection during COMMIT; it goes back to the queue and runs again only if that COMMIT did not land`,
      );
    }
    await this.carryOut(decision, ended, outcome);
  }

  private limits() {
    return { failures: this.row.failures, maxAttempts: this.row.maxAttempts, maxRuns: this.host.maxRuns };
  }

  /** Writes what the outcome rule decided for run `ended`. */
  private async carryOut(decision: RunDecision, ended: EndedRun, outcome: Failure): Promise<void> {
    const { manager, store, outcomes } = this.host;
    const { row, token } = this;
    const now = manager.clock.now();
    const bookkeeping = (name: string) => ({ name, escalate: false }); // job rows only: no part in escalation
    switch (decision.action) {
      case 'drop':
      case 'recover':
        return;
      case 'hand-back':
        await manager.run((tx) => store.requeue(tx.db, row.id, token, now, { runs: row.runs, runLog: this.runLog('handed back', now) }), bookkeeping('hand back a job'));
        return;
      case 'requeue': {
        let requeued: number;
        try {
          const delay = Math.round(retryDelay(decision.backoffStep, JSON.parse(row.backoff) as DelayPolicy, manager.random));
          if (!(delay >= 0 && delay <= INT_MAX)) throw new RangeError(`its stored backoff ${row.backoff} gives a delay of ${delay} ms`);
          const changes = { failures: decision.failures, error: outcome.error, runLog: this.runLog('retried', now, outcome.error.name) };
          requeued = await manager.run((tx) => store.requeue(tx.db, row.id, token, now + delay, changes), bookkeeping('requeue a job'));
        } catch (err) {
          if (manager.isUnavailable(err) || manager.isTransient(err)) throw err; // the lease brings it back
          // A run that cannot be re-queued (a stored backoff that makes no sense) fails for what it is,
          // instead of being re-run until its worker counts as lost.
          this.host.logger.error({ err, id: row.id, job: row.name }, `worker ${this.worker}: job ${row.name} (${row.id}) could not be re-queued; it fails`);
          const error = new RequeueError(storedError(err).message, { cause: err });
          return this.carryOut(failAfterRequeueError(ended), ended, { ...outcome, error: storedError(error), cause: err });
        }
        if (requeued) {
          const counts = { attempt: row.failures + 1, run: ended.runs, transactionAttempt: outcome.transactionAttempt };
          this.host.emitSafely('retried', { id: row.id, name: row.name, queue: row.queue, ...counts, error: outcome.cause });
        }
        return;
      }
      case 'fail': {
        const failed = await manager.run(async (tx) => {
          this.host.localRuns.endAtCommit(tx, row.id, this.local);
          const ending = { error: outcome.error, failures: decision.failures, now, expiresAt: outcomes.expiryOf(row, 'failed', now), runLog: this.runLog('failed', now, outcome.error.name) };
          const changed = await store.fail(tx.db, row.id, token, ending);
          if (changed) await outcomes.recorded(tx.db, row, { state: 'failed', error: outcome.error });
          return changed;
        }, bookkeeping('record a failed job'));
        if (failed) this.host.reportFailure(row, { ...outcome, attempt: row.failures + 1, run: ended.runs });
      }
    }
  }

  /** The row's run log with this run's end (and the expired run before it) added. */
  runLog(outcome: JobRunRecord['outcome'], now: number, error?: string): string {
    const thisRun: JobRunRecord = { run: this.row.runs + 1, worker: this.worker, claimedAt: this.claimedAt, endedAt: now, outcome, ...(error === undefined ? {} : { error }) };
    const runs = [this.expiredRun, this.ran ? thisRun : undefined].filter((run): run is JobRunRecord => run !== undefined);
    return withRuns(this.row.runLog, ...runs);
  }

  /** Reports that the claim is no longer this worker's (found by the heartbeat or by the fencing). */
  private lostLease(): void {
    const { row } = this;
    this.host.logger.warn(
      { id: row.id, job: row.name, worker: this.worker },
      `worker ${this.worker}: job ${row.name} (${row.id}) lost its lease (taken over or removed); its writes roll back`,
    );
    this.host.emitSafely('lost-lease', { id: row.id, name: row.name, queue: row.queue, worker: this.worker });
  }

  /** Renews the lease every third of it, on its own connection; a lost lease aborts the job. */
  private async heartbeat(stop: AbortSignal): Promise<void> {
    const { manager, store, logger } = this.host;
    const { row, token, local } = this;
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
          if (this.completing) continue;
          this.lostLease();
          local.controller.abort(new LeaseLostError(row.id));
          return;
        }
      } catch (err) {
        logger.warn({ err, id: row.id }, `worker ${this.worker}: could not renew the lease of job ${row.id}; it tries again`);
      }
    }
  }

  /** Writes progress at once on its own connection (pollers see it while the job's transaction is open). */
  private async progress(progress: JobProgress): Promise<void> {
    const { manager, store, logger } = this.host;
    this.local.progress = progress;
    // SQLite has one writer: a second connection would wait for this job's own transaction.
    // getResult in this process still sees the progress, through the local run.
    if (manager.dialect.singleWriter && manager.current?.began) return;
    try {
      await store.progress(manager.knex, this.row.id, this.token, progress);
    } catch (err) {
      logger.warn({ err, id: this.row.id }, `worker ${this.worker}: could not write the progress of job ${this.row.id}`);
    }
  }
}
