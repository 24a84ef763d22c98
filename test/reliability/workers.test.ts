/**
 * Workers in separate processes (the real CLI): three of them share 1,000 jobs
 * scheduled by concurrent request transactions; every job runs exactly once,
 * the work spreads over the processes, and SIGTERM stops them gracefully.
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { eachDialect } from '../support/databases.js';
import { until } from '../support/helpers.js';
import { fixtureEnv, multiProcessSuite, runCli } from '../support/workers.js';

eachDialect(
  'three worker processes sharing 1,000 jobs',
  (database) => {
    const suite = multiProcessSuite(database, { lease: 10_000, jobs: ['effect'] });

    it('each job runs exactly once, the work spreads over the processes, SIGTERM stops them', async () => {
      const env = fixtureEnv(database, { prefix: suite.prefix, effects: suite.effects, lease: 10_000 });
      // npx aftercommit migrate, twice at once: idempotent and serialised.
      const migrations = [runCli(env, ['migrate', '--jobs', 'test/fixtures/worker-jobs.ts']), runCli(env, ['migrate', '--jobs', 'test/fixtures/worker-jobs.ts'])];
      for (const migration of await Promise.all(migrations)) assert.match(migration, /the scheduler tables are up to date/);
      const workers = [1, 2, 3].map(() => suite.spawn({ concurrency: 4 }));
      // All three are polling (and handle SIGTERM) before the first job exists, so none joins late.
      const started = () => workers.every((w) => w.lines.some((l) => String(l.msg).startsWith('aftercommit: worker')));
      await until(started, 60_000, 'three worker processes started');

      // 100 request transactions of 10 jobs each, 10 at a time.
      const ids: string[] = [];
      for (let batch = 0; batch < 10; batch++) {
        const scheduled = await Promise.all(
          Array.from({ length: 10 }, (_, r) =>
            suite.tm.run(async () => Array.from({ length: 10 }, (_, j) => suite.scheduler.schedule('effect', batch * 100 + r * 10 + j))),
          ),
        );
        ids.push(...scheduled.flat());
      }
      assert.equal(new Set(ids).size, 1000);

      await until(async () => (await suite.scheduler.stats()).done === 1000, 120_000, '1,000 jobs done');
      const rows = (await suite.knex(suite.effects)) as { job_id: string; n: number; pid: number }[];
      assert.equal(rows.length, 1000, 'one effect per job: none lost, none doubled');
      assert.equal(new Set(rows.map((r) => r.job_id)).size, 1000);
      assert.deepEqual(new Set(rows.map((r) => r.job_id)), new Set(ids));
      const perWorker = new Map<number, number>();
      for (const row of rows) perWorker.set(row.pid, (perWorker.get(row.pid) ?? 0) + 1);
      console.log(`# ${database.name}: jobs per worker process ${JSON.stringify(Object.fromEntries(perWorker))}`);
      if (database.name !== 'sqlite') {
        // SQLite's single writer lets one process win the lock again and again (its busy handler
        // sleeps), so how the work spreads there is only reported, not asserted.
        assert.deepEqual([...perWorker.keys()].sort(), workers.map((w) => w.pid).sort(), 'every process ran jobs');
        for (const count of perWorker.values()) assert.ok(count >= 25, `a share of the work, got ${count}`);
      }

      if (database.name !== 'sqlite') {
        // On SQLite a claim that waited out the busy timeout behind another process is retried, as it should be.
        const claimRetries = workers.flatMap((w) => w.lines).filter((l) => String(l.msg).startsWith('retrying claim jobs'));
        assert.deepEqual(claimRetries, [], 'claims never deadlocked (they run at READ COMMITTED)');
      }
      for (const w of workers) w.child.kill('SIGTERM');
      assert.deepEqual(await Promise.all(workers.map((w) => w.exited)), [0, 0, 0], 'graceful exit');
    });
  },
  ['mysql', 'postgres', 'sqlite'],
);
