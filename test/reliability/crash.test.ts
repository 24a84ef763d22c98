/**
 * Crash safety with leases, with real worker processes:
 * - a worker killed (SIGKILL) in the middle of a job that has written rows: the
 *   job is run again by another worker once the lease runs out, its rows exist
 *   exactly once, and the recovery is logged with its timing;
 * - a worker paused (SIGSTOP) past its lease, then resumed (SIGCONT), after
 *   another worker took the job over: it cannot commit its result or its writes;
 * - the same with a group of short jobs in flight (several jobs in one
 *   transaction, some already run): the stalled group cannot commit any of them.
 */
import { beforeEach, it } from 'node:test';
import assert from 'node:assert/strict';
import { eachDialect } from '../support/databases.js';
import { finished, until } from '../support/helpers.js';
import { multiProcessSuite } from '../support/workers.js';

const LEASE = 1000;

eachDialect(
  'a worker that dies or stalls',
  (database) => {
    const suite = multiProcessSuite(database, { lease: LEASE, jobs: ['hold', 'quick'] });
    beforeEach(async () => {
      for (const w of suite.workers.splice(0)) {
        w.child.kill('SIGKILL');
        await w.exited;
      }
      await suite.knex(suite.effects).delete();
    });

    const spawn = (hold: number) => suite.spawn({ hold });
    const runningOn = async (id: string) => (await suite.knex(`${suite.prefix}jobs`).where({ id }).first())?.locked_by as string | undefined;
    const effectsOf = async (id: string) => (await suite.knex(suite.effects).where({ job_id: id })) as { pid: number; run: number }[];

    it('SIGKILL mid-job: another worker re-runs it after the lease, its rows land once, recovery is logged', async () => {
      const a = spawn(60_000);
      const id = await suite.tm.run(async () => suite.scheduler.schedule('hold', 1));
      await until(() => a.lines.some((l) => l.msg === 'hold started' && l.id === id), 30_000, 'worker A to start the job');
      assert.match((await runningOn(id))!, new RegExp(`:${a.pid}:`));
      const killedAt = Date.now();
      a.child.kill('SIGKILL');
      await a.exited;

      const b = spawn(0);
      const result = await finished(suite.scheduler, id, 60_000);
      const recoveredIn = Date.now() - killedAt;
      assert.deepEqual(result, { state: 'done', value: { n: 1, pid: b.pid } });
      assert.deepEqual(
        (await effectsOf(id)).map((r) => [r.pid, r.run]),
        [[b.pid, 2]],
        'only the second run’s rows: the killed run’s uncommitted rows died with its connection',
      );
      const recovery = b.lines.find((l) => typeof l.msg === 'string' && l.msg.includes(`recovered job hold (${id})`));
      assert.ok(recovery, 'worker B logged the recovery');
      assert.equal(typeof recovery.expiredMs, 'number');
      console.log(`# ${database.name}: recovered ${recoveredIn} ms after SIGKILL (lease ${LEASE} ms); B: ${recovery.msg}`);
    });

    it('SIGSTOP past the lease, SIGCONT after a take-over: the stalled run cannot commit', async () => {
      const a = spawn(3000);
      const id = await suite.tm.run(async () => suite.scheduler.schedule('hold', 2));
      await until(() => a.lines.some((l) => l.msg === 'hold started' && l.id === id), 30_000, 'worker A to start the job');
      a.child.kill('SIGSTOP');
      const b = spawn(0);
      try {
        assert.deepEqual(await finished(suite.scheduler, id, 60_000), { state: 'done', value: { n: 2, pid: b.pid } });
      } finally {
        a.child.kill('SIGCONT');
      }
      // A wakes up, finds its lease gone, and its run ends without committing.
      await until(() => a.lines.some((l) => l.msg === 'hold returns' && l.id === id), 30_000, 'worker A’s stalled run to end');
      await until(() => a.lines.some((l) => typeof l.msg === 'string' && l.msg.includes('lost its lease')), 10_000, 'A to notice');
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual(
        (await effectsOf(id)).map((r) => r.pid),
        [b.pid],
        'the stalled run’s rows were rolled back',
      );
      const row = await suite.knex(`${suite.prefix}jobs`).where({ id }).first();
      assert.equal(row.state, 'done');
      assert.deepEqual(JSON.parse(row.result), [{ n: 2, pid: b.pid }]);
    });

    it('SIGSTOP with a group in flight, past the lease: the stalled group commits none of its jobs', async () => {
      const a = suite.spawn({ hold: 3000, groupWindow: 2000 }); // a long window: the group forms however slow the machine
      // Three short runs teach A that `quick` is short; then six at once make a group, the third holding in its first run.
      const warm = await suite.tm.run(async () => [0, 1, 2].map((n) => suite.scheduler.schedule('quick', n)));
      for (const id of warm) await finished(suite.scheduler, id, 30_000);
      const ids = await suite.tm.run(async () => [0, 1, 2, 3, 4, 5].map((n) => suite.scheduler.schedule('quick', 10 + n, { say: true, hold: n === 2 })));
      await until(() => a.lines.some((l) => l.msg === 'quick holds' && l.id === ids[2]), 30_000, 'worker A to hold in the third job');
      const ranInA = a.lines.filter((l) => l.msg === 'quick runs' && ids.includes(l.id as string));
      assert.deepEqual(ranInA.map((l) => l.n), [10, 11, 12], 'A ran the first three jobs');
      assert.equal(new Set(ranInA.map((l) => l.tx)).size, 1, 'in one transaction: a group');
      a.child.kill('SIGSTOP');
      const b = spawn(0);
      try {
        for (const id of ids) assert.equal((await finished(suite.scheduler, id, 60_000)).state, 'done');
      } finally {
        a.child.kill('SIGCONT');
      }
      // A wakes up; its held job returns; its group finds the claims gone and commits nothing.
      await until(() => a.lines.some((l) => l.msg === 'quick returns' && l.id === ids[2]), 30_000, 'worker A’s stalled job to return');
      await new Promise((r) => setTimeout(r, 500));
      for (const id of ids) {
        assert.deepEqual((await effectsOf(id)).map((r) => r.pid), [b.pid], 'only B’s row: the stalled group’s rows were rolled back');
        const row = await suite.knex(`${suite.prefix}jobs`).where({ id }).first();
        assert.equal(JSON.parse(row.result)[0].pid, b.pid, 'the result B wrote');
      }
      assert.ok(!a.lines.some((l) => l.msg === 'quick runs' && l.run === 2), 'A ran none of them again: its claims were gone');
    });
  },
  ['mysql', 'postgres'],
);
