/**
 * Many jobs in one transaction: the INSERT before COMMIT is split within each
 * database's limits (SQLite's 500 rows, PostgreSQL's 65,535 bound values,
 * MySQL's max_allowed_packet), so the transaction commits. And errors that can
 * never succeed on retry are not reported as "database unavailable".
 * (100,000 jobs in one transaction: test/reliability/many-jobs.test.ts.)
 */
import { after, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import knexFactory, { type Knex } from 'knex';
import { PersistentTransactionalScheduler, TransactionManager } from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { recordingLogger } from '../support/helpers.js';

eachDialect('many jobs in one transaction', (database) => {
  let knex: Knex;
  let tm: TransactionManager;
  let scheduler: PersistentTransactionalScheduler;
  let prefix: string;
  let jobs: string;

  before(async () => {
    knex = database.knex();
    prefix = `${database.table('lim')}_`;
    jobs = `${prefix}jobs`;
    tm = new TransactionManager(knex, { logger: recordingLogger() });
    scheduler = new PersistentTransactionalScheduler(tm, { tablePrefix: prefix });
    scheduler.define('noop', async () => undefined);
    await scheduler.migrate();
  });

  after(() => knex.schema.dropTableIfExists(jobs).dropTableIfExists(`${prefix}schema`));

  beforeEach(() => knex(jobs).delete());

  const count = async () => Number((await knex(jobs).count({ n: '*' }))[0]!.n);

  it('5,000 jobs commit: more than SQLite’s 500 rows and PostgreSQL’s 65,535 bound values take per INSERT', async () => {
    const ids = await tm.run(async () => Array.from({ length: 5000 }, (_, i) => scheduler.schedule('noop', i, `job ${i}`)));
    assert.equal(await count(), 5000);
    assert.equal(new Set(ids).size, 5000);
    for (const id of [ids[0]!, ids[2500]!, ids[4999]!]) assert.deepEqual(await scheduler.getResult(id), { state: 'pending' });
  });

  it('300 jobs of 60 KB arguments commit: 18 MB, more than MariaDB’s max_allowed_packet (16 MiB) in one statement', async () => {
    const big = 'ü'.repeat(30_000); // 60,000 bytes as UTF-8
    const ids = await tm.run(async () => Array.from({ length: 300 }, (_, i) => scheduler.schedule('noop', i, big)));
    assert.equal(await count(), 300);
    const last = (await knex(jobs).where({ id: ids[299]! }).first('args')) as { args: string };
    assert.ok(last.args.includes(big), 'the arguments are stored whole');
  });
});

describe('errors that can never succeed on retry are not "unavailable"', () => {
  const error = (code: string, fields: Record<string, unknown> = {}) => Object.assign(new Error(`failure ${code}`), { code, ...fields });

  it('PostgreSQL class 08: protocol violations and rejected connections are verdicts; lost or failed connections are outages', () => {
    const tm = new TransactionManager(knexFactory({ client: 'pg' }));
    for (const code of ['08P01', '08004']) {
      assert.equal(tm.isUnavailable(error(code)), false, `${code} is not unavailable`);
      assert.equal(tm.dialect.isConnectionFailure(error(code)), false, `${code} is not a broken connection`);
    }
    for (const code of ['08000', '08001', '08003', '08006', '08007', '57P01']) {
      assert.equal(tm.isUnavailable(error(code)), true, `${code} is unavailable`);
      assert.equal(tm.dialect.isConnectionFailure(error(code)), true, `${code} is a broken connection`);
    }
  });

  eachDialect(
    'a statement with more than 65,535 parameters',
    (database) => {
      it('fails with 08P01, which is neither transient nor unavailable', async () => {
        const knex = database.knex();
        const tm = new TransactionManager(knex, { logger: recordingLogger() });
        const values = Array.from({ length: 70_000 }, (_, i) => i);
        const err = await knex.raw(`SELECT 1 WHERE 1 IN (${values.map(() => '?').join(', ')})`, values).then(
          () => assert.fail('PostgreSQL took 70,000 parameters'),
          (e: unknown) => e,
        );
        assert.equal((err as { code?: string }).code, '08P01');
        assert.equal(tm.isUnavailable(err), false);
        assert.equal(tm.isTransient(err), false);
        assert.deepEqual((await knex.raw('SELECT 1 AS one')).rows, [{ one: 1 }], 'the pool still works');
      });
    },
    ['postgres'],
  );
});
