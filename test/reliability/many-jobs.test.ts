/**
 * 100,000 jobs scheduled in one transaction commit on every database: the
 * INSERT before COMMIT is split within each database's limits. Measured on 2
 * shared cores: SQLite and MariaDB 5-8 s, PostgreSQL 11-17 s, which is why it
 * runs here and not in `npm test` (test/persistent/limits.test.ts has 5,000).
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { eachDialect } from '../support/databases.js';
import { persistentSuite } from '../support/persistent-suite.js';

const JOBS = 100_000;

eachDialect('100,000 jobs in one transaction', (database) => {
  const suite = persistentSuite(database, 'many', (scheduler) => scheduler.define('noop', async () => undefined));

  it('all commit, and the transaction can still remove one of them before its COMMIT', async () => {
    const [ids, removed] = await suite.tm.run(async () => {
      const ids = Array.from({ length: JOBS }, (_, i) => suite.scheduler.schedule('noop', i, `job ${i}`));
      await suite.scheduler.remove(ids[JOBS / 2]!);
      return [ids, ids[JOBS / 2]!] as const;
    });
    assert.equal(Number((await suite.knex(`${suite.prefix}jobs`).count({ n: '*' }))[0]!.n), JOBS - 1);
    assert.deepEqual(await suite.scheduler.getResult(ids[JOBS - 1]!), { state: 'pending' });
    assert.deepEqual(await suite.scheduler.getResult(removed), { state: 'unknown' });
  });

  if (database.name === 'sqlite') {
    it('remove() of a job not yet written works beside 200,000 others (no spread of the batch into a call)', async () => {
      await suite.tm.run(async (tx) => {
        const ids = Array.from({ length: 2 * JOBS }, (_, i) => suite.scheduler.schedule('noop', i));
        await suite.scheduler.remove(ids[0]!);
        assert.deepEqual(await suite.scheduler.getResult(ids[0]!), { state: 'unknown' });
        assert.deepEqual(await suite.scheduler.getResult(ids[1]!), { state: 'pending' });
        tx.setRollbackOnly(); // nothing to write: the batch is what is tested
      });
    });
  }
});
