/**
 * Each job's runs, as `admin.get(id).runLog` shows them, on every database: who
 * ran each, and how it ended (retried after the job's error, done); a run whose
 * worker died is logged by the worker that took the job over; jobs spread over
 * two workers each log exactly their own run. A log that does not read back
 * shows no runs, and a row keeps the newest 20.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { JobHandle, JobRunRecord, PersistentTransactionalScheduler, Worker } from '../../lib/index.js';
import { runsOf, withRuns } from '../../lib/scheduler/persistent/run-log.js';
import { eachDialect } from '../support/databases.js';
import { finished } from '../support/helpers.js';
import { persistentSuite } from '../support/persistent-suite.js';

eachDialect('the run log of a job', (database) => {
  const tries = new Map<number, number>();
  const suite = persistentSuite(database, 'runlog', (scheduler) => {
    scheduler.define('once-flaky', async (_job: JobHandle, n: number) => {
      tries.set(n, (tries.get(n) ?? 0) + 1);
      if (tries.get(n) === 1) throw new RangeError('its first run fails');
      return n;
    });
    scheduler.define('ok', async (_job: JobHandle, n: number) => n);
  });
  let scheduler: PersistentTransactionalScheduler;
  let workers: Worker[];

  before(() => {
    scheduler = suite.scheduler;
    workers = ['first', 'second'].map((id) => scheduler.worker({ id: `runlog-${id}`, concurrency: 2, minPollInterval: 10, maxPollInterval: 20 }).start());
  });
  after(() => Promise.all(workers.map((w) => w.stop())));

  const logOf = async (id: string) => (await scheduler.admin.get(id))!.runLog;

  it('logs a run re-queued after the job’s error, then the run that was done', async () => {
    const id = await suite.tm.run(async () => scheduler.with({ maxAttempts: 2, backoff: { initial: 1, max: 1 } }).schedule('once-flaky', 1));
    assert.equal((await finished(scheduler, id)).state, 'done');
    const log = await logOf(id);
    assert.deepEqual(log.map((r) => [r.run, r.outcome, r.error]), [[1, 'retried', 'RangeError'], [2, 'done', undefined]]);
    for (const run of log) {
      assert.match(run.worker, /^runlog-(first|second)$/);
      assert.ok(run.claimedAt <= run.endedAt);
    }
  });

  it('logs the run of a worker that died, as the worker that takes the job over finds it', async () => {
    const id = await suite.tm.run(async () => scheduler.with({ delay: 3_600_000 }).schedule('ok', 2));
    // As a worker that claimed it and died leaves it: running, its lease long past.
    const claimedAt = Date.now() - 120_000;
    await suite.knex(`${suite.prefix}jobs`).where({ id }).update({ state: 'running', lease: 'dead-lease', locked_by: 'dead-worker', locked_until: claimedAt + 30_000, started_at: claimedAt, runs: 1, run_at: claimedAt });
    assert.equal((await finished(scheduler, id, 15_000)).state, 'done');
    const log = await logOf(id);
    assert.deepEqual(log.map((r) => [r.run, r.worker, r.outcome]), [[1, 'dead-worker', 'lease expired'], [2, log[1]!.worker, 'done']]);
    assert.equal(log[0]!.claimedAt, claimedAt);
    assert.notEqual(log[1]!.worker, 'dead-worker');
  });

  it('jobs spread over two workers each log exactly their own run', async () => {
    const ids = await suite.tm.run(async () => Array.from({ length: 12 }, (_, n) => scheduler.schedule('ok', 100 + n)));
    for (const id of ids) await finished(scheduler, id);
    const logs = await Promise.all(ids.map(logOf));
    for (const log of logs) assert.deepEqual(log.map((r) => [r.run, r.outcome]), [[1, 'done']]);
    const byWorker = new Set(logs.map((log) => log[0]!.worker));
    assert.ok([...byWorker].every((w) => /^runlog-(first|second)$/.test(w)));
  });
});

describe('a run log as stored', () => {
  const run = (n: number): JobRunRecord => ({ run: n, worker: 'w', claimedAt: n, endedAt: n + 1, outcome: 'retried', error: 'RangeError' });

  it('keeps the newest 20 runs', () => {
    let log: string | null = null;
    for (let n = 1; n <= 25; n++) log = withRuns(log, run(n));
    assert.deepEqual(runsOf(log).map((r) => r.run), Array.from({ length: 20 }, (_, i) => i + 6));
  });

  it('shows nothing of a log that does not read back, and skips entries that are not runs', () => {
    assert.deepEqual(runsOf('not json'), []);
    assert.deepEqual(runsOf('{"run": 1}'), []);
    assert.deepEqual(runsOf(JSON.stringify([run(1), { run: 2, worker: '<img>', outcome: 'pwned' }, 'x'])), [run(1)]);
  });
});
