/**
 * A schedule's life, step by step, as the original package's doctests walk it:
 * pending until its transaction commits (gone if it aborts), run after commit,
 * its result fetched and consumed by the fetching transaction's commit, and a
 * failing job's writes rolled back. Jobs write to a real database.
 */
import { before, beforeEach, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import { TransactionManager, TransactionalScheduler, type JobHandle } from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { finished, recordingLogger } from '../support/helpers.js';

eachDialect('TransactionalScheduler: a schedule step by step', (database) => {
  let knex: Knex;
  let table: string;
  let tm: TransactionManager;
  let s: TransactionalScheduler;
  let printed: string[];

  before(async () => {
    knex = database.knex();
    table = database.table('shown');
    await knex.schema.createTable(table, (t) => {
      t.increments('id');
      t.string('args').notNullable();
    });
  });

  beforeEach(async () => {
    await knex(table).delete();
    printed = [];
    tm = new TransactionManager(knex, { logger: recordingLogger() });
    s = new TransactionalScheduler(tm);
  });

  async function show(job: JobHandle, ...args: unknown[]) {
    printed.push(`show: ${JSON.stringify(args)}`);
    await job.db(table).insert({ args: JSON.stringify(args) });
    return 'ok';
  }
  const shownRows = async () => (await knex(table)).map((r: { args: string }) => r.args);

  it('a new schedule is pending; an abort deletes it and the job never runs', async () => {
    let sid = '';
    const value = await tm.run(async (tx) => {
      sid = s.schedule(show, 1, 2, { a: 'a' });
      assert.match(sid, /^[0-9a-f]{32}$/);
      assert.deepEqual(await s.getResult(sid), { state: 'pending' });
      tx.setRollbackOnly(); // abort()
      return 'aborted';
    });
    assert.equal(value, 'aborted');
    assert.deepEqual(await s.getResult(sid), { state: 'unknown' });
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(printed, []);
  });

  it('after commit the job runs with its arguments, and getResult returns its result', async () => {
    const sid = await tm.run(async () => s.schedule(show, 1, 2, { a: 'a' }));
    assert.deepEqual(await finished(s, sid), { state: 'done', value: 'ok' });
    assert.deepEqual(printed, ['show: [1,2,{"a":"a"}]']);
    assert.deepEqual(await shownRows(), ['[1,2,{"a":"a"}]']);
  });

  it('a fetched result survives an abort of the fetching transaction, and is deleted by its commit', async () => {
    const sid = await tm.run(async () => s.schedule(show, 1, 2, { a: 'a' }));
    await finished(s, sid);
    await tm.run(async (tx) => {
      assert.deepEqual(await s.getResult(sid), { state: 'done', value: 'ok' });
      tx.setRollbackOnly(); // abort()
    });
    await tm.run(async () => assert.deepEqual(await s.getResult(sid), { state: 'done', value: 'ok' })); // commit()
    assert.deepEqual(await s.getResult(sid), { state: 'unknown' });
  });

  it('a job that raises gives a failed result, and its writes are rolled back', async () => {
    const sid = await tm.run(async () =>
      s.schedule(async function exc(job: JobHandle) {
        await job.db(table).insert({ args: 'written, then rolled back' });
        throw new Error('raised by the job');
      }),
    );
    assert.deepEqual(await finished(s, sid), { state: 'failed', error: { name: 'Error', message: 'raised by the job' } });
    assert.deepEqual(await shownRows(), []);
  });
});
