/**
 * Chaos: 2,000 jobs that each write a row, three worker processes, one of them
 * killed with SIGKILL every ~1.5 s and replaced. Every job completes and every
 * row exists exactly once. Then the same with short jobs, which the workers run
 * in groups (several jobs in one transaction): a worker killed with a group in
 * flight loses nothing and doubles nothing.
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
    const suite = multiProcessSuite(database, { lease: LEASE, jobs: ['work', 'quick'], maxRuns: 10 });
    let alive: WorkerProcess[] = [];
    /** Schedules JOBS jobs `name`, kills a worker every ~1.5 s until all are settled; returns what happened. */
    const drainWhileKilling = async (name: string, groupWindow?: number) => {
      const spawn = () => alive.push(suite.spawn({ work: 40, concurrency: 4, groupWindow }));
      await suite.knex(suite.effects).delete();
      await suite.knex(`${suite.prefix}jobs`).delete();
      for (let i = 0; i < 3; i++) spawn();
      for (let batch = 0; batch < JOBS / 100; batch++) {
        await suite.tm.run(async () => {
          for (let i = 0; i < 100; i++) suite.scheduler.schedule(name, batch * 100 + i);
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
      for (const worker of alive.splice(0)) worker.child.kill('SIGKILL');

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
      return { elapsed, kills, reruns, recovered, rows: rows.length };
    };

    it('every job completes, every row exists exactly once, with workers killed all along', async () => {
      const { elapsed, kills, reruns, recovered, rows } = await drainWhileKilling('work');
      console.log(
        `# ${database.name}: ${JOBS} jobs done in ${elapsed} ms with ${kills} SIGKILLs; ${reruns} jobs committed on a later run; ` +
          `${recovered} jobs recovered from dead workers (logged); ${rows} rows, one per job`,
      );
    });

    it('short jobs run in groups: workers killed with groups in flight lose nothing and double nothing', async () => {
      const { elapsed, kills, reruns, rows } = await drainWhileKilling('quick', 500); // long: groups form however loaded the machine
      // Each result names the process and the transaction its job committed in.
      const results = (await suite.knex(`${suite.prefix}jobs`).where({ state: 'done' }).select('result')) as { result: string }[];
      const transactions = new Set(results.map((r) => (([{ pid, tx }]) => `${pid}:${tx}`)(JSON.parse(r.result) as [{ pid: number; tx: number }])));
      assert.ok(transactions.size < JOBS / 2, `jobs were grouped: ${JOBS} jobs committed in ${transactions.size} transactions`);
      console.log(
        `# ${database.name}: ${JOBS} short jobs done in ${elapsed} ms with ${kills} SIGKILLs, committed in ${transactions.size} transactions; ` +
          `${reruns} jobs committed on a later run; ${rows} rows, one per job`,
      );
    });
  },
  ['mysql', 'postgres'],
);
