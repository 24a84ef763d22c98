/** The persistent scheduler's `queues` option is checked where it is given. (The limits themselves, across three worker processes: test/reliability/quotas-processes.test.ts.) */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import knexFactory from 'knex';
import { PersistentTransactionalScheduler, TransactionManager, type PersistentSchedulerOptions } from '../../lib/index.js';
import { recordingLogger } from '../support/helpers.js';

describe('the queues option is refused where it is given', () => {
  const knex = knexFactory({ client: 'better-sqlite3', connection: { filename: ':memory:' }, useNullAsDefault: true });
  const tm = new TransactionManager(knex, { logger: recordingLogger() });
  after(() => knex.destroy());

  const refusals: [unknown, RegExp][] = [
    ['reports', /^queues must be an object of queue names to \{ concurrency\?, concurrencyPerKey\?, rate\? \}, got reports$/],
    [[{ concurrency: 1 }], /^queues must be an object/],
    [{ 'no spaces': { concurrency: 1 } }, /^queues: a queue name is 1-64 letters, digits, _ \. : -, got "no spaces"$/],
    [{ reports: 1 }, /^queues\.reports must be \{ concurrency\?, concurrencyPerKey\?, rate\? \}, got 1$/],
    [{ reports: { concurrency: 0 } }, /^queues\.reports\.concurrency must be an integer from 1 to 2147483647, got 0$/],
    [{ reports: { concurrency: 1.5 } }, /^queues\.reports\.concurrency must be an integer from 1 to 2147483647, got 1\.5$/],
    [{ reports: { concurrency: '1' } }, /^queues\.reports\.concurrency must be an integer from 1 to 2147483647, got 1$/],
    [{ tenants: { concurrencyPerKey: -2 } }, /^queues\.tenants\.concurrencyPerKey must be an integer from 1 to 2147483647, got -2$/],
    [{ tenants: { concurency: 2 } }, /^queues\.tenants has no option "concurency" \(it takes concurrency, concurrencyPerKey, rate\)$/],
    [{ mail: { rate: 10 } }, /^queues\.mail\.rate must be \{ limit, per \} \(claims per ms\), got 10$/],
    [{ mail: { rate: { limit: 10 } } }, /^queues\.mail\.rate\.per \(ms\) must be an integer from 1 to 2147483647, got undefined$/],
    [{ mail: { rate: { limit: 0, per: 1000 } } }, /^queues\.mail\.rate\.limit must be an integer from 1 to 2147483647, got 0$/],
    [{ mail: { rate: { limit: 1, per: 2 ** 31 } } }, /^queues\.mail\.rate\.per \(ms\) must be an integer from 1 to 2147483647, got 2147483648$/],
    [{ mail: { rate: { limit: 1, per: 1000, burst: 3 } } }, /^queues\.mail\.rate has no option "burst" \(it takes limit, per\)$/],
  ];
  for (const [queues, message] of refusals) {
    it(JSON.stringify(queues), () => {
      assert.throws(
        () => new PersistentTransactionalScheduler(tm, { queues } as PersistentSchedulerOptions),
        (err: unknown) => err instanceof TypeError && message.test(err.message),
      );
    });
  }

  it('limits that make sense pass', () => {
    new PersistentTransactionalScheduler(tm, {
      queues: { reports: { concurrency: 1 }, tenants: { concurrency: 10, concurrencyPerKey: 2 }, mail: { rate: { limit: 100, per: 60_000 } }, other: {} },
    });
  });
});
