/**
 * Groups of short jobs, on every database: a worker that knows a job to be
 * short runs several of its claims in one transaction, one savepoint each.
 * - one job of a group throws: the others' writes and results commit, its
 *   writes do not, and it fails as it would alone;
 * - a conflict in one job rolls the whole group back: its jobs run again one
 *   by one, and each job's writes land exactly once;
 * - a job that scheduled a job and then threw cannot be rolled back alone: the
 *   group rolls back, nothing it scheduled survives, and the job runs alone
 *   from then on;
 * - two workers, interleaved short jobs, some failing: every job once;
 * - bad options are refused.
 * Which transaction ran a job is told by the job itself: its result carries a
 * tag of the transaction object it ran in (jobs of a group share one).
 */
import { after, before, beforeEach, it } from 'node:test';
import assert from 'node:assert/strict';
import { ConflictError, type JobHandle, type PersistentTransactionalScheduler, type TransactionManager, type Worker } from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { finished, until } from '../support/helpers.js';
import { persistentSuite } from '../support/persistent-suite.js';

const WINDOW = 2000; // long, so that a slow machine still groups: the tests look at what a group does, not at its timing

eachDialect('groups of short jobs', (database) => {
  const effects = database.table('group_effects');
  const tags = new WeakMap<object, number>();
  let lastTag = 0;
  const conflicted = new Set<number>();
  let tm: TransactionManager;
  const tagOf = () => {
    const tx = tm.current!;
    if (!tags.has(tx)) tags.set(tx, ++lastTag);
    return tags.get(tx)!;
  };
  const suite = persistentSuite(database, 'groups', (scheduler) => {
    /** Writes its row; then throws when told to, or raises a conflict in its first transaction. */
    scheduler.define('write', async (job: JobHandle, n: number, how: 'ok' | 'throw' | 'conflict' = 'ok') => {
      await job.db(effects).insert({ job_id: job.id, n });
      if (how === 'throw') throw new RangeError(`job ${n} fails`);
      if (how === 'conflict' && !conflicted.has(n)) {
        conflicted.add(n);
        throw new ConflictError(`job ${n} meets a conflict`);
      }
      return { n, tx: tagOf() };
    });
    /** Schedules a `write` job, then throws when told to. */
    scheduler.define('spawn', async (job: JobHandle, n: number, fail: boolean) => {
      await job.db(effects).insert({ job_id: job.id, n });
      scheduler.schedule('write', 1000 + n);
      if (fail) throw new RangeError(`spawner ${n} fails`);
      return { n, tx: tagOf() };
    });
  });
  let scheduler: PersistentTransactionalScheduler;
  let worker: Worker;

  before(async () => {
    tm = suite.tm;
    scheduler = suite.scheduler;
    await suite.knex.schema.dropTableIfExists(effects);
    await suite.knex.schema.createTable(effects, (t) => {
      t.increments('id');
      t.string('job_id', 64);
      t.integer('n');
    });
  });
  before(async () => {
    // Three short runs of each job, one at a time: from then on this scheduler's workers group them.
    for (const name of ['write', 'spawn']) {
      const learner = scheduler.worker({ concurrency: 1, minPollInterval: 10, maxPollInterval: 50 });
      const ids = await tm.run(async () => [0, 1, 2].map((i) => scheduler.schedule(name, -1 - i, ...(name === 'spawn' ? [false] : []))));
      learner.start();
      try {
        for (const id of ids) await finished(scheduler, id, 20_000);
        // The spawners' children too: left pending, they would join the first test's group.
        await until(async () => (await suite.knex(`${suite.prefix}jobs`).whereIn('state', ['pending', 'running'])).length === 0, 20_000, 'no job left to run');
      } finally {
        await learner.stop();
      }
    }
  });
  beforeEach(async () => {
    conflicted.clear();
    await suite.knex(effects).delete();
    worker = scheduler.worker({ concurrency: 1, groupWindow: WINDOW, groupSize: 8, minPollInterval: 10, maxPollInterval: 50 });
  });
  after(() => suite.knex.schema.dropTableIfExists(effects));

  /** Schedules `jobs` in one transaction, runs them on a fresh worker, returns their outcomes. */
  const runTogether = async (jobs: [string, ...unknown[]][]) => {
    const ids = await tm.run(async () => jobs.map(([name, ...args]) => scheduler.with({ maxAttempts: 1 }).schedule(name, ...args)));
    worker.start();
    try {
      const results = await Promise.all(ids.map((id) => finished(scheduler, id, 30_000)));
      await until(async () => (await suite.knex(`${suite.prefix}jobs`).whereIn('state', ['pending', 'running'])).length === 0, 20_000, 'the children run too, not by the next test');
      return { ids, results };
    } finally {
      await worker.stop();
    }
  };
  const rowsOf = async (id: string) => (await suite.knex(effects).where({ job_id: id })).length;

  it('one job of a group throws: the others’ writes and results commit, its writes do not', async () => {
    const jobs = Array.from({ length: 8 }, (_, n) => ['write', n, n === 3 ? 'throw' : 'ok'] as [string, ...unknown[]]);
    const { ids, results } = await runTogether(jobs);
    for (const [n, result] of results.entries()) {
      if (n === 3) {
        assert.equal(result.state, 'failed');
        assert.equal(result.state === 'failed' && result.error.name, 'RangeError');
        assert.equal(await rowsOf(ids[n]!), 0, 'the failed job’s row was rolled back with its savepoint');
      } else {
        assert.equal(result.state, 'done', `job ${n}`);
        assert.equal(await rowsOf(ids[n]!), 1, `job ${n}'s row`);
      }
    }
    const transactions = new Set(results.filter((r) => r.state === 'done').map((r) => (r as { value: { tx: number } }).value.tx));
    assert.equal(transactions.size, 1, `the seven jobs that succeeded ran in one transaction, got ${transactions.size}`);
  });

  it('a conflict in one job rolls the group back: its jobs run again alone, each job’s writes land once', async () => {
    const jobs = Array.from({ length: 8 }, (_, n) => ['write', 100 + n, n === 4 ? 'conflict' : 'ok'] as [string, ...unknown[]]);
    const { ids, results } = await runTogether(jobs);
    assert.deepEqual(results.map((r) => r.state), Array(8).fill('done'));
    for (const id of ids) assert.equal(await rowsOf(id), 1, 'exactly one row per job');
    const tx = results.map((r) => (r as { value: { tx: number } }).value.tx);
    // Jobs 0–4 ran in the group that rolled back, then each alone; 5–7 in a group after it.
    assert.equal(new Set(tx.slice(0, 5)).size, 5, `the rolled-back group's jobs ran alone: ${tx.join(', ')}`);
    assert.equal(new Set(tx.slice(5)).size, 1, `the jobs after it were grouped again: ${tx.join(', ')}`);
  });

  it('a job that scheduled a job and then threw rolls the group back; nothing it scheduled survives', async () => {
    const jobs = Array.from({ length: 6 }, (_, n) => ['spawn', 200 + n, n === 2] as [string, ...unknown[]]);
    const { ids, results } = await runTogether(jobs);
    assert.deepEqual(results.map((r) => r.state), ['done', 'done', 'failed', 'done', 'done', 'done']);
    for (const [n, id] of ids.entries()) assert.equal(await rowsOf(id), n === 2 ? 0 : 1);
    const children = (await suite.knex(`${suite.prefix}jobs`).where({ name: 'write' }).select('args')) as { args: string }[];
    const scheduledBy = children.map((c) => JSON.parse(c.args)[0] as number).filter((n) => n >= 1200).sort();
    assert.deepEqual(scheduledBy, [1200, 1201, 1203, 1204, 1205], 'one child per spawner that succeeded, none of the failed one');
  });

  it('two workers, 120 interleaved short jobs, every tenth failing: each job once, and groups formed', async () => {
    const second = scheduler.worker({ concurrency: 3, groupWindow: WINDOW, groupSize: 8, minPollInterval: 10, maxPollInterval: 50 }).start();
    const jobs = Array.from({ length: 120 }, (_, n) => ['write', 300 + n, n % 10 === 9 ? 'throw' : 'ok'] as [string, ...unknown[]]);
    try {
      const { ids, results } = await runTogether(jobs);
      for (const [n, result] of results.entries()) {
        assert.equal(result.state, n % 10 === 9 ? 'failed' : 'done', `job ${n}`);
        assert.equal(await rowsOf(ids[n]!), n % 10 === 9 ? 0 : 1, `job ${n}'s rows`);
      }
      const done = results.filter((r) => r.state === 'done').map((r) => (r as { value: { tx: number } }).value.tx);
      assert.ok(new Set(done).size < done.length, `${done.length} jobs in ${new Set(done).size} transactions`);
    } finally {
      await second.stop();
    }
  });

  it('refuses bad group options', () => {
    assert.throws(() => scheduler.worker({ groupWindow: -1 }), /groupWindow \(ms\)/);
    assert.throws(() => scheduler.worker({ groupSize: 0 }), /groupSize/);
    assert.throws(() => scheduler.worker({ groupWindow: 1.5 }), /groupWindow \(ms\)/);
  });
});
