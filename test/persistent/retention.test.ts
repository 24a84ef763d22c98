/**
 * What stays of finished jobs, and where each came from, on every database.
 * By default a done job's row goes once its result is fetched, and a failed
 * one's stays until an operator retries or removes it; `retention` keeps done
 * rows for a time, fetched or not, and can let failed ones go. Each job records
 * the request that scheduled it (looked up by request id) and the attempt of
 * that request that committed it. The registry carries each process's finished
 * jobs per minute, counted once per process.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PersistentTransactionalScheduler, TransientError, type JobHandle, type Worker } from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { finished, recordingLogger, until } from '../support/helpers.js';
import { FinishedHistory, sumHours } from '../../lib/scheduler/finished-history.js';
import { persistentSuite } from '../support/persistent-suite.js';

const HOUR = 3_600_000;
const KEEP_DONE = 2 * HOUR; // longer than the ttl (an hour): only the fetch sets this expiry

eachDialect('finished jobs: retention and lineage', (database) => {
  const define = (scheduler: PersistentTransactionalScheduler) => {
    scheduler.define('ok', async (_job: JobHandle, n: number) => n);
    scheduler.define('fail', async () => {
      throw new RangeError('fails on purpose');
    });
  };
  const suite = persistentSuite(database, 'retain', define);
  let keeping: PersistentTransactionalScheduler; // the same tables, with a retention
  let workers: Worker[];

  before(() => {
    keeping = new PersistentTransactionalScheduler(suite.tm, { tablePrefix: suite.prefix, retention: { done: KEEP_DONE, failed: 0 } });
    define(keeping);
    // Two workers in one process: its counts reach the registry twice, and are counted once.
    workers = [0, 1].map(() => suite.scheduler.worker({ minPollInterval: 10, maxPollInterval: 20 }).start());
  });
  after(() => Promise.all(workers.map((w) => w.stop())));

  const row = (id: string) => suite.knex(`${suite.prefix}jobs`).where({ id }).first('state', 'expires_at', 'finished_at');
  const fetch = (scheduler: PersistentTransactionalScheduler, id: string) => suite.tm.run(() => scheduler.getResult(id));
  const fetched = async (scheduler: PersistentTransactionalScheduler, id: string) => {
    await finished(scheduler, id);
    const result = await fetch(scheduler, id);
    await new Promise((r) => setTimeout(r, 50)); // the delete follows the fetching transaction's commit
    return result;
  };

  it('by default: a fetched done result goes, a failed job stays, fetched or not, until it is retried', async () => {
    const [done, failed] = await suite.tm.run(async () => [suite.scheduler.schedule('ok', 1), suite.scheduler.schedule('fail')]);
    assert.deepEqual(await fetched(suite.scheduler, done!), { state: 'done', value: 1 });
    await until(async () => (await row(done!)) === undefined, 5000, 'the fetched done row to go');
    const failure = await fetched(suite.scheduler, failed!);
    assert.equal(failure.state, 'failed');
    const kept = await row(failed!);
    assert.equal(kept?.state, 'failed');
    assert.equal(kept?.expires_at, null, 'kept until acted on');
    assert.equal((await fetch(suite.scheduler, failed!)).state, 'failed', 'its owner still sees it');
    assert.equal(await suite.scheduler.admin.retry(failed!), 1);
    await until(async () => (await row(failed!))?.state === 'failed' && (await suite.scheduler.admin.get(failed!))!.runs === 1, 5000, 'the retried run');
  });

  it('with a retention, a done row stays after it is fetched, for as long as the retention says; a failed one goes', async () => {
    const [done, failed] = await suite.tm.run(async () => [keeping.schedule('ok', 2), keeping.schedule('fail')]);
    // Both finish under the suite's workers, whose scheduler keeps failed rows: the retention of the fetch is `keeping`'s.
    assert.deepEqual(await fetched(keeping, done!), { state: 'done', value: 2 });
    await until(async () => Number((await row(done!))?.expires_at) === Number((await row(done!))?.finished_at) + KEEP_DONE, 5000, 'the fetch to set the expiry');
    assert.equal((await row(done!))?.state, 'done', 'the fetched row stays, until its retention ends');
    const logger = suite.tm.logger as ReturnType<typeof recordingLogger>;
    assert.deepEqual(logger.lines.filter((line) => line.level === 'warn' && /fetched result/.test(line.msg)), [], 'no fetch failed to record');
    assert.deepEqual(await fetch(keeping, done!), { state: 'done', value: 2 }, 'fetched again within its retention');
    assert.equal((await fetched(keeping, failed!)).state, 'failed');
    await until(async () => (await row(failed!)) === undefined, 5000, 'the fetched failed row to go (failed: 0)');
  });

  it('records the request and the attempt that committed each job, under interleaved retried requests', async () => {
    const requests = Array.from({ length: 8 }, (_, i) => ({ requestId: `retain-req-${i}`, retried: i % 2 === 1 }));
    const ids = await Promise.all(
      requests.map(({ requestId, retried }) =>
        suite.tm.run(
          async (tx): Promise<string> => {
            const id = suite.scheduler.schedule('ok', 3);
            await new Promise((r) => setTimeout(r, 5)); // the requests interleave
            if (retried && tx.attempt === 1) throw new TransientError('a conflict, as a deadlock would be');
            return id;
          },
          { metadata: { user: 'carol', note: 'POST /retain', extension: { requestId } } },
        ),
      ),
    );
    for (const [i, { requestId, retried }] of requests.entries()) {
      const jobs = (await suite.scheduler.admin.find({ requestId })).jobs;
      assert.deepEqual(jobs.map((j) => j.id), [ids[i]], `only the committed attempt's job of ${requestId}`);
      const detail = await suite.scheduler.admin.get(ids[i]!);
      assert.equal(detail?.committedAttempt, retried ? 2 : 1);
      assert.equal(detail?.requestId, requestId);
      assert.equal(detail?.note, 'POST /retain');
      assert.ok(detail!.committedAt! >= detail!.createdAt, 'written at the commit, after schedule()');
    }
    assert.deepEqual((await suite.scheduler.admin.find({ requestId: 'no-such-request' })).jobs, []);
  });

  it('counts finished jobs per minute in the registry, once per process, skipping what it cannot read', async () => {
    const ids = await suite.tm.run(async () => [...Array.from({ length: 5 }, (_, i) => suite.scheduler.schedule('ok', i)), suite.scheduler.schedule('fail')]);
    for (const id of ids) await finished(suite.scheduler, id);
    await suite.knex(`${suite.prefix}workers`).insert({ id: 'garbled', host: 'elsewhere', pid: 1, queues: '[]', concurrency: 1, started_at: Date.now(), heartbeat_at: Date.now(), finished: '{"minute": "x"' });
    // The heartbeat (every 5 s) carries the counts; both workers of this process write them. An earlier
    // test's job may still finish meanwhile, so the registry is compared with this process's counts as
    // they are at that moment.
    const sum = (list: number[]) => list.reduce((a, b) => a + b, 0);
    const counted = (runs: Record<string, { done: number; failed: number }>, state: 'done' | 'failed') => Object.values(runs).reduce((n, q) => n + q[state], 0);
    let hour = await suite.scheduler.admin.finishedLastHour();
    await until(
      async () => {
        const { runs } = await suite.scheduler.metrics(); // this process's runs
        hour = await suite.scheduler.admin.finishedLastHour();
        return sum(hour.done) === counted(runs, 'done') && sum(hour.failed) === counted(runs, 'failed') && sum(hour.failed) > 0;
      },
      15_000,
      'a heartbeat with the counts',
    );
    assert.equal(hour.done.length, 60);
    assert.ok(sum(hour.done) >= 5, 'the five done jobs are counted');
    assert.ok(hour.done[59]! + hour.done[58]! > 0, 'in the last minutes');
  });

  it('refuses a retention it cannot keep, saying what to give', () => {
    assert.throws(() => new PersistentTransactionalScheduler(suite.tm, { retention: { done: -1 } }), /retention.done \(ms\) must be an integer from 0/);
    assert.throws(() => new PersistentTransactionalScheduler(suite.tm, { retention: { failed: 1.5 } }), /retention.failed \(ms\) must be an integer/);
    assert.throws(() => new PersistentTransactionalScheduler(suite.tm, { retention: { kept: 1 } as never }), /retention takes done and failed, not "kept"/);
    assert.throws(() => new PersistentTransactionalScheduler(suite.tm, { retention: { done: null } as never }), /retention.done \(ms\) must be an integer from 0/);
    assert.throws(() => new PersistentTransactionalScheduler(suite.tm, { retention: [] as never }), /retention must be an object like/);
  });
});

describe('finished jobs per minute', () => {
  const MINUTE = 60_000;
  const t0 = Date.UTC(2026, 11, 2, 10, 0, 0);
  const sum = (list: number[]) => list.reduce((a, b) => a + b, 0);

  it('moves the counts on with the minutes, and drops those older than an hour', () => {
    const history = new FinishedHistory();
    history.count('done', t0);
    history.count('failed', t0 + 10);
    history.count('done', t0 + 2 * MINUTE);
    const hour = history.at(t0 + 2 * MINUTE + 5);
    assert.deepEqual([hour.done[57], hour.failed[57], hour.done[59]], [1, 1, 1]);
    assert.equal(hour.minute, t0 + 2 * MINUTE);
    assert.deepEqual(sum(history.at(t0 + 61 * MINUTE).done), 1, 'the first minute has left the hour');
    assert.deepEqual(sum(history.at(t0 + 200 * MINUTE).done), 0);
  });

  it('sums schedulers apart, a writer whose clock is ahead in the last minute, and skips what does not read', () => {
    const behind = new FinishedHistory();
    behind.count('done', t0 - MINUTE);
    const ahead = new FinishedHistory();
    ahead.count('done', t0 + MINUTE + 200); // 200 ms past the next minute, while the reader is at t0 + 59.9 s
    ahead.count('failed', t0 + MINUTE + 200);
    const total = sumHours([behind.at(t0), ahead.at(t0 + MINUTE + 200), { minute: 'x' }, null, { minute: t0, done: [1], failed: [] }], t0 + MINUTE - 100);
    assert.equal(total.minute, t0);
    assert.deepEqual([total.done[58], total.done[59], total.failed[59]], [1, 1, 1]);
    assert.equal(sum(total.done), 2);
  });
});
