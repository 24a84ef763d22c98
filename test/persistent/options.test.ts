/**
 * Job, scheduler and worker options are checked where they are given, with
 * bounds a stored run time and a timer can hold; and a run that cannot be re-queued fails
 * for what it is instead of being re-run until its worker counts as lost.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import knexFactory from 'knex';
import type { Knex } from 'knex';
import {
  PersistentTransactionalScheduler,
  TransactionManager,
  TransactionalScheduler,
  type JobOptions,
  type PersistentSchedulerOptions,
  type WorkerOptions,
} from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { finished, recordingLogger } from '../support/helpers.js';

describe('job options are refused where they are given', () => {
  const knex = knexFactory({ client: 'better-sqlite3', connection: { filename: ':memory:' }, useNullAsDefault: true });
  const scheduler = new PersistentTransactionalScheduler(new TransactionManager(knex, { logger: recordingLogger() }));
  after(() => knex.destroy());

  const refusals: [JobOptions, RegExp][] = [
    [{ backoff: { initial: 1e300 } }, /with\(\): backoff.initial must be an integer from 0 to 2147483647, got 1e\+300/],
    [{ backoff: { max: Infinity } }, /backoff.max must be an integer from 0 to 2147483647, got Infinity/],
    [{ backoff: { initial: 1.5 } }, /backoff.initial must be an integer/],
    [{ backoff: { factor: 1e6 } }, /backoff.factor must be from 1 to 1000/],
    [{ backoff: 'fast' as never }, /backoff must be \{ initial\?, factor\?, max\? \}/],
    [{ runAt: new Date(Number.NaN) }, /runAt must be a valid Date/],
    [{ runAt: 1e300 }, /runAt must be a valid Date or ms since the epoch/],
    [{ runAt: -1 }, /runAt must be a valid Date/],
    [{ delay: 1e300 }, /delay must be an integer from 0 to/],
    [{ timeout: 2 ** 31 }, /timeout must be an integer from 1 to 2147483647/],
    [{ lease: 50 }, /lease must be an integer from 100/],
  ];
  for (const [options, message] of refusals) {
    it(`${JSON.stringify(options, (_, v) => (v === Infinity ? 'Infinity' : v))}`, () => {
      assert.throws(() => scheduler.with(options), (err: unknown) => err instanceof TypeError && message.test(err.message));
      assert.throws(() => scheduler.define(`job${Math.random().toString(36).slice(2)}`, async () => 1, options), TypeError);
    });
  }

  it('sane bounds pass: a backoff of up to 24 days, a run time years ahead', () => {
    scheduler.with({ backoff: { initial: 1000, factor: 3, max: 2 ** 31 - 1 }, runAt: new Date('2040-01-01'), timeout: 60_000 });
  });
});

describe('scheduler and worker options are refused where they are given', () => {
  const knex = knexFactory({ client: 'better-sqlite3', connection: { filename: ':memory:' }, useNullAsDefault: true });
  const tm = new TransactionManager(knex, { logger: recordingLogger() });
  const scheduler = new PersistentTransactionalScheduler(tm);
  after(() => knex.destroy());

  const schedulerRefusals: [PersistentSchedulerOptions, RegExp][] = [
    [{ lease: 99 }, /lease \(ms\) must be an integer from 100 to 2147483647, got 99/],
    [{ maxRuns: 0 }, /maxRuns must be an integer from 1 to 2147483647, got 0/],
    [{ concurrency: 2.5 }, /concurrency must be an integer from 1 to 2147483647, got 2.5/],
    [{ ttl: 1.5 }, /ttl \(ms\) must be an integer from 1 to 315360000000, got 1.5/],
    [{ ttl: Infinity }, /ttl \(ms\) must be an integer from 1 to 315360000000, got Infinity/],
    [{ maxArgumentBytes: 0 }, /maxArgumentBytes must be an integer from 1/],
    [{ maxResultBytes: '1mb' as never }, /maxResultBytes must be an integer from 1 to 2147483647, got 1mb/],
  ];
  for (const [options, message] of schedulerRefusals) {
    it(`new TransactionalScheduler(tm, ${JSON.stringify(options, (_, v) => (v === Infinity ? 'Infinity' : v))}) too`, () => {
      if ('lease' in options || 'maxRuns' in options) return; // options of the persistent scheduler only
      assert.throws(() => new TransactionalScheduler(tm, options), (err: unknown) => err instanceof TypeError && message.test(err.message));
    });
  }
  for (const [options, message] of schedulerRefusals) {
    it(`new PersistentTransactionalScheduler(tm, ${JSON.stringify(options)})`, () => {
      assert.throws(() => new PersistentTransactionalScheduler(tm, options), (err: unknown) => err instanceof TypeError && message.test(err.message));
    });
  }

  const workerRefusals: [WorkerOptions, RegExp][] = [
    [{ concurrency: 0 }, /concurrency must be an integer from 1/],
    [{ grace: -1 }, /grace \(ms\) must be an integer from 0 to 2147483647, got -1/],
    [{ minPollInterval: 0 }, /minPollInterval \(ms\) must be an integer from 1/],
    [{ minPollInterval: 100, maxPollInterval: 50 }, /maxPollInterval \(ms\) must be an integer from 100 to 2147483647, got 50/],
    [{ queues: [] }, /queues must name at least one queue/],
  ];
  for (const [options, message] of workerRefusals) {
    it(`scheduler.worker(${JSON.stringify(options)})`, () => {
      assert.throws(() => scheduler.worker(options), (err: unknown) => err instanceof TypeError && message.test(err.message));
    });
  }

  it('a minPollInterval above the default maxPollInterval raises that default with it', () => {
    scheduler.worker({ minPollInterval: 5000 });
  });

  it('stop({ timeout }) is refused unless it is a whole number of ms, before anything stops', async () => {
    const worker = scheduler.worker();
    assert.throws(() => worker.stop({ timeout: -1 }), /stop\(\{ timeout \}\) \(ms\) must be an integer from 0 to 2147483647, got -1/);
    const inMemory = new TransactionalScheduler(tm);
    await assert.rejects(inMemory.stop({ timeout: Number.NaN }), /stop\(\{ timeout \}\) \(ms\) must be an integer from 0/);
    await inMemory.stop();
  });
});

eachDialect(
  'a run that cannot be re-queued',
  (database) => {
    let knex: Knex;
    let prefix: string;
    let scheduler: PersistentTransactionalScheduler;
    const logger = recordingLogger();

    before(async () => {
      knex = database.knex();
      prefix = `${database.table('opt')}_`;
      scheduler = new PersistentTransactionalScheduler(new TransactionManager(knex, { logger }), { tablePrefix: prefix });
      scheduler.define('fails', async () => {
        throw new Error('the job fails');
      });
      await scheduler.migrate();
    });
    after(async () => {
      await knex.schema.dropTableIfExists(`${prefix}jobs`);
      await knex.schema.dropTableIfExists(`${prefix}schema`);
    });

    it('fails with RequeueError naming the stored backoff, not WorkerLostError after many runs', async () => {
      const id = await scheduler.manager.run(async () => scheduler.with({ maxAttempts: 3 }).schedule('fails'));
      // Only a row written behind the library's back can hold such a backoff now.
      await knex(`${prefix}jobs`).where({ id }).update({ backoff: JSON.stringify({ initial: 1e300, factor: 2, max: 1e300 }) });
      const worker = scheduler.worker({ minPollInterval: 20, maxPollInterval: 100 }).start();
      try {
        const result = await finished(scheduler, id);
        assert.equal(result.state, 'failed');
        const error = (result as { error: { name: string; message: string } }).error;
        assert.equal(error.name, 'RequeueError');
        assert.match(error.message, /could not be re-queued: .*backoff .* gives a delay of/);
        assert.equal((await knex(`${prefix}jobs`).where({ id }).first()).runs, 1, 'run once, not until its worker counts as lost');
        assert.ok(logger.lines.some((l) => l.level === 'error' && /could not be re-queued; it fails/.test(l.msg)));
      } finally {
        await worker.stop({ timeout: 1000 });
      }
    });
  },
);
