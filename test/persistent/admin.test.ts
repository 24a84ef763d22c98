/**
 * `scheduler.admin`: what an operator does to jobs, on every database. Jobs
 * scheduled by "requests" (transactions with a user, a note and a request id)
 * are found by state, queue, name, owner and creation time, page by page
 * without a gap or a repeat; one is shown whole with its arguments redacted and
 * the request it came from; failed ones are retried (twice at once: each job
 * once) and then succeed; a delayed one runs now; done ones are removed by a
 * filter. Bad filters are refused with what to give.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import type { JobHandle, PersistentTransactionalScheduler, Worker } from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { until } from '../support/helpers.js';
import { persistentSuite } from '../support/persistent-suite.js';

eachDialect('scheduler.admin', (database) => {
  const flaky = new Map<number, number>();
  const suite = persistentSuite(database, 'admin', (scheduler) => {
    scheduler.define('send', async (_job: JobHandle, message: { to: string; password: string }) => ({ sentTo: message.to, token: 'secret-token' }));
    scheduler.define('flaky', async (_job: JobHandle, n: number) => {
      flaky.set(n, (flaky.get(n) ?? 0) + 1);
      if (flaky.get(n) === 1) throw new RangeError(`flaky ${n} fails its first run`);
      return n;
    });
  });
  let worker: Worker;
  let scheduler: PersistentTransactionalScheduler;
  const ids: Record<string, string[]> = { send: [], flaky: [] };
  let delayed: string;

  before(async () => {
    scheduler = suite.scheduler;
    // Six "requests", interleaved, by two users: each schedules a send and a flaky job.
    await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        suite.tm.run(
          async () => {
            ids.send!.push(scheduler.schedule('send', { to: `user${i}@example.com`, password: `pw${i}` }));
            ids.flaky!.push(scheduler.with({ queue: 'reports' }).schedule('flaky', i));
          },
          { metadata: { user: i % 2 === 0 ? 'alice' : 'bob', note: `POST /send/${i}`, extension: { requestId: `req-${i}` } } },
        ),
      ),
    );
    delayed = await suite.tm.run(async () => scheduler.with({ delay: 3_600_000 }).schedule('send', { to: 'later@example.com', password: 'pw-later' }));
    worker = scheduler.worker({ queues: ['default', 'reports'], concurrency: 4, minPollInterval: 10, maxPollInterval: 20 }).start();
    await until(async () => (await scheduler.admin.find({ state: 'failed' })).jobs.length === 6 && (await scheduler.admin.find({ state: 'done' })).jobs.length === 6, 15_000, 'the first runs');
  });
  after(() => worker.stop());

  it('finds jobs by state, queue, name, owner and creation time', async () => {
    const idsOf = async (filter: Parameters<typeof scheduler.admin.find>[0]) => (await scheduler.admin.find(filter)).jobs.map((j) => j.id).sort();
    assert.deepEqual(await idsOf({ state: 'failed' }), [...ids.flaky!].sort());
    assert.deepEqual(await idsOf({ queue: 'reports' }), [...ids.flaky!].sort());
    assert.deepEqual(await idsOf({ name: 'send', state: 'done' }), [...ids.send!].sort());
    assert.equal((await idsOf({ owner: 'alice' })).length, 6);
    assert.deepEqual(await idsOf({ state: 'pending' }), [delayed]);
    assert.deepEqual(await idsOf({ since: Date.now() + 60_000 }), []);
    const [failed] = (await scheduler.admin.find({ state: 'failed', owner: 'bob' })).jobs;
    assert.match(failed?.note ?? '', /^POST \/send\/[135]$/);
    assert.equal(failed?.requestId, `req-${failed?.note?.split('/')[2]}`, 'the request it came from');
    assert.equal(failed?.runs, 1);
  });

  it('pages through all jobs, newest first, without a gap or a repeat', async () => {
    const seen: string[] = [];
    let after: string | undefined;
    do {
      const page = await scheduler.admin.find({}, { limit: 5, ...(after === undefined ? {} : { after }) });
      assert.ok(page.jobs.length <= 5);
      seen.push(...page.jobs.map((j) => j.id));
      after = page.next;
    } while (after);
    assert.equal(seen.length, 13);
    assert.equal(new Set(seen).size, 13);
  });

  it('shows one job whole, with the named fields redacted everywhere', async () => {
    const id = ids.send![0]!;
    const detail = await scheduler.admin.get(id, { redact: ['PassWord', 'token', 'note'] }); // names match regardless of case
    assert.deepEqual(detail?.args, [{ to: 'user0@example.com', password: '[redacted]' }]);
    assert.deepEqual(detail?.result, { sentTo: 'user0@example.com', token: '[redacted]' });
    assert.equal(detail?.meta.user, 'alice');
    assert.equal(detail?.note, '[redacted]');
    assert.equal(detail?.meta.note, '[redacted]');
    assert.doesNotMatch(JSON.stringify(detail), /pw0|secret-token/);
    const failed = await scheduler.admin.get(ids.flaky![0]!);
    assert.deepEqual(failed?.error, { name: 'RangeError', message: 'flaky 0 fails its first run' });
    assert.equal(await scheduler.admin.get('0'.repeat(32)), undefined);
    assert.equal(await scheduler.admin.get('not an id'), undefined);
  });

  it('retries failed jobs, each once even when asked twice at once, and they succeed', async () => {
    const [one, all] = await Promise.all([scheduler.admin.retry(ids.flaky![0]!), scheduler.admin.retryAll({ queue: 'reports' })]);
    assert.equal(one + all, 6, 'every failed job retried once');
    await until(async () => (await scheduler.admin.find({ queue: 'reports', state: 'done' })).jobs.length === 6, 15_000, 'the retried jobs');
    assert.deepEqual([...flaky.values()], [2, 2, 2, 2, 2, 2]);
    const retried = (await scheduler.admin.find({ queue: 'reports' })).jobs;
    assert.deepEqual(retried.map((j) => [j.runs, j.failures]), retried.map(() => [1, 0]), 'a retried job starts its counts afresh (its budget for crashes too)');
    assert.equal(await scheduler.admin.retryAll({ state: 'failed' }), 0);
  });

  it('runs a delayed job now, and removes done jobs by a filter', async () => {
    assert.equal(await scheduler.admin.runNow(delayed), 1);
    await until(async () => (await scheduler.admin.get(delayed))?.state === 'done', 15_000, 'the delayed job');
    assert.equal(await scheduler.admin.runNow(delayed), 0, 'not pending any more');
    const batch = await suite.tm.run(async () => scheduler.serial(scheduler.job('send', { to: 'x@example.com', password: 'pw-x' })));
    assert.equal(await scheduler.admin.removeAll({ state: 'waiting' }), 0, 'a batch is removed whole, by scheduler.remove(id), not by a filter');
    await until(async () => (await scheduler.admin.get(batch))?.state === 'done', 15_000, 'the batch');
    assert.deepEqual((await scheduler.admin.get(batch))?.steps?.map((step) => [step.name, step.state]), [['send', 'done']], 'a batch shows its steps');
    assert.equal((await scheduler.admin.get(delayed))?.steps, undefined, 'a job has none');
    await scheduler.remove(batch);
    assert.equal(await scheduler.admin.removeAll({ name: 'send', state: 'done' }), 7, 'not the batch’s finished step');
    // The removed batch's finished step stays until its expiry, as remove(batchId) leaves finished steps.
    assert.equal((await scheduler.admin.find({ name: 'send' })).jobs.length, 1);
    assert.equal((await scheduler.admin.find({ queue: 'reports' })).jobs.length, 6, 'the others stay');
  });

  it('lists the recurring jobs this process declared, with the last instant fired for and the next', async () => {
    scheduler.recurring('admin-new-year', { cron: '0 0 1 1 *' }, 'send', { to: 'all@example.com', password: 'pw-all' });
    await until(async () => (await scheduler.admin.recurring())[0]?.lastInstant !== null, 15_000, 'its first tick');
    const [status] = await scheduler.admin.recurring();
    assert.equal(status?.key, 'admin-new-year');
    assert.equal(status?.job, 'send');
    assert.equal(status?.cron, '0 0 1 1 *');
    assert.equal(status?.timezone, 'UTC');
    assert.equal(status?.nextInstant, Date.UTC(new Date(Date.now()).getUTCFullYear() + 1, 0, 1));
  });

  it('refuses a filter or a page it cannot use, saying what to give', async () => {
    await assert.rejects(scheduler.admin.find({ state: 'lost' as never }), { name: 'TypeError', message: 'admin.find(filter): state must be one of waiting, pending, running, done, failed, got "lost"' });
    await assert.rejects(scheduler.admin.find({ since: 1.5 }), /since must be ms since the epoch \(an integer\), got 1.5/);
    await assert.rejects(scheduler.admin.find({}, { limit: 501 }), /limit must be an integer from 1 to 500, got 501/);
    await assert.rejects(scheduler.admin.find({}, { after: "1'; drop table x" }), /after must be the `next` of an earlier page/);
    await assert.rejects(scheduler.admin.removeAll({ queue: 'no spaces' }), /admin.removeAll\(filter\): queue must be a queue name/);
    for (const requestId of ['nul\u0000byte', 'x'.repeat(129), '', 'a b']) {
      await assert.rejects(scheduler.admin.find({ requestId }), /requestId must be a request id \(1-128 letters, digits and \._:@\/\+=-\)/);
    }
  });
});
