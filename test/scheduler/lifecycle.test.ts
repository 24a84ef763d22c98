/**
 * The life of schedules in TransactionalScheduler: bounded concurrency,
 * progress, remove(), events, expiry of unfetched results and stop(), with a
 * manual clock wherever time matters.
 */
import { before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import { ConflictError, TransactionManager, TransactionalScheduler, type JobHandle } from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { ManualClock, deferred, finished, recordingLogger, removableJob, until, untilAborted } from '../support/helpers.js';

eachDialect('the life of a schedule', (database) => {
  let knex: Knex;
  let rows: string;
  let clock: ManualClock;
  let tm: TransactionManager;

  before(async () => {
    knex = database.knex();
    rows = database.table('job_rows');
    await knex.schema.createTable(rows, (t) => {
      t.increments('id');
      t.string('text').notNullable().unique();
    });
  });

  beforeEach(async () => {
    await knex(rows).delete();
    clock = new ManualClock();
    tm = new TransactionManager(knex, { logger: recordingLogger(), clock });
  });

  const texts = async () => (await knex(rows).orderBy('id')).map((r: { text: string }) => r.text);

  it('runs at most `concurrency` jobs at once; the others wait their turn', async () => {
    const scheduler = new TransactionalScheduler(tm, { concurrency: 2 });
    const gate = deferred();
    let running = 0;
    let most = 0;
    scheduler.define('gated', async (job: JobHandle, n: number) => {
      most = Math.max(most, ++running);
      await gate.promise;
      running--;
      await job.db(rows).insert({ text: `job ${n}` });
      return n;
    });
    const ids = await Promise.all([1, 2, 3, 4, 5, 6].map((n) => tm.run(async () => scheduler.schedule('gated', n))));
    await until(() => scheduler.stats().running === 2);
    assert.deepEqual(scheduler.stats(), { uncommitted: 0, waiting: 0, pending: 4, running: 2, done: 0, failed: 0 });
    gate.resolve();
    for (const [i, id] of ids.entries()) assert.deepEqual(await finished(scheduler, id), { state: 'done', value: i + 1 });
    assert.equal(most, 2);
    assert.equal((await texts()).length, 6);
  });

  it('progress is visible to pollers at once, while the job runs', async () => {
    const scheduler = new TransactionalScheduler(tm);
    const proceed = deferred();
    const reported = deferred();
    scheduler.define('report', async (job: JobHandle) => {
      await job.progress(0.25, 'a quarter');
      await assert.rejects(job.progress(1.5), /fraction must be a number from 0 to 1, got 1.5/);
      reported.resolve();
      await proceed.promise;
      return 'done';
    });
    const id = await tm.run(async () => scheduler.schedule('report'));
    await reported.promise;
    assert.deepEqual(await scheduler.getResult(id), { state: 'pending', progress: { fraction: 0.25, message: 'a quarter' } });
    proceed.resolve();
    assert.deepEqual(await finished(scheduler, id), { state: 'done', value: 'done' });
  });

  describe('remove()', () => {
    it('a job that has not started never does', async () => {
      const scheduler = new TransactionalScheduler(tm, { concurrency: 1 });
      const blocker = deferred();
      scheduler.define('blocker', () => blocker.promise);
      scheduler.define('write', async (job: JobHandle) => job.db(rows).insert({ text: 'never written' }));
      const first = await tm.run(async () => scheduler.schedule('blocker'));
      const second = await tm.run(async () => scheduler.schedule('write'));
      await until(() => scheduler.stats().pending === 1);
      await scheduler.remove(second);
      assert.deepEqual(await scheduler.getResult(second), { state: 'unknown' });
      blocker.resolve();
      await finished(scheduler, first);
      await until(() => scheduler.stats().running === 0);
      assert.deepEqual(await texts(), []);
    });

    it('a running job is signalled, its writes roll back, and its result is not kept', async () => {
      const scheduler = new TransactionalScheduler(tm);
      const long = removableJob(rows);
      scheduler.define('long', long.run);
      const id = await tm.run(async () => scheduler.schedule('long'));
      await long.started;
      await scheduler.remove(id);
      await until(() => long.reason !== undefined && scheduler.stats().running === 0);
      assert.equal((long.reason as Error).name, 'JobCancelledError');
      assert.deepEqual(await scheduler.getResult(id), { state: 'unknown' });
      assert.deepEqual(await texts(), []);
    });
  });

  describe('events', () => {
    it('succeeded, retried and failed, with attempts and stored errors free of SQL', async () => {
      // The system clock (an auto-advancing one would expire results at once), with short retry delays.
      const retrying = new TransactionManager(knex, { logger: recordingLogger(), delay: { initial: 1 } });
      const scheduler = new TransactionalScheduler(retrying);
      const events: string[] = [];
      scheduler.on('succeeded', (e) => events.push(`succeeded ${e.name} attempt ${e.attempt} run ${e.run} transaction attempt ${e.transactionAttempt}`));
      scheduler.on('retried', (e) => events.push(`retried ${e.name} after transaction attempt ${e.transactionAttempt}: ${(e.error as Error).name}`));
      scheduler.on('failed', (e) => events.push(`failed ${e.name} attempt ${e.attempt} run ${e.run}: ${e.error.name}`));
      scheduler.define('conflictsOnce', async (job: JobHandle) => {
        if (job.transactionAttempt === 1) throw new ConflictError('stale');
        return [job.attempt, job.maxAttempts, job.run, job.transactionAttempt];
      });
      scheduler.define('duplicate', async (job: JobHandle) => {
        await job.db(rows).insert({ text: 'secret-value-123' });
        await job.db(rows).insert({ text: 'secret-value-123' });
      });
      const a = await retrying.run(async () => scheduler.schedule('conflictsOnce'));
      assert.deepEqual(await finished(scheduler, a), { state: 'done', value: [1, 1, 1, 2] }, 'kept in memory, a job has one attempt and one run');
      const b = await retrying.run(async () => scheduler.schedule('duplicate'));
      const failure = await finished(scheduler, b);
      assert.ok(failure.state === 'failed');
      assert.deepEqual(events, [
        'retried conflictsOnce after transaction attempt 1: ConflictError',
        'succeeded conflictsOnce attempt 1 run 1 transaction attempt 2',
        'failed duplicate attempt 1 run 1: DatabaseError',
      ]);
      assert.doesNotMatch(failure.error.message, /insert into/i, 'the stored error carries no SQL');
      assert.match(failure.error.message, /duplicate|unique/i);
      assert.deepEqual(await texts(), []);
    });
  });

  describe('expiry of unfetched results', () => {
    it('forgets a result nobody fetched once ttl is over, by its own timer', async () => {
      const scheduler = new TransactionalScheduler(tm, { ttl: 60_000 });
      scheduler.define('answer', () => 42);
      const id = await tm.run(async () => scheduler.schedule('answer'));
      assert.deepEqual(await finished(scheduler, id), { state: 'done', value: 42 });
      await clock.advance(59_999);
      assert.deepEqual(await scheduler.getResult(id), { state: 'done', value: 42 });
      assert.equal(scheduler.stats().done, 1);
      await clock.advance(1);
      assert.equal(scheduler.stats().done, 0, 'the timer freed it without any getResult call');
      assert.deepEqual(await scheduler.getResult(id), { state: 'unknown' });
      assert.equal(clock.pending, 0, 'no timer is left once nothing is kept');
    });
  });

  describe('stop()', () => {
    it('waits for running jobs until the deadline, then aborts them; jobs not started fail', async () => {
      const scheduler = new TransactionalScheduler(tm, { concurrency: 1 });
      scheduler.define('endless', async (job: JobHandle) => {
        await job.db(rows).insert({ text: 'rolled back at stop' });
        await untilAborted(job.signal);
      });
      scheduler.define('next', () => 'never runs');
      const running = await tm.run(async () => scheduler.schedule('endless'));
      const waiting = await tm.run(async () => scheduler.schedule('next'));
      await until(() => scheduler.stats().running === 1);

      let stopped = false;
      const stopping = scheduler.stop({ timeout: 5_000 }).then(() => (stopped = true));
      await clock.advance(4_999);
      assert.equal(stopped, false, 'still within the deadline');
      assert.deepEqual(await scheduler.getResult(waiting), {
        state: 'failed',
        error: { name: 'SchedulerStoppedError', message: 'job next never started: the scheduler has been stopped' },
      });
      await clock.advance(1);
      await stopping;
      assert.deepEqual(await scheduler.getResult(running), {
        state: 'failed',
        error: { name: 'SchedulerStoppedError', message: "job endless outlived stop()'s deadline: the scheduler has been stopped" },
      });
      assert.deepEqual(await texts(), []);
      await tm.run(async () => assert.throws(() => scheduler.schedule('next'), { name: 'SchedulerStoppedError' }));
    });

    it('returns as soon as the running jobs end, without waiting for the deadline', async () => {
      const scheduler = new TransactionalScheduler(tm);
      const release = deferred();
      scheduler.define('short', async (job: JobHandle) => {
        await release.promise;
        await job.db(rows).insert({ text: 'committed before stop returns' });
      });
      await tm.run(async () => scheduler.schedule('short'));
      await until(() => scheduler.stats().running === 1);
      const stopping = scheduler.stop({ timeout: 60_000 });
      release.resolve();
      await stopping;
      assert.deepEqual(await texts(), ['committed before stop returns']);
      assert.equal(clock.pending, 0);
    });
  });
});
