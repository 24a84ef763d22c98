/**
 * 100,000 jobs scheduled in one transaction commit on every database: the
 * INSERT before COMMIT is split within each database's limits. Measured on 2
 * shared cores: SQLite and MariaDB 5-8 s, PostgreSQL 11-17 s, which is why it
 * runs here and not in `npm test` (test/persistent/limits.test.ts has 5,000).
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import { PersistentTransactionalScheduler, TransactionManager } from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { recordingLogger } from '../support/helpers.js';

const JOBS = 100_000;

eachDialect('100,000 jobs in one transaction', (database) => {
  let knex: Knex;
  let tm: TransactionManager;
  let scheduler: PersistentTransactionalScheduler;
  let prefix: string;

  before(async () => {
    knex = database.knex();
    prefix = `${database.table('many')}_`;
    tm = new TransactionManager(knex, { logger: recordingLogger() });
    scheduler = new PersistentTransactionalScheduler(tm, { tablePrefix: prefix });
    scheduler.define('noop', async () => undefined);
    await scheduler.migrate();
  });

  after(() => knex.schema.dropTableIfExists(`${prefix}jobs`).dropTableIfExists(`${prefix}schema`));

  it('all commit, and the transaction can still remove one of them before its COMMIT', async () => {
    const [ids, removed] = await tm.run(async () => {
      const ids = Array.from({ length: JOBS }, (_, i) => scheduler.schedule('noop', i, `job ${i}`));
      await scheduler.remove(ids[JOBS / 2]!);
      return [ids, ids[JOBS / 2]!] as const;
    });
    assert.equal(Number((await knex(`${prefix}jobs`).count({ n: '*' }))[0]!.n), JOBS - 1);
    assert.deepEqual(await scheduler.getResult(ids[JOBS - 1]!), { state: 'pending' });
    assert.deepEqual(await scheduler.getResult(removed), { state: 'unknown' });
  });

  if (database.name === 'sqlite') {
    it('remove() of a job not yet written works beside 200,000 others (no spread of the batch into a call)', async () => {
      await tm.run(async (tx) => {
        const ids = Array.from({ length: 2 * JOBS }, (_, i) => scheduler.schedule('noop', i));
        await scheduler.remove(ids[0]!);
        assert.deepEqual(await scheduler.getResult(ids[0]!), { state: 'unknown' });
        assert.deepEqual(await scheduler.getResult(ids[1]!), { state: 'pending' });
        tx.setRollbackOnly(); // nothing to write: the batch is what is tested
      });
    });
  }
});
