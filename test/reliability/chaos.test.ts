/**
 * Chaos: 2,000 jobs that each write a row, three worker processes, one of them
 * killed with SIGKILL every ~1.5 s and replaced. Every job completes and every
 * row exists exactly once.
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { eachDialect } from '../support/databases.js';
import { multiProcessSuite, type WorkerProcess } from '../support/workers.js';

const JOBS = 2000;
const LEASE = 1000;

eachDialect(
  'chaos',
  (database) => {
    const suite = multiProcessSuite(database, { lease: LEASE, jobs: ['work'], maxRuns: 10 });
    let alive: WorkerProcess[] = [];
    const spawn = () => alive.push(suite.spawn({ work: 40, concurrency: 4 }));

    it('every job completes, every row exists exactly once, with workers killed all along', async () => {
      for (let i = 0; i < 3; i++) spawn();
      for (let batch = 0; batch < JOBS / 100; batch++) {
        await suite.tm.run(async () => {
          for (let i = 0; i < 100; i++) suite.scheduler.schedule('work', batch * 100 + i);
        });
      }

      const started = Date.now();
      let kills = 0;
      let progress = { settled: 0, at: started };
      for (;;) {
        const stats = await suite.scheduler.stats();
        const settled = stats.done + stats.failed;
        if (settled === JOBS) break;
        // Stuck means no job settled for two minutes, however slow the machine is otherwise.
        if (settled > progress.settled) progress = { settled, at: Date.now() };
        else if (Date.now() - progress.at > 120_000) assert.fail(`stuck: no job settled for 120 s; ${JSON.stringify(stats)}`);
        await new Promise((r) => setTimeout(r, 1500));
        const victim = alive[Math.floor(Math.random() * alive.length)]!;
        alive = alive.filter((w) => w !== victim);
        victim.child.kill('SIGKILL');
        kills++;
        spawn();
      }
      const elapsed = Date.now() - started;

      const stats = await suite.scheduler.stats();
      assert.equal(stats.failed, 0, 'no job failed');
      assert.equal(stats.done, JOBS);
      const rows = (await suite.knex(suite.effects)) as { job_id: string; run: number }[];
      const perJob = new Map<string, number>();
      for (const row of rows) perJob.set(row.job_id, (perJob.get(row.job_id) ?? 0) + 1);
      assert.equal(perJob.size, JOBS, 'every job left its row');
      assert.deepEqual([...new Set(perJob.values())], [1], 'exactly one row per job');
      const reruns = rows.filter((r) => r.run > 1).length;
      const recovered = suite.workers.flatMap((w) => w.lines).filter((l) => String(l.msg).includes('recovered job')).length;
      console.log(
        `# ${database.name}: ${JOBS} jobs done in ${elapsed} ms with ${kills} SIGKILLs; ${reruns} jobs committed on a later run; ` +
          `${recovered} jobs recovered from dead workers (logged); ${rows.length} rows, one per job`,
      );
    });
  },
  ['mysql', 'postgres'],
);
