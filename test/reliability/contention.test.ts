/**
 * Jobs under contention: 200 persistent jobs that each do a read-modify-write of
 * one counter row (SELECT … FOR UPDATE, 1 ms, UPDATE value + 1), run by three
 * worker processes (the real CLI) with 8 jobs at once each. Every job is done,
 * none failed, each wrote its effect row once, each saw a counter value no other
 * job saw, and the counter is exact.
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import type { PersistentSchedulerStats } from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { until } from '../support/helpers.js';
import { multiProcessSuite } from '../support/workers.js';

const TRANSACTIONS = 20;
const JOBS_EACH = 10;
const JOBS = TRANSACTIONS * JOBS_EACH;
const DEADLINE = 60_000;

/** What the fixture's `bump` job returns. */
interface Bumped {
  n: number;
  pid: number;
  /** The counter value it wrote. */
  value: number;
  /** Other `bump` jobs of its process in flight (waiting for the row) when it got the lock. */
  others: number;
}

const countBy = <T>(items: T[], key: (item: T) => string | number) => {
  const counts: Record<string, number> = {};
  for (const item of items) counts[key(item)] = (counts[key(item)] ?? 0) + 1;
  return counts;
};

eachDialect(
  'jobs under contention',
  (database) => {
    const suite = multiProcessSuite(database, { lease: 10_000, jobs: ['bump'], counter: true });

    it(`${JOBS} jobs bumping one counter row FOR UPDATE, three worker processes × 8: all done, none failed, the counter exact`, async () => {
      const workers = [1, 2, 3].map(() => suite.spawn({ concurrency: 8 }));
      const pids = workers.map((w) => w.pid);
      const started = () => workers.every((w) => w.lines.some((l) => String(l.msg).startsWith('aftercommit: worker')));
      await until(started, 60_000, 'three worker processes started');

      // 20 request transactions of 10 jobs each, all at once.
      const scheduled = await Promise.all(
        Array.from({ length: TRANSACTIONS }, (_, t) =>
          suite.tm.run(async () => Array.from({ length: JOBS_EACH }, (_, j) => suite.scheduler.schedule('bump', t * JOBS_EACH + j))),
        ),
      );
      const ids = scheduled.flat();
      const argumentOf = new Map(ids.map((id, n) => [id, n]));
      assert.equal(argumentOf.size, JOBS);
      const scheduledAt = Date.now();

      const lines = () => workers.flatMap((w) => w.lines);
      const jobRetries = () => lines().filter((l) => String(l.msg).startsWith('retrying job bump'));
      let stats: PersistentSchedulerStats | undefined;
      try {
        // Until every job has finished, well or not: a failure shows at once, not after the deadline.
        await until(async () => {
          stats = await suite.scheduler.stats();
          return stats.done + stats.failed === JOBS;
        }, DEADLINE, `${JOBS} jobs to finish`);
      } catch (err) {
        const exited = workers.filter((w) => w.child.exitCode !== null).map((w) => `${w.pid} (exit ${w.child.exitCode})`);
        assert.fail(
          `${(err as Error).message} within ${DEADLINE} ms: last stats ${JSON.stringify(stats)}, ` +
            `${jobRetries().length} job retries logged, worker processes exited: ${exited.join(', ') || 'none'}, ` +
            `last lines: ${JSON.stringify(lines().slice(-5))}`,
        );
      }
      const finishedIn = Date.now() - scheduledAt; // reported, not asserted
      const { oldestDueMs: _, ...counts } = await suite.scheduler.stats();
      assert.deepEqual(counts, { waiting: 0, pending: 0, running: 0, done: JOBS, failed: 0 }, 'every job done, none failed');

      // Each job's own result: done, by a worker process, with its argument.
      const results = await Promise.all(ids.map(async (id) => ({ id, result: await suite.scheduler.getResult(id) })));
      const bumped: Bumped[] = [];
      for (const { id, result } of results) {
        assert.equal(result.state, 'done', `job ${id}: ${JSON.stringify(result)}`);
        const value = (result as { value: Bumped }).value;
        assert.equal(value.n, argumentOf.get(id), `job ${id} ran with its own argument`);
        assert.ok(pids.includes(value.pid), `job ${id} ran in a worker process, not in ${value.pid}`);
        bumped.push(value);
      }
      const counter = await suite.knex(suite.counter!).where({ id: 1 }).first();
      assert.equal(Number(counter.value), JOBS, 'the counter is exact');
      // Serialised by the row lock: each job read a value no other job read, so together they wrote 1 … 200.
      const shared = Object.entries(countBy(bumped, (b) => b.value)).filter(([, jobs]) => jobs > 1);
      assert.deepEqual(shared, [], 'no two jobs wrote the same counter value ([value, jobs]): no read-modify-write overlapped another');
      assert.deepEqual(
        bumped.map((b) => b.value).sort((x, y) => x - y),
        Array.from({ length: JOBS }, (_, i) => i + 1),
      );

      // One effect row per job, written by the run whose result was committed.
      const effects = (await suite.knex(suite.effects)) as { job_id: string; n: number; pid: number; run: number }[];
      assert.equal(effects.length, JOBS, 'one effect per job: none lost, none doubled');
      assert.deepEqual(new Set(effects.map((e) => e.job_id)), new Set(ids));
      const resultOf = new Map(results.map(({ id, result }) => [id, (result as { value: Bumped }).value]));
      for (const e of effects) {
        assert.equal(e.n, argumentOf.get(e.job_id));
        assert.equal(e.pid, resultOf.get(e.job_id)!.pid, `the effect of ${e.job_id} comes from the run that committed its result`);
      }

      // A job that fails for good is logged at error ("job bump (…) failed: …"), as is one that could not be settled.
      const errors = lines().filter((l) => l.level === 'error' || /^job bump \(\w+\) failed/.test(String(l.msg)));
      assert.deepEqual(errors, [], 'no worker logged a failed job or any other error');

      const overlap = Math.max(...bumped.map((b) => b.others));
      if (database.name !== 'sqlite') {
        // Without this the jobs might have run one after another, and the row lock would have proved nothing.
        assert.ok(overlap >= 1, 'jobs of a process waited for the counter row at the same time');
      }
      const retries = jobRetries();
      const claims = (await suite.knex(`${suite.prefix}jobs`).whereIn('id', ids).select('runs')) as { runs: number | string }[];
      const requeued = claims.filter((c) => Number(c.runs) > 1).length;
      console.log(
        `# ${database.name}: ${JOBS} jobs finished ${finishedIn} ms after they were scheduled; jobs per worker process ${JSON.stringify(countBy(effects, (e) => e.pid))}; ` +
          `job attempts retried ${retries.length} ${JSON.stringify(countBy(retries, (l) => String(l.msg).match(/after (\S+?):/)?.[1] ?? String(l.msg)))}, ` +
          `committed by a later run ${effects.filter((e) => e.run > 1).length}, claimed more than once ${requeued}; ` +
          `claim retries ${lines().filter((l) => String(l.msg).startsWith('retrying claim jobs')).length}; ` +
          `at most ${overlap} other jobs of a process waiting for the row`,
      );

      for (const w of workers) w.child.kill('SIGTERM');
      assert.deepEqual(await Promise.all(workers.map((w) => w.exited)), [0, 0, 0], 'graceful exit');
    });
  },
  ['mysql', 'postgres', 'sqlite'],
);
