/**
 * Batches and callbacks with three worker processes (the real CLI):
 * - a serial batch of 20 steps runs strictly in order, whichever worker takes each step;
 * - a parallel batch of 200 steps fans in exactly once, its last two steps ending at the
 *   same moment on two workers: the batch's outcome and its callback are each recorded once;
 * - a worker killed (SIGKILL) in the middle of a serial batch: the batch resumes at the
 *   step that was running, and every step's writes land once;
 * - a callback is neither lost nor doubled when the worker completing its parent is
 *   killed just before or just after that COMMIT.
 */
import { beforeEach, it } from 'node:test';
import assert from 'node:assert/strict';
import { eachDialect } from '../support/databases.js';
import { finished, until } from '../support/helpers.js';
import { multiProcessSuite } from '../support/workers.js';

const LEASE = 1000;

interface Effect {
  job_id: string;
  n: number;
  pid: number;
  run: number;
  started_at: string | number | null;
  ended_at: string | number | null;
}

eachDialect(
  'batches and callbacks across worker processes',
  (database) => {
    const suite = multiProcessSuite(database, { lease: LEASE, jobs: ['step', 'step-until', 'callback', 'commit-kill'] });
    beforeEach(async () => {
      for (const w of suite.workers.splice(0)) {
        w.child.kill('SIGKILL');
        await w.exited;
      }
      await suite.knex(suite.effects).delete();
    });
    const effects = async (): Promise<Effect[]> => (await suite.knex(suite.effects).orderBy('id')) as Effect[];
    const s = () => suite.scheduler;

    it('a serial batch of 20 steps runs strictly in order across three workers', async () => {
      for (let i = 0; i < 3; i++) suite.spawn({ concurrency: 2 });
      const id = await suite.tm.run(async () => s().serial(...Array.from({ length: 20 }, (_, n) => s().job('step', n, 20))));
      const result = await finished(s(), id, 60_000);
      assert.deepEqual(result, { state: 'done', value: Array.from({ length: 20 }, (_, n) => ({ state: 'done', value: n })) });
      const rows = (await effects()).sort((a, b) => Number(a.started_at) - Number(b.started_at));
      assert.deepEqual(
        rows.map((r) => r.n),
        Array.from({ length: 20 }, (_, n) => n),
        'started in the order given',
      );
      for (let n = 1; n < rows.length; n++) {
        assert.ok(Number(rows[n]!.started_at) >= Number(rows[n - 1]!.ended_at), `step ${n} started after step ${n - 1} ended`);
      }
    });

    it('a parallel batch of 200 steps fans in once, with its last two steps ending at the same moment on two workers', async () => {
      // One slot each: the two slow steps, first in submission order, are taken by two different workers.
      for (let i = 0; i < 3; i++) suite.spawn({ concurrency: 1 });
      const finishAt = Date.now() + 6000;
      const id = await suite.tm.run(async () =>
        s()
          .with({ onSuccess: s().job('callback') })
          .parallel(
            // The two slow steps come first and end together, after the 198 others.
            s().job('step-until', 0, finishAt),
            s().job('step-until', 1, finishAt),
            ...Array.from({ length: 198 }, (_, n) => s().job('step', n + 2, 0)),
          ),
      );
      const result = await finished(s(), id, 60_000);
      assert.equal(result.state, 'done');
      assert.equal((result as { value: unknown[] }).value.length, 200);
      await until(async () => (await effects()).some((e) => e.job_id === id), 30_000, 'the callback');
      const rows = await effects();
      const steps = rows.filter((e) => e.n >= 0);
      assert.equal(steps.length, 200, 'every step wrote once');
      assert.equal(new Set(steps.map((e) => e.n)).size, 200);
      const slow = steps.filter((e) => e.n <= 1);
      assert.notEqual(slow[0]!.pid, slow[1]!.pid, 'the last two steps ran on two workers');
      await new Promise((r) => setTimeout(r, 500)); // a doubled callback would have had time to run
      assert.deepEqual(
        (await effects()).filter((e) => e.job_id === id).map((e) => e.n),
        [-1],
        'the callback ran once',
      );
      const batchRows = await suite.knex(`${suite.prefix}jobs`).where({ id });
      assert.equal(batchRows.length, 1);
      assert.equal(batchRows[0].state, 'done');
      assert.equal(Number(batchRows[0].steps_done), 200, 'each step counted once');
    });

    it('SIGKILL in the middle of a serial batch: it resumes at the running step, each step’s writes once', async () => {
      const a = suite.spawn({ concurrency: 1 });
      const id = await suite.tm.run(async () => s().serial(...Array.from({ length: 6 }, (_, n) => s().job('step', n, 50, n === 2 ? 60_000 : 50))));
      // Step 2 works for a minute in its first run: kill its worker while it runs, after steps 0 and 1 committed.
      await until(async () => (await suite.knex(`${suite.prefix}jobs`).where({ parent_id: id, step_index: 2, state: 'running' })).length === 1, 30_000, 'step 2 to run');
      a.child.kill('SIGKILL');
      await a.exited;
      suite.spawn({ concurrency: 1 });
      suite.spawn({ concurrency: 1 });
      assert.deepEqual(await finished(s(), id, 60_000), { state: 'done', value: Array.from({ length: 6 }, (_, n) => ({ state: 'done', value: n })) });
      const rows = (await effects()).sort((x, y) => Number(x.started_at) - Number(y.started_at));
      assert.deepEqual(
        rows.map((r) => r.n),
        [0, 1, 2, 3, 4, 5],
        'each step wrote once, in order',
      );
      assert.equal(rows.find((r) => r.n === 2)!.run, 2, 'step 2 committed in its second run');
      assert.ok(rows.filter((r) => r.n < 2).every((r) => r.pid === a.pid), 'steps 0 and 1 ran on the killed worker, and were not run again');
    });

    for (const when of ['before', 'after'] as const) {
      it(`a callback is neither lost nor doubled when the parent’s worker is killed just ${when} its COMMIT`, async () => {
        const a = suite.spawn({ concurrency: 1, hold: 60_000 });
        const id = await suite.tm.run(async () => s().with({ onSuccess: s().job('callback') }).schedule('commit-kill', 7, when));
        const said = when === 'before' ? 'about to commit' : 'committed';
        await until(() => a.lines.some((l) => l.msg === said && l.id === id), 30_000, `the parent to say '${said}'`);
        a.child.kill('SIGKILL');
        await a.exited;
        suite.spawn({ concurrency: 1 });
        assert.deepEqual(await finished(s(), id, 60_000), { state: 'done', value: 7 });
        await until(async () => (await effects()).some((e) => e.job_id === id && e.n === -1), 30_000, 'the callback');
        await new Promise((r) => setTimeout(r, 500));
        const rows = (await effects()).filter((e) => e.job_id === id);
        assert.deepEqual(
          rows.map((r) => r.n).sort(),
          [-1, 7],
          'the parent’s write and the callback, once each',
        );
      });
    }
  },
  ['mysql', 'postgres'],
);
