/**
 * Recurring jobs with three worker processes (the real CLI; MariaDB and
 * PostgreSQL): a once-a-second schedule over 10 s fires each instant once; after
 * all workers were stopped for 5 s, `missed: 'once'` fires one catch-up run and
 * `'skip'` none. (In one process: test/persistent/recurring.test.ts.)
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { eachDialect } from '../support/databases.js';
import { until } from '../support/helpers.js';
import type { WorkerProcess } from '../support/workers.js';
import { recurringSuite, type Fired } from '../support/recurring-suite.js';

eachDialect(
  'recurring jobs with three worker processes',
  (database) => {
    const t = recurringSuite(database);
    const startWorker = () => t.spawn({ concurrency: 4 }); // the scheduler's default, which the CLI gives without --concurrency

    const started = (w: WorkerProcess) => w.lines.some((l) => typeof l.msg === 'string' && l.msg.includes('started'));

    async function stopAll(workers: WorkerProcess[]): Promise<void> {
      for (const w of workers) w.child.kill('SIGTERM');
      assert.deepEqual(await Promise.all(workers.map((w) => w.exited)), workers.map(() => 0), 'each worker stopped cleanly');
    }

    /** The runs of `key` by instant: [instant, fired at, state, effect rows]. */
    async function fired(key: string): Promise<Fired[]> {
      const rows = (await t.knex(`${t.prefix}jobs`).where({ recurring_key: key }).orderBy('run_at')) as Record<string, unknown>[];
      const counts = (await t.knex(t.effects).where({ key_name: key }).select('job_id').count({ n: '*' }).groupBy('job_id')) as { job_id: string; n: unknown }[];
      const effects = new Map(counts.map((c) => [c.job_id, Number(c.n)]));
      return rows.map((r) => ({
        id: r.id as string,
        runAt: Number(r.run_at),
        createdAt: Number(r.created_at),
        state: r.state as string,
        effects: effects.get(r.id as string) ?? 0,
      }));
    }

    /** Each run wrote its row once; the instants run from the first to the last one second apart. */
    function assertContiguous(rows: Fired[], what: string): void {
      assert.ok(rows.every((r) => r.state === 'done' && r.effects === 1), `${what}: each run done, its row written once`);
      for (let i = 1; i < rows.length; i++) assert.equal(rows[i]!.runAt - rows[i - 1]!.runAt, 1000, `${what}: every instant once, none left out`);
    }

    it("a once-a-second schedule over 10 s fires each instant once; after all workers were stopped for 5 s, 'once' fires one catch-up run and 'skip' none", async () => {
      const keys = ['every-second', 'catch-up-once', 'catch-up-skip'];
      const first = [startWorker(), startWorker(), startWorker()];
      await until(() => first.every(started), 60_000, 'three workers to start');
      await until(async () => (await fired('every-second')).length > 0, 30_000, 'a first run');
      const windowStart = Date.now();
      await sleep(10_000);
      const windowEnd = Date.now();
      await stopAll(first);

      const beforeStop = new Map<string, Fired[]>();
      for (const key of keys) {
        const rows = await fired(key);
        assertContiguous(rows, `${key} while three processes ran`);
        assert.ok(rows[0]!.runAt <= windowStart + 1000 && rows.at(-1)!.runAt >= windowEnd - 2000, `${key}: the 10 s are covered`);
        beforeStop.set(key, rows);
      }
      const pids = new Set((await t.knex(t.effects).distinct('pid')).map((r: { pid: number }) => r.pid));
      console.log(`# ${database.name}: ${beforeStop.get('every-second')!.length} instants of every-second fired by the stop; runs by ${pids.size} processes`);

      await sleep(5000); // no worker anywhere
      const second = [startWorker(), startWorker(), startWorker()];
      const lastBefore = (key: string) => beforeStop.get(key)!.at(-1)!.runAt;
      const onTimeRuns = async (key: string) => (await fired(key)).filter((r) => r.runAt > lastBefore(key));
      await until(
        async () => {
          for (const key of keys) {
            const runs = await onTimeRuns(key);
            if (runs.length < 4 || runs.some((r) => r.state !== 'done')) return false;
          }
          return true;
        },
        60_000,
        'runs after the restart',
      );
      await stopAll(second);

      // Up to 60 s late is on time (the default): the instants of the downtime each fired, late.
      const every = await fired('every-second');
      assertContiguous(every, 'every-second');
      assert.ok(every.some((r) => r.createdAt - r.runAt > 2000), 'the instants of the downtime fired after it');

      // Up to 2 s late is on time: the instants older than that at the restart were missed.
      const once = await onTimeRuns('catch-up-once');
      assertContiguous(once, 'catch-up-once after the restart');
      assert.ok(once[0]!.runAt - lastBefore('catch-up-once') > 1000, "'once': the missed instants did not fire one by one");
      assert.ok(once[0]!.createdAt - once[0]!.runAt > 2000, "'once': the first run after the restart is the one catch-up run, for the latest missed instant");
      assert.ok(once.slice(1).every((r) => r.createdAt - r.runAt <= 2000 + 250), "'once': the others were on time");

      const skip = await onTimeRuns('catch-up-skip');
      assertContiguous(skip, 'catch-up-skip after the restart');
      assert.ok(skip[0]!.runAt - lastBefore('catch-up-skip') > 1000, "'skip': the missed instants did not fire");
      assert.ok(skip.every((r) => r.createdAt - r.runAt <= 2000 + 250), "'skip': no catch-up run, only instants on time");
      const failed = t.workers.flatMap((w) => w.lines).filter((l) => l.level === 'error' || /firing its due instants failed/.test(String(l.msg)));
      assert.deepEqual(failed, [], 'no tick failed in any process: no unique violation, no lost race');
      console.log(
        `# ${database.name}: after ${Math.round((once[0]!.createdAt - lastBefore('catch-up-once')) / 1000)} s without workers: ` +
          `'once' caught up with ${new Date(once[0]!.runAt).toISOString()}, 'skip' went on at ${new Date(skip[0]!.runAt).toISOString()}`,
      );
    });
  },
  ['mysql', 'postgres'],
);
