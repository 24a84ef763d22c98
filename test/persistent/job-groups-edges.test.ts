/**
 * Groups of short jobs at their edges, on every database:
 * - a group ended from outside (a deaf job past its timeout and grace) takes no
 *   more jobs: the jobs after it run alone, none is left unsettled;
 * - a job of a committed group whose bookkeeping fails (the pool times out once,
 *   injected at the store) does not strand the jobs after it;
 * - jobs waiting behind a job that turned long are handed back once it has run
 *   for the window, and another worker runs them meanwhile (server databases).
 */
import { before, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import type { JobHandle, PersistentTransactionalScheduler, TransactionManager } from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { finished, until } from '../support/helpers.js';
import { persistentSuite } from '../support/persistent-suite.js';

eachDialect('groups of short jobs at their edges', (database) => {
  let tm: TransactionManager;
  let scheduler: PersistentTransactionalScheduler;
  const suite = persistentSuite(database, 'groupedge', (s) => {
    /** Naps `ms`, deaf to its signal; then throws when told to. */
    s.define('nap', async (_job: JobHandle, ms: number, fail = false) => {
      await sleep(ms);
      if (fail) throw new RangeError('nap fails');
      return ms;
    });
    /** Runs until the test opens the gate, deaf to its signal: a job that turned long, for as long as the test needs. */
    s.define('gated', async () => {
      await gate;
      return 'through';
    });
  });
  let gate: Promise<void> = Promise.resolve();
  before(() => {
    tm = suite.tm;
    scheduler = suite.scheduler;
  });

  const warmUp = async () => {
    const w = scheduler.worker({ concurrency: 1, minPollInterval: 10, maxPollInterval: 50 }).start();
    try {
      const ids = await tm.run(async () => [0, 1, 2].map(() => [scheduler.schedule('nap', 0), scheduler.schedule('gated')]).flat());
      for (const id of ids) await finished(scheduler, id, 20_000);
    } finally {
      await w.stop();
    }
  };
  const stateAfter = async (id: string, ms: number) => {
    try {
      return (await finished(scheduler, id, ms)).state;
    } catch {
      return 'still pending/running';
    }
  };

  it('a group ended from outside (timeout + grace) takes no more jobs: the jobs after it run alone, each settled', async () => {
    await warmUp();
    const worker = scheduler.worker({ concurrency: 1, groupWindow: 5000, groupSize: 8, grace: 0, minPollInterval: 10, maxPollInterval: 50 });
    const [a, b, c] = await tm.run(async () => [
      scheduler.with({ timeout: 20, maxAttempts: 1, lease: 1000 }).schedule('nap', 150),
      scheduler.with({ maxAttempts: 1, lease: 1000 }).schedule('nap', 400),
      scheduler.with({ maxAttempts: 1, lease: 1000 }).schedule('nap', 0),
    ]);
    worker.start();
    try {
      const states = [await stateAfter(a!, 8000), await stateAfter(b!, 8000), await stateAfter(c!, 6000)];
      const row = await suite.knex(`${suite.prefix}jobs`).where({ id: c }).first('state', 'run_log');
      assert.deepEqual(states, ['failed', 'done', 'done'], `C's row: ${JSON.stringify(row)}`);
    } finally {
      await worker.stop({ timeout: 1000 });
    }
  });

  it('a job of a committed group whose bookkeeping fails once does not strand the jobs after it', async () => {
    await warmUp();
    // The pool timing out once, for the re-queue of the failed job: injected at the store, the database stays real.
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    const store = (scheduler as any).store;
    const requeue = store.requeue;
    let armed = true;
    store.requeue = async function (...args: unknown[]) {
      if (armed) {
        armed = false;
        const err = new Error('pool timeout (simulated)');
        err.name = 'KnexTimeoutError';
        throw err;
      }
      return requeue.apply(this, args);
    };
    const worker = scheduler.worker({ concurrency: 1, groupWindow: 300, groupSize: 8, minPollInterval: 10, maxPollInterval: 50 });
    try {
      const [x, y, z] = await tm.run(async () => [
        scheduler.with({ maxAttempts: 2, lease: 1000, backoff: { initial: 10 } }).schedule('nap', 0, true),
        scheduler.with({ maxAttempts: 1, lease: 1000 }).schedule('nap', 400),
        scheduler.with({ maxAttempts: 1, lease: 1000 }).schedule('nap', 0),
      ]);
      worker.start();
      const states = [await stateAfter(y!, 4000), await stateAfter(z!, 6000), await stateAfter(x!, 6000)];
      const rows = await suite.knex(`${suite.prefix}jobs`).whereIn('id', [x!, y!, z!]).select('id', 'state');
      assert.equal(armed, false, 'the simulated failure happened');
      assert.deepEqual(states, ['done', 'done', 'failed'], `rows: ${JSON.stringify(rows)} (x=${x}, y=${y}, z=${z})`);
    } finally {
      store.requeue = requeue;
      await worker.stop({ timeout: 1000 });
    }
  });

  if (database.name !== 'sqlite') {
    it('jobs waiting behind a job that turned long are handed back after the window; another worker runs them meanwhile', async () => {
      await warmUp();
      const grouping = scheduler.worker({ concurrency: 1, groupWindow: 300, groupSize: 8, minPollInterval: 10, maxPollInterval: 50 });
      let openGate = () => {};
      gate = new Promise((resolve) => (openGate = resolve));
      const [long, ...waiting] = await tm.run(async () => [
        scheduler.with({ maxAttempts: 1 }).schedule('gated'),
        ...[0, 1, 2].map(() => scheduler.with({ maxAttempts: 1 }).schedule('nap', 0)),
      ]);
      grouping.start();
      const other = scheduler.worker({ concurrency: 1, groupWindow: 0, minPollInterval: 10, maxPollInterval: 50 });
      try {
        const claimed = async () => (await suite.knex(`${suite.prefix}jobs`).whereIn('id', [long!, ...waiting]).where({ state: 'running' }).count({ n: '*' }))[0]!.n;
        await until(async () => Number(await claimed()) === 4, 10_000, 'the group to claim all four');
        other.start();
        for (const id of waiting) assert.equal((await finished(scheduler, id!, 10_000)).state, 'done');
        assert.equal((await scheduler.getResult(long!)).state, 'pending', 'the long job is still running when the others are done');
        const rows = (await suite.knex(`${suite.prefix}jobs`).whereIn('id', waiting).select('runs', 'run_log')) as { runs: number; run_log: string }[];
        assert.deepEqual(rows.map((r) => r.runs), [1, 1, 1], 'each ran once: the hand-back did not count a run');
        openGate();
        assert.equal((await finished(scheduler, long!, 10_000)).state, 'done');
      } finally {
        openGate();
        await Promise.all([grouping.stop({ timeout: 5000 }), other.stop({ timeout: 5000 })]);
      }
    });
  }
});
