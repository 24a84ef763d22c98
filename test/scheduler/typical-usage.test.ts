/**
 * The original package's "Typical Usage Example": a request schedules an operation with a
 * persistent context, changes the data after scheduling, commits; the job sees
 * the committed change in a transaction of its own; a follow-up request polls.
 */
import { before, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import { TransactionManager, TransactionalScheduler, type JobHandle, type PersistentContext, type Transaction } from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { finished, recordingLogger } from '../support/helpers.js';

eachDialect('the typical usage example', (database) => {
  let knex: Knex;
  let apps: string;
  let tm: TransactionManager;
  let scheduler: TransactionalScheduler;

  before(async () => {
    knex = database.knex();
    apps = database.table('apps');
    await knex.schema.createTable(apps, (t) => {
      t.integer('id').primary();
      t.integer('x').notNullable();
    });
    await knex(apps).insert({ id: 1, x: 0 });
    tm = new TransactionManager(knex, { logger: recordingLogger() });
    scheduler = new TransactionalScheduler(tm, { entities: { [apps]: 'id' } });
  });

  it('the job sees what the request committed, including changes after schedule(), in its own transaction', async () => {
    let requestTx!: Transaction;
    let requestApp!: { x: number };
    let requestTxId: string | undefined;
    const seenByJob: { db?: unknown; txId?: string; requestDbError?: unknown; app?: unknown } = {};
    // PostgreSQL numbers every transaction that asks; InnoDB's equivalent is only
    // visible through a cached information_schema table, so there the check is
    // that the request's knex is closed to the job.
    const postgresTxId = async (db: Knex.Transaction) =>
      database.name === 'postgres' ? String((await db.raw('SELECT txid_current() AS id')).rows[0].id) : undefined;

    scheduler.define('asynchronousOperation', async (job: JobHandle, context: PersistentContext) => {
      seenByJob.db = job.db;
      seenByJob.txId = await postgresTxId(job.db);
      seenByJob.app = await context.get(0);
      seenByJob.requestDbError = await requestTx.db(apps).first().then(
        () => undefined,
        (err: unknown) => err,
      );
      return [(await context.get<{ x: number }>('param')).x, (await context.get<{ x: number }>(0)).x];
    });

    // The request.
    const sid = await tm.run(async (tx) => {
      requestTx = tx;
      const app = await scheduler.load<{ x: number }>(apps, 1);
      requestApp = app;
      const id = scheduler.schedule('asynchronousOperation', scheduler.context([app], { param: app }));
      await tx.db(apps).where({ id: 1 }).update({ x: 1 }); // app.x = 1, after schedule()
      requestTxId = await postgresTxId(tx.db);
      return id;
    });
    assert.match(sid, /^[0-9a-f]{32}$/);

    // The follow-up request polls until the operation is complete, then commits (which deletes the result).
    await finished(scheduler, sid);
    const result = await tm.run(() => scheduler.getResult(sid));
    assert.deepEqual(result, { state: 'done', value: [1, 1] });
    assert.deepEqual(await scheduler.getResult(sid), { state: 'unknown' });

    assert.notEqual(seenByJob.db, requestTx.db, 'the job has a db of its own');
    assert.equal((seenByJob.requestDbError as Error).name, 'TransactionEndedError', "the request's db is closed to the job");
    assert.notEqual(seenByJob.app, requestApp, 'the job re-loaded the entity instead of sharing the request’s object');
    assert.equal(requestApp.x, 0);
    assert.deepEqual(seenByJob.app, { id: 1, x: 1 });
    if (database.name === 'postgres') assert.notEqual(seenByJob.txId, requestTxId, 'another database transaction');
  });
});
