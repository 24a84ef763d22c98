/**
 * Pausing a queue (`admin.pauseQueue`, `admin.resumeQueue`) and the worker registry
 * (`admin.workers()`): a paused queue's jobs stay pending while the worker claims
 * other queues' jobs, in this process on every database and in a separate
 * worker process (the real CLI) on MariaDB and PostgreSQL; resumed, they run.
 * The registry lists each running worker with its queues and heartbeat, and
 * forgets it when it stops.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import type { JobHandle, PersistentTransactionalScheduler, Worker } from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { until } from '../support/helpers.js';
import { persistentSuite } from '../support/persistent-suite.js';
import { multiProcessSuite } from '../support/workers.js';

/** Schedules `n` jobs of `job` in queue `reports`, then one in `default`; returns their ids. */
async function scheduleAround(scheduler: PersistentTransactionalScheduler, job: string, n: number) {
  return scheduler.manager.run(async () => ({
    reports: Array.from({ length: n }, (_, i) => scheduler.with({ queue: 'reports' }).schedule(job, i)),
    marker: scheduler.schedule(job, 1000),
  }));
}

async function states(scheduler: PersistentTransactionalScheduler, ids: string[]): Promise<string[]> {
  return Promise.all(ids.map(async (id) => (await scheduler.getResult(id, { consume: false })).state));
}

eachDialect('pausing a queue, in this process', (database) => {
  const ran: number[] = [];
  const suite = persistentSuite(database, 'pause', (scheduler) => {
    scheduler.define('note', async (_job: JobHandle, n: number) => {
      ran.push(n);
      return n;
    });
  });
  let worker: Worker | undefined;
  after(() => worker?.stop());

  it('a paused queue’s jobs stay pending while other queues run; resumed, they run', async () => {
    const { scheduler } = suite;
    await scheduler.admin.pauseQueue('reports', { by: 'ops' });
    assert.deepEqual(
      (await scheduler.admin.queueStates()).map(({ name, paused, changedBy }) => ({ name, paused, changedBy })),
      [{ name: 'reports', paused: true, changedBy: 'ops' }],
    );
    const { reports, marker } = await scheduleAround(scheduler, 'note', 5);
    worker = scheduler.worker({ queues: ['reports', 'default'], concurrency: 4, minPollInterval: 10, maxPollInterval: 20 }).start();
    // The marker was scheduled after the paused jobs, in the same transaction: the claim that took it passed over them.
    await until(async () => (await scheduler.getResult(marker, { consume: false })).state === 'done', 10_000, 'the marker job');
    assert.deepEqual(await states(scheduler, reports), ['pending', 'pending', 'pending', 'pending', 'pending']);
    assert.deepEqual(ran, [1000]);

    const [listed] = await scheduler.admin.workers();
    assert.equal(listed?.id, worker.id);
    assert.deepEqual({ queues: listed?.queues, pid: listed?.pid, alive: listed?.alive }, { queues: ['reports', 'default'], pid: process.pid, alive: true });

    await scheduler.admin.resumeQueue('reports');
    await until(async () => (await states(scheduler, reports)).every((s) => s === 'done'), 10_000, 'the resumed jobs');
    assert.deepEqual(ran.slice(1).sort(), [0, 1, 2, 3, 4]);
    assert.equal((await scheduler.admin.queueStates())[0]?.paused, false);
    // Emptied, the queue a worker serves still reports zeros in the metrics.
    assert.deepEqual((await scheduler.metrics()).queues.reports, { waiting: 0, pending: 0, running: 0, oldestDueMs: null });

    await worker.stop();
    assert.deepEqual(await scheduler.admin.workers(), [], 'a stopped worker leaves the registry');
  });

  it('refuses a queue name that is not one, and a `by` that cannot be stored', async () => {
    await assert.rejects(suite.scheduler.admin.pauseQueue('no spaces'), { name: 'TypeError', message: 'admin.pauseQueue(queue): a queue name is 1-64 letters, digits, _ . : -, got "no spaces"' });
    await assert.rejects(suite.scheduler.admin.resumeQueue('x', { by: 'y'.repeat(192) }), { name: 'TypeError', message: 'admin.resumeQueue(queue, { by }): by must be a string of at most 191 characters' });
  });
});

eachDialect(
  'pausing a queue, with a worker process',
  (database) => {
    const suite = multiProcessSuite(database, { lease: 10_000, jobs: ['effect'] });
    let ns: () => Promise<number[]>;
    before(() => {
      ns = async () => ((await suite.knex(suite.effects).select('n').orderBy('n')) as { n: number }[]).map((r) => r.n);
    });

    it('the worker process claims none of a paused queue’s jobs until it is resumed, and is listed meanwhile', async () => {
      const { scheduler } = suite;
      await scheduler.admin.pauseQueue('reports');
      const worker = suite.spawn({ concurrency: 2, queues: ['reports', 'default'] });
      const { reports, marker } = await scheduleAround(scheduler, 'effect', 5);
      await until(async () => (await scheduler.getResult(marker, { consume: false })).state === 'done', 20_000, 'the marker job');
      assert.deepEqual(await ns(), [1000]);
      assert.deepEqual(await states(scheduler, reports), ['pending', 'pending', 'pending', 'pending', 'pending']);
      const listed = (await scheduler.admin.workers()).find((w) => w.pid === worker.pid);
      assert.deepEqual({ queues: listed?.queues, alive: listed?.alive }, { queues: ['reports', 'default'], alive: true });

      await scheduler.admin.resumeQueue('reports');
      await until(async () => (await ns()).length === 6, 20_000, 'the resumed jobs');
      assert.deepEqual(await ns(), [0, 1, 2, 3, 4, 1000]);
      // This process ran none of them: the queue reports zeros because a registered worker serves it.
      await until(async () => (await scheduler.metrics()).queues.reports?.running === 0, 10_000, 'the last run to be recorded');
      assert.deepEqual((await scheduler.metrics()).queues.reports, { waiting: 0, pending: 0, running: 0, oldestDueMs: null });
      assert.equal((await scheduler.metrics()).runs.reports, undefined);
    });
  },
  ['mysql', 'postgres'],
);
