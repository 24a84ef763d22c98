/**
 * The rule a worker applies when a run of a job ends without its result: drop
 * it, hand it back, re-queue it after a delay, or fail it for good. Kept pure
 * (facts in, decision out) so that it is read, and tested, in one place.
 *
 * In one statement: a run that is no longer ours (lease lost, schedule removed)
 * is dropped; a run a stopping worker aborted goes back as it was; an error of
 * the job's own counts against `maxAttempts`; a run that ended for any other
 * reason (a conflict that outlasted the transaction's retries, a database that
 * went away, the job's own COMMIT lost, a job this worker does not define, a
 * worker that died) counts against `maxRuns`. Each limit counts only its own
 * kind of run, so a job runs at most `maxAttempts + maxRuns - 1` times.
 */

/** How a run ended, as far as the rule is concerned. */
export type RunEnd =
  /** The job threw, or its timeout passed: a failure that counts against `maxAttempts`. */
  | 'application'
  /** A conflict outlasted the transaction's retries, the database went away, or this worker does not define the job. */
  | 'transient'
  /** The schedule was removed while it ran. */
  | 'removed'
  /** The worker is stopping and aborted the run. */
  | 'stopping'
  /** The worker that ran it died or stalled; found when another worker claims its expired lease. */
  | 'worker-lost';

/** What the rule knows about a run that ended without its result. */
export interface EndedRun {
  end: RunEnd;
  /** The job's own COMMIT lost its connection, so whether it landed is unknown. */
  ownCommitLost: boolean;
  /** The claim is no longer this worker's: another worker took the lease over, or the row is gone. */
  leaseLost: boolean;
  /** Failures counted against `maxAttempts` before this run. */
  failures: number;
  maxAttempts: number;
  /** Runs of the job so far, this one included; those that did not fail with the job's own error count against `maxRuns`. */
  runs: number;
  maxRuns: number;
}

/** What becomes of the job. */
export type RunDecision =
  /** Not this worker's any more: nothing is written. */
  | { action: 'drop' }
  /** Back to the queue at once, as it was: the run does not count. */
  | { action: 'hand-back' }
  /** The job of a lost worker runs now, in the claim just taken. */
  | { action: 'recover' }
  /** Back to the queue after the backoff delay of step `backoffStep` (1, 2, …). */
  | { action: 'requeue'; failures: number; backoffStep: number }
  /** Failed for good, with `failures` stored. */
  | { action: 'fail'; failures: number };

export function decideRun(run: EndedRun): RunDecision {
  if (run.leaseLost || run.end === 'removed') return { action: 'drop' };
  if (run.end === 'stopping') return { action: 'hand-back' };
  // Runs that said nothing about the job, this one included.
  const otherRuns = run.runs - run.failures;
  if (run.end === 'worker-lost') {
    return otherRuns < run.maxRuns ? { action: 'recover' } : { action: 'fail', failures: run.failures };
  }
  // Had the job's own COMMIT landed, the row is done and the re-queue, fenced on the claim, changes nothing.
  if (run.end === 'transient' || run.ownCommitLost) {
    return otherRuns < run.maxRuns ? { action: 'requeue', failures: run.failures, backoffStep: otherRuns } : { action: 'fail', failures: run.failures };
  }
  const failures = run.failures + 1;
  return failures < run.maxAttempts ? { action: 'requeue', failures, backoffStep: failures } : { action: 'fail', failures };
}

/**
 * A run the rule re-queued but whose re-queue failed for good (a stored backoff
 * that gives no valid delay): the job fails, and that counts as its own failure.
 */
export function failAfterRequeueError(run: EndedRun): RunDecision {
  return { action: 'fail', failures: run.failures + 1 };
}
