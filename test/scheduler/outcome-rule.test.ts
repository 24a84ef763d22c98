/**
 * The worker's outcome rule as a decision table: every combination of how a
 * run ended, its failures against maxAttempts and its other runs against maxRuns,
 * with the COMMIT and the lease lost or not, and the decision it must get.
 * No database: the rule is a pure function.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { decideRun, failAfterRequeueError, type EndedRun, type RunDecision, type RunEnd } from '../../lib/scheduler/persistent/outcome-rule.js';

const ENDS: RunEnd[] = ['application', 'transient', 'removed', 'stopping', 'worker-lost'];
/** failures so far / maxAttempts */
const ATTEMPTS = ['0/1', '0/3', '1/3', '2/3'] as const;
/** runs so far that did not fail with the job's own error, this one included / maxRuns */
const RUNS = ['1/1', '1/5', '4/5', '5/5'] as const;

type Attempts = (typeof ATTEMPTS)[number];
type Runs = (typeof RUNS)[number];
type Any = '*';

/** A decision as the table states it: failures kept or one more, backoff step from the other runs or the failures. */
type Expected =
  | { action: 'drop' | 'hand-back' | 'recover' }
  | { action: 'requeue'; failures: 'kept' | 'one more'; backoffStep: 'other runs' | 'failures' }
  | { action: 'fail'; failures: 'kept' | 'one more' };

interface Row {
  leaseLost: boolean | Any;
  end: readonly RunEnd[] | Any;
  ownCommitLost: boolean | Any;
  attempts: readonly Attempts[] | Any;
  runs: readonly Runs[] | Any;
  then: Expected;
}

const runsLeft: Runs[] = ['1/5', '4/5'];
const runsUsedUp: Runs[] = ['1/1', '5/5'];
const retriedEnds: readonly RunEnd[] = ['application', 'transient', 'worker-lost'];

/** First matching row wins. */
const TABLE: Row[] = [
  { leaseLost: true, end: '*', ownCommitLost: '*', attempts: '*', runs: '*', then: { action: 'drop' } },
  { leaseLost: false, end: ['removed'], ownCommitLost: '*', attempts: '*', runs: '*', then: { action: 'drop' } },
  { leaseLost: false, end: ['stopping'], ownCommitLost: '*', attempts: '*', runs: '*', then: { action: 'hand-back' } },
  { leaseLost: false, end: ['worker-lost'], ownCommitLost: '*', attempts: '*', runs: runsLeft, then: { action: 'recover' } },
  {
    leaseLost: false, end: ['worker-lost'], ownCommitLost: '*', attempts: '*', runs: runsUsedUp,
    then: { action: 'fail', failures: 'kept' }, // maxRuns used up
  },
  {
    leaseLost: false, end: ['transient'], ownCommitLost: '*', attempts: '*', runs: runsLeft,
    then: { action: 'requeue', failures: 'kept', backoffStep: 'other runs' },
  },
  {
    leaseLost: false, end: ['transient'], ownCommitLost: '*', attempts: '*', runs: runsUsedUp,
    then: { action: 'fail', failures: 'kept' }, // maxRuns used up
  },
  // An application error thrown by a COMMIT whose outcome is unknown says nothing about the job.
  {
    leaseLost: false, end: ['application'], ownCommitLost: true, attempts: '*', runs: runsLeft,
    then: { action: 'requeue', failures: 'kept', backoffStep: 'other runs' },
  },
  {
    leaseLost: false, end: ['application'], ownCommitLost: true, attempts: '*', runs: runsUsedUp,
    then: { action: 'fail', failures: 'kept' }, // maxRuns used up
  },
  // The job's own errors ignore maxRuns: only maxAttempts bounds them.
  {
    leaseLost: false, end: ['application'], ownCommitLost: false, attempts: ['0/3', '1/3'], runs: '*',
    then: { action: 'requeue', failures: 'one more', backoffStep: 'failures' },
  },
  {
    leaseLost: false, end: ['application'], ownCommitLost: false, attempts: ['0/1', '2/3'], runs: '*',
    then: { action: 'fail', failures: 'one more' }, // maxAttempts used up
  },
];

const matches = <T>(pattern: readonly T[] | T | Any, value: T): boolean =>
  pattern === '*' || (Array.isArray(pattern) ? pattern.includes(value) : pattern === value);

function ratio(text: string): [number, number] {
  const [a, b] = text.split('/').map(Number);
  return [a!, b!];
}

function concrete(expected: Expected, run: EndedRun): RunDecision {
  if (expected.action === 'fail') return { action: 'fail', failures: expected.failures === 'kept' ? run.failures : run.failures + 1 };
  if (expected.action === 'requeue') {
    const failures = expected.failures === 'kept' ? run.failures : run.failures + 1;
    return { action: 'requeue', failures, backoffStep: expected.backoffStep === 'other runs' ? run.runs - run.failures : failures };
  }
  return { action: expected.action };
}

describe('the outcome rule (decision table)', () => {
  const used = new Set<Row>();
  let combinations = 0;
  for (const end of ENDS) {
    for (const ownCommitLost of [false, true]) {
      for (const leaseLost of [false, true]) {
        for (const attempts of ATTEMPTS) {
          for (const runs of RUNS) {
            const [failures, maxAttempts] = ratio(attempts);
            const [otherRuns, maxRuns] = ratio(runs);
            const run: EndedRun = { end, ownCommitLost, leaseLost, failures, maxAttempts, runs: otherRuns + failures, maxRuns };
            const row = TABLE.find(
              (r) =>
                matches(r.leaseLost, leaseLost) &&
                matches(r.end, end) &&
                matches(r.ownCommitLost, ownCommitLost) &&
                matches(r.attempts, attempts) &&
                matches(r.runs, runs),
            );
            combinations++;
            it(`${end}, commit ${ownCommitLost ? 'lost' : 'kept'}, lease ${leaseLost ? 'lost' : 'kept'}, failures ${attempts}, runs ${runs}`, () => {
              assert.ok(row, 'the table covers every combination');
              assert.deepEqual(decideRun(run), concrete(row.then, run));
            });
            if (row) used.add(row);
          }
        }
      }
    }
  }

  it('covers 320 combinations and every row of the table decides at least one of them', () => {
    assert.equal(combinations, ENDS.length * 2 * 2 * ATTEMPTS.length * RUNS.length);
    assert.equal(combinations, 320);
    assert.deepEqual(
      TABLE.filter((row) => !used.has(row)),
      [],
    );
  });

  it('never re-queues past the limits: the next attempt is at most maxAttempts, the next run at most maxAttempts + maxRuns - 1', () => {
    for (const end of retriedEnds) {
      for (let maxAttempts = 1; maxAttempts <= 4; maxAttempts++) {
        for (let maxRuns = 1; maxRuns <= 4; maxRuns++) {
          for (let failures = 0; failures < maxAttempts; failures++) {
            // Every earlier run that said nothing about the job was re-queued, so fewer than maxRuns of them.
            const [fewest, most] = end === 'application' ? [0, maxRuns - 1] : [1, maxRuns];
            for (let otherRuns = fewest; otherRuns <= most; otherRuns++) {
              const runs = failures + otherRuns + (end === 'application' ? 1 : 0);
              const decision = decideRun({ end, ownCommitLost: false, leaseLost: false, failures, maxAttempts, runs, maxRuns });
              if (decision.action === 'requeue') {
                assert.ok(decision.failures + 1 <= maxAttempts, `attempt ${decision.failures + 1} of ${maxAttempts}`);
                assert.ok(decision.failures >= failures, 'failures never go down');
                assert.ok(runs + 1 <= maxAttempts + maxRuns - 1, `run ${runs + 1} with maxAttempts ${maxAttempts}, maxRuns ${maxRuns}`);
              }
            }
          }
        }
      }
    }
  });

  it('a re-queue that failed for good fails the job with one more failure, whatever ended the run', () => {
    for (const end of ['application', 'transient'] as const) {
      assert.deepEqual(failAfterRequeueError({ end, ownCommitLost: false, leaseLost: false, failures: 1, maxAttempts: 3, runs: 4, maxRuns: 5 }), {
        action: 'fail',
        failures: 2,
      });
    }
  });

  it('a job with maxAttempts 2 whose first run meets conflicts, then fails twice: re-queued once, then failed with 2 failures', () => {
    // The conflicts are retried inside the run's transaction; the rule sees only how each run ended.
    const first = decideRun({ end: 'application', ownCommitLost: false, leaseLost: false, failures: 0, maxAttempts: 2, runs: 1, maxRuns: 5 });
    assert.deepEqual(first, { action: 'requeue', failures: 1, backoffStep: 1 });
    const second = decideRun({ end: 'application', ownCommitLost: false, leaseLost: false, failures: 1, maxAttempts: 2, runs: 2, maxRuns: 5 });
    assert.deepEqual(second, { action: 'fail', failures: 2 });
  });
});
