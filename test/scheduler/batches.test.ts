/**
 * Batches and callbacks of the in-memory TransactionalScheduler, ported from the
 * original package's doctests (queueSerialJobs, queueParallelJobs, addCallback,
 * addCallbacks(failure=…), success/failure handlers), with what the port adds:
 * stopOnFailure, nested batches, remove(batchId), progress, ownership, batches
 * of concurrent transactions, and a batch whose transaction aborts.
 */
import { before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import { TransactionManager, TransactionalScheduler, type JobHandle, type ParentOutcome, type StepOutcome } from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { ManualClock, barrier, deferred, finished, recordingLogger, removableJob, until, untilAborted } from '../support/helpers.js';

class RuntimeError extends Error {
  override name = 'RuntimeError';
}

eachDialect('batches and callbacks (in memory)', (database) => {
  let knex: Knex;
  let documents: string;
  let results: string;
  let tm: TransactionManager;
  let logger: ReturnType<typeof recordingLogger>;
  let scheduler: TransactionalScheduler;

  before(async () => {
    knex = database.knex();
    documents = database.table('documents');
    results = database.table('results');
    await knex.schema.createTable(documents, (t) => {
      t.string('name', 50).primary();
      t.string('title', 100).notNullable();
      t.string('review_state', 20).notNullable();
    });
    await knex.schema.createTable(results, (t) => {
      t.increments('id');
      t.string('text', 500).notNullable();
    });
  });

  beforeEach(async () => {
    await knex(documents).delete();
    await knex(results).delete();
    logger = recordingLogger();
    tm = new TransactionManager(knex, { logger, clock: new ManualClock() });
    scheduler = new TransactionalScheduler(tm, { concurrency: 4 });
    // The jobs of the doctests (plone.app.async.tests.funcs).
    scheduler.define('createDocument', async (job: JobHandle, name: string, title: string) => {
      await job.db(documents).insert({ name, title, review_state: 'private' });
      return name;
    });
    scheduler.define('submitObject', async (job: JobHandle, name: string) => {
      const updated = await job.db(documents).where({ name, review_state: 'private' }).update({ review_state: 'pending' });
      if (updated !== 1) throw new RuntimeError(`no private document ${name} to submit`);
    });
    scheduler.define('addNumbers', (_job: JobHandle, a: number, b: number) => a + b);
    scheduler.define('failingJob', () => {
      throw new RuntimeError('FooBared');
    });
    scheduler.define('record', async (job: JobHandle, text: string) => {
      await job.db(results).insert({ text });
      return text;
    });
    // A callback: writes what it was told of its parent.
    scheduler.define('note', async (job: JobHandle, label: string, outcome: ParentOutcome) => {
      const told = outcome.state === 'done' ? `${JSON.stringify(outcome.value)}` : `${outcome.error.name}: ${outcome.error.message}`;
      await job.db(results).insert({ text: `${label} ${outcome.id === parentOf.get(label) ? 'of its parent' : outcome.id}: ${told}` });
      noted.push({ label, outcome, meta: job.meta.user, id: job.id });
    });
    parentOf.clear();
    noted.length = 0;
  });

  /** The id each callback label's parent got, to check the outcome's `id`. */
  const parentOf = new Map<string, string>();
  const noted: { label: string; outcome: ParentOutcome; meta: unknown; id: string }[] = [];
  const texts = async () => (await knex(results).orderBy('id')).map((r: { text: string }) => r.text);
  /** Waits until `n` callbacks have run and nothing runs any more (their writes committed). */
  const callbacksEnded = (n: number) =>
    until(() => {
      const stats = scheduler.stats();
      return noted.length === n && stats.waiting + stats.pending + stats.running === 0;
    });
  const reviewState = async (name: string) => (await knex(documents).where({ name }).first())?.review_state;

  describe('serial batches (queueSerialJobs)', () => {
    it('runs the steps one after another, each in its own transaction; the value is one outcome per step', async () => {
      const id = await tm.run(async () =>
        scheduler.serial(scheduler.job('createDocument', 'bar', 'title'), scheduler.job('submitObject', 'bar')),
      );
      assert.match(id, /^[0-9a-f]{32}$/);
      const res = await finished(scheduler, id);
      assert.ok(res.state === 'done');
      const steps = res.value as StepOutcome[];
      assert.deepEqual(steps[0], { state: 'done', value: 'bar' }); // res[0].result == 'bar'
      assert.equal(steps[1]!.state, 'done'); // res[1].status == completed
      assert.equal(await reviewState('bar'), 'pending');
    });

    it('a failed step does not stop the batch; the steps after it still run', async () => {
      const id = await tm.run(async () =>
        scheduler.serial(scheduler.job('record', 'first'), scheduler.job('failingJob'), scheduler.job('record', 'third')),
      );
      assert.deepEqual(await finished(scheduler, id), {
        state: 'done',
        value: [
          { state: 'done', value: 'first' },
          { state: 'failed', error: { name: 'RuntimeError', message: 'FooBared' } },
          { state: 'done', value: 'third' },
        ],
      });
      assert.deepEqual(await texts(), ['first', 'third']);
    });

    it('with({ stopOnFailure: true }), the steps after a failed one are skipped', async () => {
      const id = await tm.run(async () =>
        scheduler
          .with({ stopOnFailure: true })
          .serial(scheduler.job('record', 'first'), scheduler.job('submitObject', 'missing'), scheduler.job('record', 'never'), scheduler.job('record', 'nor this')),
      );
      assert.deepEqual(await finished(scheduler, id), {
        state: 'done',
        value: [
          { state: 'done', value: 'first' },
          { state: 'failed', error: { name: 'RuntimeError', message: 'no private document missing to submit' } },
          { state: 'skipped' },
          { state: 'skipped' },
        ],
      });
      assert.deepEqual(await texts(), ['first']);
    });

    it('progress while it runs: the fraction of the steps that have ended', async () => {
      const gates = [deferred(), deferred(), deferred(), deferred()];
      const started = [deferred(), deferred(), deferred(), deferred()];
      scheduler.define('gated', async (_job: JobHandle, n: number) => {
        started[n]!.resolve();
        await gates[n]!.promise;
        return n;
      });
      const id = await tm.run(async () => {
        const batch = scheduler.serial(...[0, 1, 2, 3].map((n) => scheduler.job('gated', n)));
        assert.deepEqual(await scheduler.getResult(batch), { state: 'pending' }, 'not committed yet');
        return batch;
      });
      for (const n of [0, 1, 2, 3]) {
        await started[n]!.promise;
        assert.deepEqual(await scheduler.getResult(id), { state: 'pending', progress: { fraction: n / 4 } });
        gates[n]!.resolve();
      }
      assert.deepEqual(await finished(scheduler, id), { state: 'done', value: [0, 1, 2, 3].map((n) => ({ state: 'done', value: n })) });
    });
  });

  describe('parallel batches (queueParallelJobs)', () => {
    it('starts every step at once; the value keeps the order of the steps, whatever order they end in', async () => {
      const together = barrier(3);
      const order: number[] = [];
      const releases = [deferred(), deferred(), deferred()];
      scheduler.define('meet', async (job: JobHandle, n: number) => {
        await together.arrive(); // all three run at once, or none gets past this
        await releases[n]!.promise;
        order.push(n);
        await job.db(results).insert({ text: `step ${n}` });
        return n * 10;
      });
      const id = await tm.run(async () => scheduler.parallel(...[0, 1, 2].map((n) => scheduler.job('meet', n))));
      await until(() => scheduler.stats().running === 3, 10_000, 'the three steps to run');
      for (const n of [2, 0, 1]) {
        releases[n]!.resolve();
        await until(() => order.includes(n));
      }
      assert.deepEqual(await finished(scheduler, id), {
        state: 'done',
        value: [
          { state: 'done', value: 0 },
          { state: 'done', value: 10 },
          { state: 'done', value: 20 },
        ],
      });
      assert.deepEqual(order, [2, 0, 1]);
      assert.equal((await texts()).length, 3);
    });

    it('runs its steps within the scheduler’s concurrency limit', async () => {
      const limited = new TransactionalScheduler(tm, { concurrency: 2 });
      let running = 0;
      let most = 0;
      const gate = deferred();
      limited.define('slot', async (_job: JobHandle, n: number) => {
        most = Math.max(most, ++running);
        await gate.promise;
        running--;
        return n;
      });
      const id = await tm.run(async () => limited.parallel(...[1, 2, 3, 4, 5].map((n) => limited.job('slot', n))));
      await until(() => limited.stats().running === 2);
      assert.deepEqual(limited.stats(), { uncommitted: 0, waiting: 1, pending: 3, running: 2, done: 0, failed: 0 }, 'the batch waits, three steps wait for a slot');
      gate.resolve();
      assert.deepEqual(await finished(limited, id), { state: 'done', value: [1, 2, 3, 4, 5].map((n) => ({ state: 'done', value: n })) });
      assert.equal(most, 2);
    });
  });

  describe('nested batches', () => {
    it('a batch may hold batches; a nested one’s outcome is { state: done, value: [...] }', async () => {
      const log: string[] = [];
      scheduler.define('log', async (_job: JobHandle, text: string) => {
        log.push(`start ${text}`);
        await new Promise((r) => setTimeout(r, text === 'b' ? 20 : 1));
        log.push(`end ${text}`);
        return text;
      });
      const id = await tm.run(async () =>
        scheduler.serial(
          scheduler.job('log', 'a'),
          scheduler.batch('parallel', scheduler.job('log', 'b'), scheduler.job('log', 'c'), scheduler.batch('serial', scheduler.job('log', 'd'))),
          scheduler.job('log', 'e'),
        ),
      );
      assert.deepEqual(await finished(scheduler, id), {
        state: 'done',
        value: [
          { state: 'done', value: 'a' },
          {
            state: 'done',
            value: [
              { state: 'done', value: 'b' },
              { state: 'done', value: 'c' },
              { state: 'done', value: [{ state: 'done', value: 'd' }] },
            ],
          },
          { state: 'done', value: 'e' },
        ],
      });
      assert.deepEqual(log.slice(0, 2), ['start a', 'end a']);
      assert.deepEqual(log.slice(-2), ['start e', 'end e'], 'e starts once the whole nested batch has ended');
      assert.ok(log.indexOf('end b') < log.indexOf('start e'));
    });

    it('with stopOnFailure, a nested batch in which a step failed stops the batch around it too', async () => {
      const id = await tm.run(async () =>
        scheduler
          .with({ stopOnFailure: true })
          .serial(
            scheduler.batch('serial', scheduler.job('record', 'inner 1'), scheduler.job('failingJob'), scheduler.job('record', 'inner 3')),
            scheduler.job('record', 'outer 2'),
          ),
      );
      assert.deepEqual(await finished(scheduler, id), {
        state: 'done',
        value: [
          {
            state: 'done',
            value: [
              { state: 'done', value: 'inner 1' },
              { state: 'failed', error: { name: 'RuntimeError', message: 'FooBared' } },
              { state: 'skipped' },
            ],
          },
          { state: 'skipped' },
        ],
      });
      assert.deepEqual(await texts(), ['inner 1']);
    });
  });

  describe('callbacks (addCallback, addCallbacks(failure=…))', () => {
    it('onSuccess runs once the job is done, with its own arguments then { id, state: done, value }', async () => {
      const id = await tm.run(
        async () => scheduler.with({ onSuccess: scheduler.job('note', 'Success') }).schedule('addNumbers', 40, 2),
        { metadata: { user: 'alice' } },
      );
      parentOf.set('Success', id);
      assert.deepEqual(await finished(scheduler, id), { state: 'done', value: 42 });
      await callbacksEnded(1);
      assert.deepEqual(await texts(), ['Success of its parent: 42']); // funcs.results == ['Success: 42']
      assert.deepEqual(noted[0]!.outcome, { id, state: 'done', value: 42 });
      assert.equal(noted[0]!.meta, 'alice', 'the callback runs for the same user');
      assert.notEqual(noted[0]!.id, id, 'the callback is a schedule of its own');
      assert.deepEqual(await scheduler.getResult(noted[0]!.id), { state: 'unknown' }, 'a callback’s result is not kept');
    });

    it('onFailure runs once the job fails, with { id, state: failed, error }; onSuccess does not', async () => {
      const id = await tm.run(async () =>
        scheduler.with({ onSuccess: scheduler.job('note', 'Success'), onFailure: scheduler.job('note', 'Failure') }).schedule('failingJob'),
      );
      parentOf.set('Failure', id);
      assert.deepEqual(await finished(scheduler, id), { state: 'failed', error: { name: 'RuntimeError', message: 'FooBared' } });
      await callbacksEnded(1);
      assert.deepEqual(await texts(), ['Failure of its parent: RuntimeError: FooBared']);
      assert.deepEqual(noted[0]!.outcome, { id, state: 'failed', error: { name: 'RuntimeError', message: 'FooBared' } });
    });

    it('a batch whose steps are all done: onSuccess, with the batch’s id and its value (one outcome per step)', async () => {
      const id = await tm.run(
        async () =>
          scheduler
            .with({ onSuccess: scheduler.job('note', 'Batch'), onFailure: scheduler.job('note', 'Never') })
            .parallel(scheduler.job('addNumbers', 1, 2), scheduler.batch('serial', scheduler.job('record', 'nested'))),
        { metadata: { user: 'alice' } },
      );
      parentOf.set('Batch', id);
      const value = [
        { state: 'done', value: 3 },
        { state: 'done', value: [{ state: 'done', value: 'nested' }] },
      ];
      assert.deepEqual(await finished(scheduler, id), { state: 'done', value });
      await callbacksEnded(1);
      assert.deepEqual(noted.map((n) => [n.label, n.meta]), [['Batch', 'alice']], 'only onSuccess runs, for the same user');
      assert.deepEqual(noted[0]!.outcome, { id, state: 'done', value });
    });

    it('a batch with a failed step: onFailure, with a BatchFailedError; the batch itself is done, its value says which failed', async () => {
      const id = await tm.run(async () =>
        scheduler
          .with({ onSuccess: scheduler.job('note', 'Never'), onFailure: scheduler.job('note', 'Batch') })
          .parallel(scheduler.job('addNumbers', 1, 2), scheduler.job('failingJob')),
      );
      parentOf.set('Batch', id);
      const value = [
        { state: 'done', value: 3 },
        { state: 'failed', error: { name: 'RuntimeError', message: 'FooBared' } },
      ];
      assert.deepEqual(await finished(scheduler, id), { state: 'done', value }, 'a batch with a failed step is done: its value says which failed');
      await callbacksEnded(1);
      const error = { name: 'BatchFailedError', message: "1 of the batch's 2 steps failed or were skipped" };
      assert.deepEqual(noted[0]!.outcome, { id, state: 'failed', error });
      assert.deepEqual(await texts(), ["Batch of its parent: BatchFailedError: 1 of the batch's 2 steps failed or were skipped"]);
    });

    it('steps skipped after a failure (stopOnFailure) count in the BatchFailedError', async () => {
      const id = await tm.run(async () =>
        scheduler
          .with({ stopOnFailure: true, onSuccess: scheduler.job('note', 'Never'), onFailure: scheduler.job('note', 'Batch') })
          .serial(scheduler.job('addNumbers', 1, 2), scheduler.job('failingJob'), scheduler.job('record', 'never'), scheduler.job('record', 'nor this')),
      );
      parentOf.set('Batch', id);
      const result = await finished(scheduler, id);
      assert.ok(result.state === 'done');
      assert.deepEqual((result.value as StepOutcome[]).map((step) => step.state), ['done', 'failed', 'skipped', 'skipped']);
      await callbacksEnded(1);
      assert.deepEqual(noted[0]!.outcome, { id, state: 'failed', error: { name: 'BatchFailedError', message: "3 of the batch's 4 steps failed or were skipped" } });
    });

    it('a nested batch in which a step failed counts as failed for its parent’s callbacks', async () => {
      const id = await tm.run(async () =>
        scheduler
          .with({ onSuccess: scheduler.job('note', 'Never'), onFailure: scheduler.job('note', 'Batch') })
          .serial(scheduler.batch('parallel', scheduler.job('record', 'inner'), scheduler.job('failingJob')), scheduler.job('record', 'after')),
      );
      parentOf.set('Batch', id);
      assert.deepEqual(await finished(scheduler, id), {
        state: 'done',
        value: [
          {
            state: 'done',
            value: [
              { state: 'done', value: 'inner' },
              { state: 'failed', error: { name: 'RuntimeError', message: 'FooBared' } },
            ],
          },
          { state: 'done', value: 'after' },
        ],
      });
      await callbacksEnded(1);
      assert.deepEqual(noted[0]!.outcome, { id, state: 'failed', error: { name: 'BatchFailedError', message: "1 of the batch's 2 steps failed or were skipped" } });
    });

    it('a callback runs exactly once, even when its parent’s result is fetched and consumed first', async () => {
      const id = await tm.run(async () => scheduler.with({ onSuccess: scheduler.job('note', 'Once') }).schedule('addNumbers', 1, 1));
      parentOf.set('Once', id);
      await finished(scheduler, id);
      await tm.run(async () => assert.deepEqual(await scheduler.getResult(id), { state: 'done', value: 2 }));
      await callbacksEnded(1);
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(noted.length, 1);
      assert.deepEqual(await texts(), ['Once of its parent: 2']);
    });

    it('a callback that fails is logged and emitted like any job, in its own transaction', async () => {
      scheduler.define('brokenCallback', async (job: JobHandle) => {
        await job.db(results).insert({ text: 'rolled back' });
        throw new RuntimeError('callback broke');
      });
      const failed: string[] = [];
      scheduler.on('failed', (e) => failed.push(`${e.name}: ${e.error.message}`));
      const id = await tm.run(async () => scheduler.with({ onSuccess: scheduler.job('brokenCallback') }).schedule('record', 'parent committed'));
      await finished(scheduler, id);
      await until(() => failed.length === 1);
      assert.deepEqual(failed, ['brokenCallback: callback broke']);
      assert.ok(logger.lines.some((l) => l.level === 'error' && /job brokenCallback \([0-9a-f]{32}\) failed: RuntimeError: callback broke/.test(l.msg)));
      assert.deepEqual(await texts(), ['parent committed']);
    });

    it('handlers of all successes and failures: the succeeded and failed events (successHandler, failureHandler)', async () => {
      const seen: unknown[] = [];
      scheduler.on('succeeded', (e) => seen.push(`succeeded ${e.name}`));
      scheduler.on('failed', (e) => seen.push(`failed ${e.name}: ${e.error.name} ${e.error.message}`));
      const [job1, job2] = await tm.run(async () => [scheduler.schedule('addNumbers', 40, 2), scheduler.schedule('failingJob')]);
      await finished(scheduler, job1!);
      await finished(scheduler, job2!);
      assert.deepEqual(seen.sort(), ['failed failingJob: RuntimeError FooBared', 'succeeded addNumbers']);
    });

    it('with() takes onSuccess, onFailure and stopOnFailure only, each checked where given', async () => {
      const other = new TransactionalScheduler(tm);
      other.define('addNumbers', (_job: JobHandle, a: number, b: number) => a + b);
      assert.throws(() => scheduler.with({ onSuccess: other.job('addNumbers', 1, 2) }), {
        name: 'TypeError',
        message: "with(): onSuccess must be a job spec made by this scheduler's job(name, ...args)",
      });
      assert.throws(() => scheduler.with({ onFailure: { kind: 'job', name: 'addNumbers' } }), { name: 'TypeError', message: /^with\(\): onFailure must be a job spec/ });
      assert.throws(() => scheduler.with({ stopOnFailure: 'yes' as unknown as boolean }), { name: 'TypeError', message: 'with(): stopOnFailure must be true or false' });
      assert.throws(() => scheduler.with({ delay: 1000 } as never), { name: 'TypeError', message: /^with\(\): delay is not an option of the in-memory TransactionalScheduler/ });
      assert.throws(() => scheduler.job('nope'), { name: 'UnknownJobError' });
      await tm.run(async () => {
        assert.throws(() => scheduler.serial(), { name: 'TypeError', message: 'serial(...steps): a batch needs at least one step' });
        assert.throws(() => scheduler.parallel(other.job('addNumbers', 1, 2)), { name: 'TypeError', message: /^parallel\(\.\.\.steps\): step 0 must be made by this scheduler/ });
      });
      assert.throws(() => scheduler.serial(scheduler.job('addNumbers', 1, 2)), { name: 'NoTransactionError' });
    });
  });

  describe('batches are schedules', () => {
    it('owned by the scheduling user: steps and callbacks run for that user, and others see unknown', async () => {
      const users: unknown[] = [];
      scheduler.define('whoami', (job: JobHandle) => {
        users.push(job.meta.user);
        return job.meta.user;
      });
      const id = await tm.run(async () => scheduler.serial(scheduler.job('whoami'), scheduler.batch('parallel', scheduler.job('whoami'))), {
        metadata: { user: 'alice', note: 'POST /batches' },
      });
      await until(async () => (await scheduler.getResult(id)).state === 'done');
      assert.deepEqual(users, ['alice', 'alice']);
      assert.deepEqual(await scheduler.getResult(id, { visibleTo: 'bob' }), { state: 'unknown' });
      assert.deepEqual(await scheduler.getResult(id, { visibleTo: null }), { state: 'unknown' });
      assert.equal((await scheduler.getResult(id, { visibleTo: 'alice' })).state, 'done');
      // Fetched inside a transaction that commits, the batch's result is consumed.
      await tm.run(async () => assert.equal((await scheduler.getResult(id, { visibleTo: 'alice' })).state, 'done'));
      assert.deepEqual(await scheduler.getResult(id), { state: 'unknown' });
    });

    it('remove(batchId) signals the running step (rolled back) and cancels the steps not started', async () => {
      const long = removableJob(results);
      scheduler.define('long', long.run);
      const id = await tm.run(async () =>
        scheduler.with({ onSuccess: scheduler.job('note', 'x'), onFailure: scheduler.job('note', 'y') }).serial(
          scheduler.job('long'),
          scheduler.job('record', 'never'),
          scheduler.batch('parallel', scheduler.job('record', 'nor this')),
        ),
      );
      await long.started;
      await scheduler.remove(id);
      assert.deepEqual(await scheduler.getResult(id), { state: 'unknown' });
      await until(() => long.reason !== undefined && scheduler.stats().running === 0);
      assert.equal((long.reason as Error).name, 'JobCancelledError');
      await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(scheduler.stats(), { uncommitted: 0, waiting: 0, pending: 0, running: 0, done: 0, failed: 0 });
      assert.deepEqual(await texts(), []);
      assert.deepEqual(noted, [], 'a removed batch has no outcome: no callback runs');
    });

    it('a parallel batch removed while its steps wait for a slot: none of them starts', async () => {
      const limited = new TransactionalScheduler(tm, { concurrency: 1 });
      const blocker = deferred();
      let ran = 0;
      limited.define('blocker', () => blocker.promise);
      limited.define('count', () => ++ran);
      const first = await tm.run(async () => limited.schedule('blocker'));
      const id = await tm.run(async () => limited.parallel(limited.job('count'), limited.job('count'), limited.job('count')));
      await until(() => limited.stats().pending === 3);
      await limited.remove(id);
      blocker.resolve();
      await finished(limited, first);
      await until(() => limited.stats().running === 0);
      assert.equal(ran, 0);
      assert.deepEqual(limited.stats(), { uncommitted: 0, waiting: 0, pending: 0, running: 0, done: 1, failed: 0 });
    });

    it('a step removed by its own id (job.id) ends as failed in its batch, which goes on', async () => {
      scheduler.define('removeMyself', async (job: JobHandle) => {
        await scheduler.remove(job.id);
        await untilAborted(job.signal);
      });
      const id = await tm.run(async () => scheduler.serial(scheduler.job('removeMyself'), scheduler.job('record', 'after')));
      const result = await finished(scheduler, id);
      assert.ok(result.state === 'done');
      const [removed, after] = result.value as StepOutcome[];
      assert.equal(removed!.state === 'failed' && removed!.error.name, 'JobCancelledError');
      assert.deepEqual(after, { state: 'done', value: 'after' });
    });

    it('batches of concurrent transactions run side by side, each keeping its own order', async () => {
      const log: string[] = [];
      const meet = barrier(2);
      scheduler.define('step', async (job: JobHandle, batch: string, n: number) => {
        log.push(`${batch}${n}`);
        if (n === 2) await meet.arrive(); // step 2 of each batch waits for the other's: they must run at once
        await job.db(results).insert({ text: `${batch}${n}` });
        return `${batch}${n}`;
      });
      const inBoth = barrier(2);
      const ids = await Promise.all(
        ['A', 'B'].map((batch) =>
          tm.run(async () => {
            await inBoth.arrive(); // both transactions are open at once
            return scheduler.serial(...[1, 2, 3].map((n) => scheduler.job('step', batch, n)));
          }),
        ),
      );
      for (const [i, id] of ids.entries()) {
        const batch = ['A', 'B'][i]!;
        assert.deepEqual(await finished(scheduler, id), { state: 'done', value: [1, 2, 3].map((n) => ({ state: 'done', value: `${batch}${n}` })) });
      }
      for (const batch of ['A', 'B']) assert.deepEqual(log.filter((s) => s.startsWith(batch)), [1, 2, 3].map((n) => `${batch}${n}`));
      assert.equal((await texts()).length, 6);
    });

    it('the batch of a transaction that aborts never runs, and is unknown', async () => {
      let id = '';
      await assert.rejects(
        tm.run(async () => {
          id = scheduler.with({ onFailure: scheduler.job('note', 'z') }).serial(scheduler.job('record', 'never'), scheduler.job('record', 'nor this'));
          assert.deepEqual(await scheduler.getResult(id), { state: 'pending' });
          throw new RuntimeError('the request failed');
        }),
        { name: 'RuntimeError' },
      );
      await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(await scheduler.getResult(id), { state: 'unknown' });
      assert.deepEqual(scheduler.stats(), { uncommitted: 0, waiting: 0, pending: 0, running: 0, done: 0, failed: 0 });
      assert.deepEqual(await texts(), []);
      assert.deepEqual(noted, []);
    });

    it('stop(): the steps not reached fail as never started; the batch is done with their outcomes', async () => {
      const release = deferred();
      scheduler.define('hold', async () => {
        await release.promise;
        return 'held';
      });
      const id = await tm.run(async () => scheduler.serial(scheduler.job('hold'), scheduler.job('record', 'never'), scheduler.batch('parallel', scheduler.job('record', 'nor this'))));
      await until(() => scheduler.stats().running === 1);
      const stopping = scheduler.stop({ timeout: 60_000 });
      release.resolve();
      await stopping;
      assert.deepEqual(await scheduler.getResult(id), {
        state: 'done',
        value: [
          { state: 'done', value: 'held' },
          { state: 'failed', error: { name: 'SchedulerStoppedError', message: 'job record never started: the scheduler has been stopped' } },
          { state: 'failed', error: { name: 'SchedulerStoppedError', message: 'parallel batch never started: the scheduler has been stopped' } },
        ],
      });
      assert.deepEqual(await texts(), []);
      await tm.run(async () => assert.throws(() => scheduler.serial(scheduler.job('record', 'x')), { name: 'SchedulerStoppedError' }));
    });
  });

});
