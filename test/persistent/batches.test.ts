/**
 * Batches and callbacks of the persistent scheduler, as the original package's
 * doctests walk them (a serial batch's results, a parallel batch, a success and
 * a failure callback), plus what the database makes exact: a step made due in
 * the transaction that records the previous one, a batch that ends once, steps
 * skipped after a failure, a nested batch, progress while it runs, removal.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PersistentTransactionalScheduler, type JobHandle, type ParentOutcome, type Worker } from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { deferred, finished, until } from '../support/helpers.js';
import { persistentSuite } from '../support/persistent-suite.js';

eachDialect('batches and callbacks (persistent scheduler)', (database) => {
  let effects: string;
  const log: string[] = [];
  const gates = new Map<string, ReturnType<typeof deferred<void>>>();
  const suite = persistentSuite(database, 'batch', (scheduler) => {
    scheduler.define('add', async (job: JobHandle, a: number, b: number) => {
      await job.db(effects).insert({ job_id: job.id, text: `add ${a}+${b}` });
      return a + b;
    });
    scheduler.define('fails', async (job: JobHandle, why: string) => {
      await job.db(effects).insert({ job_id: job.id, text: `fails ${why}` });
      throw new RangeError(why);
    });
    scheduler.define('note', async (job: JobHandle, label: string, started: number) => {
      await job.db(effects).insert({ job_id: job.id, text: `note ${label} ${started}` });
      return label;
    });
    scheduler.define('big', async (_job: JobHandle, kilobytes: number) => 'x'.repeat(kilobytes * 1024));
    scheduler.define('gate', async (_job: JobHandle, key: string) => {
      await gates.get(key)!.promise;
      return key;
    });
    scheduler.define('record', async (job: JobHandle, label: string, parent: ParentOutcome) => {
      const value = parent.state !== 'done' ? undefined : typeof parent.value === 'string' && parent.value.length > 100 ? `${parent.value.length} characters` : parent.value;
      log.push(`${label}: ${parent.state === 'done' ? `done ${'value' in parent ? JSON.stringify(value) : '(no value)'}` : `failed ${parent.error.name}: ${parent.error.message}`}`);
      await job.db(effects).insert({ job_id: job.id, text: `record ${label} for ${parent.id}` });
      return label;
    });
  });
  let worker: Worker;

  before(async () => {
    effects = database.table('batch_effects');
    await suite.knex.schema.createTable(effects, (t) => {
      t.increments('id');
      t.string('job_id', 64);
      t.string('text', 200);
    });
    worker = suite.scheduler.worker({ concurrency: 4, minPollInterval: 10, maxPollInterval: 50 }).start();
  });
  after(() => worker.stop());

  const texts = async (): Promise<string[]> => (await suite.knex(effects).orderBy('id')).map((r: { text: string }) => r.text);
  const inTransaction = <T>(fn: (s: PersistentTransactionalScheduler) => T) => suite.tm.run(async () => fn(suite.scheduler));

  it('a serial batch runs its steps in order and its result is one outcome per step', async () => {
    const id = await inTransaction((s) => s.serial(s.job('note', 'first', 1), s.job('add', 40, 2), s.job('note', 'last', 3)));
    assert.deepEqual(await finished(suite.scheduler, id), {
      state: 'done',
      value: [
        { state: 'done', value: 'first' },
        { state: 'done', value: 42 },
        { state: 'done', value: 'last' },
      ],
    });
    const rows = (await texts()).filter((t) => /note (first|last)|add 40/.test(t));
    assert.deepEqual(rows, ['note first 1', 'add 40+2', 'note last 3']);
  });

  it('a failed step does not stop a serial batch, unless stopOnFailure: the rest are then skipped and never run', async () => {
    const s = suite.scheduler;
    const [goesOn, stops] = await inTransaction(() => [
      s.serial(s.job('fails', 'one'), s.job('add', 1, 1)),
      s.with({ stopOnFailure: true }).serial(s.job('fails', 'two'), s.job('add', 2, 2), s.batch('parallel', s.job('add', 3, 3))),
    ]);
    assert.deepEqual(await finished(s, goesOn), {
      state: 'done',
      value: [{ state: 'failed', error: { name: 'RangeError', message: 'one' } }, { state: 'done', value: 2 }],
    });
    assert.deepEqual(await finished(s, stops), {
      state: 'done',
      value: [{ state: 'failed', error: { name: 'RangeError', message: 'two' } }, { state: 'skipped' }, { state: 'skipped' }],
    });
    const all = await texts();
    assert.ok(!all.includes('add 2+2') && !all.includes('add 3+3'), 'skipped steps never ran');
    assert.equal((await suite.knex(`${suite.prefix}jobs`).where({ parent_id: stops })).length, 1, 'only the step that ran is kept');
  });

  it('a parallel batch runs its steps at once and ends with all their outcomes, in the order given', async () => {
    const s = suite.scheduler;
    const id = await inTransaction(() => s.parallel(...[1, 2, 3, 4, 5, 6].map((n) => s.job('add', n, n))));
    assert.deepEqual(await finished(s, id), { state: 'done', value: [2, 4, 6, 8, 10, 12].map((value) => ({ state: 'done', value })) });
  });

  it('a batch may contain batches: a nested batch is one step, its own outcomes its value', async () => {
    const s = suite.scheduler;
    const id = await inTransaction(() => s.serial(s.job('add', 1, 0), s.batch('parallel', s.job('add', 2, 0), s.batch('serial', s.job('add', 3, 0))), s.job('add', 4, 0)));
    assert.deepEqual(await finished(s, id), {
      state: 'done',
      value: [
        { state: 'done', value: 1 },
        { state: 'done', value: [{ state: 'done', value: 2 }, { state: 'done', value: [{ state: 'done', value: 3 }] }] },
        { state: 'done', value: 4 },
      ],
    });
  });

  describe('callbacks', () => {
    it('a success callback gets its own arguments, then the job’s outcome, and exists once', async () => {
      const s = suite.scheduler;
      const id = await inTransaction(() => s.with({ onSuccess: s.job('record', 'success') }).schedule('add', 40, 2));
      await finished(s, id);
      await until(() => log.some((line) => line.startsWith('success')), 10_000, 'the callback');
      assert.deepEqual(log.filter((line) => line.startsWith('success')), ['success: done 42']);
      await until(async () => (await texts()).includes(`record success for ${id}`));
    });

    it('a failure callback gets the stored error; a success callback of a failed job never runs', async () => {
      const s = suite.scheduler;
      const id = await inTransaction(() => s.with({ onSuccess: s.job('record', 'never'), onFailure: s.job('record', 'failure') }).schedule('fails', 'on purpose'));
      await finished(s, id);
      await until(() => log.some((line) => line.startsWith('failure')), 10_000, 'the callback');
      assert.deepEqual(log.filter((line) => line.startsWith('failure')), ['failure: failed RangeError: on purpose']);
      assert.ok(!log.some((line) => line.startsWith('never')));
    });

    it('a batch’s callbacks: success when every step is done, failure (BatchFailedError) when one failed', async () => {
      const s = suite.scheduler;
      const [good, bad] = await inTransaction(() => [
        s.with({ onSuccess: s.job('record', 'batch ok') }).parallel(s.job('add', 1, 2), s.job('add', 3, 4)),
        s.with({ onFailure: s.job('record', 'batch ko') }).serial(s.job('add', 1, 2), s.job('fails', 'step')),
      ]);
      await finished(s, good);
      await finished(s, bad);
      await until(() => log.some((l) => l.startsWith('batch ok')) && log.some((l) => l.startsWith('batch ko')), 10_000, 'both callbacks');
      assert.deepEqual(log.filter((l) => l.startsWith('batch ok')), ['batch ok: done [{"state":"done","value":3},{"state":"done","value":7}]']);
      assert.deepEqual(log.filter((l) => l.startsWith('batch ko')), ["batch ko: failed BatchFailedError: 1 of the batch's 2 steps failed or were skipped"]);
    });

    it('a nested batch with a failed step, two levels down, counts as failed: it stops its serial parent and fails it', async () => {
      const s = suite.scheduler;
      const id = await inTransaction(() =>
        s
          .with({ stopOnFailure: true, onFailure: s.job('record', 'nested ko') })
          .serial(s.batch('serial', s.batch('parallel', s.job('fails', 'deep'))), s.job('add', 9, 9)),
      );
      assert.deepEqual(await finished(s, id), {
        state: 'done',
        value: [
          { state: 'done', value: [{ state: 'done', value: [{ state: 'failed', error: { name: 'RangeError', message: 'deep' } }] }] },
          { state: 'skipped' },
        ],
      });
      await until(() => log.some((l) => l.startsWith('nested ko')), 10_000, 'the callback');
      assert.deepEqual(log.filter((l) => l.startsWith('nested ko')), ["nested ko: failed BatchFailedError: 2 of the batch's 2 steps failed or were skipped"]);
      assert.ok(!(await texts()).includes('add 9+9'));
    });

    it('a callback spec must come from this scheduler’s job(): anything else is refused where it is given', async () => {
      const s = suite.scheduler;
      assert.throws(() => s.with({ onSuccess: { kind: 'job', name: 'add' } }), /with\(\): onSuccess must be a job spec made by this scheduler's job/);
      assert.throws(() => s.job('undefined-job'), /undefined-job/);
      await assert.rejects(inTransaction(() => s.serial()), /a batch needs at least one step/);
    });
  });

  it('while a batch runs it is pending with the fraction of its steps done; remove() cancels the steps not started', async () => {
    const s = suite.scheduler;
    const id = await inTransaction(() => s.with({ runAt: Date.now() + 60_000 }).serial(s.job('add', 5, 5), s.job('add', 6, 6)));
    // Its first step is not due for a minute: nothing runs yet.
    assert.deepEqual(await s.getResult(id), { state: 'pending' });
    await s.remove(id);
    assert.deepEqual(await s.getResult(id), { state: 'unknown' });
    assert.equal((await suite.knex(`${suite.prefix}jobs`).where({ parent_id: id })).length, 0, 'its unstarted steps are gone');
  });

  it('polling a step by its id does not consume it: its outcome stays for its batch', async () => {
    const s = suite.scheduler;
    gates.set('consume', deferred());
    const id = await inTransaction(() => s.serial(s.job('add', 8, 8), s.job('gate', 'consume')));
    const jobs = () => suite.knex(`${suite.prefix}jobs`).where({ parent_id: id }).orderBy('step_index');
    await until(async () => (await jobs())[0]?.state === 'done', 10_000, 'the first step');
    const first = (await jobs())[0].id as string;
    assert.deepEqual(await suite.tm.run(() => s.getResult(first)), { state: 'done', value: 16 }); // fetched in a transaction that commits
    gates.get('consume')!.resolve();
    assert.deepEqual(await finished(s, id), { state: 'done', value: [{ state: 'done', value: 16 }, { state: 'done', value: 'consume' }] });
  });

  describe('removal and limits', () => {
    const jobs = () => suite.knex(`${suite.prefix}jobs`);

    it('removing a step fails it (JobCancelledError) and its batch goes on', async () => {
      const s = suite.scheduler;
      gates.set('removed step', deferred());
      const id = await inTransaction(() => s.serial(s.job('add', 1, 1), s.job('gate', 'removed step'), s.job('add', 3, 3)));
      await until(async () => (await jobs().where({ parent_id: id, step_index: 1 }).first())?.state === 'running', 10_000, 'step 1 to run');
      const step = (await jobs().where({ parent_id: id, step_index: 1 }).first()).id as string;
      await s.remove(step);
      gates.get('removed step')!.resolve();
      assert.deepEqual(await finished(s, id), {
        state: 'done',
        value: [
          { state: 'done', value: 2 },
          { state: 'failed', error: { name: 'JobCancelledError', message: `schedule ${step} was removed while its job ran; the job's writes are rolled back` } },
          { state: 'done', value: 6 },
        ],
      });
    });

    it('removing a batch in the transaction that scheduled it leaves none of its steps', async () => {
      const s = suite.scheduler;
      const id = await inTransaction(async () => {
        const batch = s.serial(s.job('add', 1, 2), s.batch('parallel', s.job('add', 3, 4)));
        await s.remove(batch);
        return batch;
      });
      assert.deepEqual(await s.getResult(id), { state: 'unknown' });
      assert.equal((await jobs().where({ parent_id: id })).length, 0);
    });

    it('stopOnFailure reaches the batches inside: a nested serial batch stops at its failed step too', async () => {
      const s = suite.scheduler;
      const id = await inTransaction(() => s.with({ stopOnFailure: true }).serial(s.batch('serial', s.job('add', 1, 0), s.job('fails', 'inner'), s.job('add', 41, 1))));
      assert.deepEqual(await finished(s, id), {
        state: 'done',
        value: [
          {
            state: 'done',
            value: [{ state: 'done', value: 1 }, { state: 'failed', error: { name: 'RangeError', message: 'inner' } }, { state: 'skipped' }],
          },
        ],
      });
      assert.ok(!(await texts()).includes('add 41+1'));
    });

    it('refuses a batch kind or a with() option a batch has no use for, and stopOnFailure on a job', async () => {
      const s = suite.scheduler;
      assert.throws(() => s.batch('Serial' as 'serial', s.job('add', 1, 1)), /kind must be 'serial' or 'parallel', got "Serial"/);
      await assert.rejects(inTransaction(() => s.with({ queue: 'reports' }).serial(s.job('add', 1, 1))), /serial\(\.\.\.steps\): queue is not an option of a serial batch/);
      await assert.rejects(inTransaction(() => s.with({ stopOnFailure: true }).parallel(s.job('add', 1, 1))), /stopOnFailure is not an option of a parallel batch/);
      await assert.rejects(inTransaction(() => s.with({ stopOnFailure: true }).schedule('add', 1, 1)), /stopOnFailure applies to a serial batch, not to a job/);
    });

    it('a batch whose value is too large to store ends failed with UnstorableValueError, keeping its steps’ states', async () => {
      const s = suite.scheduler;
      const id = await inTransaction(() => s.with({ onFailure: s.job('record', 'too large') }).parallel(s.job('big', 400), s.job('big', 400), s.job('big', 400)));
      assert.deepEqual(await finished(s, id), { state: 'done', value: [{ state: 'done' }, { state: 'done' }, { state: 'done' }] });
      await until(() => log.some((l) => l.startsWith('too large')), 10_000, 'the callback');
      assert.match(log.find((l) => l.startsWith('too large'))!, /^too large: failed UnstorableValueError: /);
    });

    it('a callback whose parent’s value exceeds maxArgumentBytes gets the outcome without the value', async () => {
      const s = suite.scheduler;
      const id = await inTransaction(() => s.with({ onSuccess: s.job('record', 'no value') }).schedule('big', 100));
      assert.equal(((await finished(s, id)) as { value: string }).value.length, 100 * 1024, 'the job’s own result is whole');
      await until(() => log.some((l) => l.startsWith('no value')), 10_000, 'the callback');
      assert.deepEqual(log.filter((l) => l.startsWith('no value')), ['no value: done (no value)']);
    });

    it('once a batch ends, its steps expire with it, at every level', async () => {
      const s = suite.scheduler;
      const id = await inTransaction(() => s.serial(s.batch('parallel', s.batch('serial', s.job('add', 2, 2)))));
      await finished(s, id);
      const all = async (ids: string[]): Promise<{ id: string; expires_at: unknown }[]> => {
        const rows = (await jobs().whereIn('parent_id', ids)) as { id: string; expires_at: unknown }[];
        return rows.length === 0 ? rows : [...rows, ...(await all(rows.map((r) => r.id)))];
      };
      const under = await all([id]);
      assert.equal(under.length, 3, 'two nested batches and a job');
      assert.ok(under.every((r) => r.expires_at !== null));
    });
  });

  it('a batch scheduled by a transaction that aborts never runs', async () => {
    const s = suite.scheduler;
    let id = '';
    await assert.rejects(
      suite.tm.run(async () => {
        id = s.serial(s.job('add', 7, 7));
        throw new Error('abort');
      }),
      /abort/,
    );
    assert.deepEqual(await s.getResult(id), { state: 'unknown' });
    assert.equal((await suite.knex(`${suite.prefix}jobs`).where({ parent_id: id })).length, 0);
  });

  it('concurrent transactions schedule interleaved batches; each ends once with its own outcomes', async () => {
    const s = suite.scheduler;
    const ids = await Promise.all([1, 2, 3, 4].map((n) => inTransaction(() => s.parallel(s.job('add', n, 0), s.job('add', n, 100)))));
    for (const [index, id] of ids.entries()) {
      const n = index + 1;
      assert.deepEqual(await finished(s, id), { state: 'done', value: [{ state: 'done', value: n }, { state: 'done', value: n + 100 }] });
    }
  });
});
