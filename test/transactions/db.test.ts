/**
 * `tx.db`: a knex instance bound to the transaction, begun lazily, with
 * savepoints, and closed for good once the transaction ends.
 */
import { before, beforeEach, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import { TransactionManager } from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';

eachDialect('tx.db', (database) => {
  let knex: Knex;
  let table: string;
  let tm: TransactionManager;
  let sent: string[] = [];

  before(async () => {
    knex = database.knex();
    table = database.table('items');
    await knex.schema.createTable(table, (t) => {
      t.increments('id');
      t.string('name').notNullable();
    });
    knex.on('query', (q: { sql: string }) => sent.push(q.sql));
    tm = new TransactionManager(knex);
  });

  beforeEach(async () => {
    await knex(table).delete();
    sent = [];
  });

  const names = async () => (await knex(table).orderBy('id')).map((r: { name: string }) => r.name);

  it('sends no BEGIN and takes no connection when the function never queries', async () => {
    const pool = (knex.client as { pool: { numUsed(): number } }).pool;
    const value = await tm.run(async (tx) => {
      assert.equal(pool.numUsed(), 0);
      assert.equal(tx.began, false);
      return 'untouched';
    });
    assert.equal(value, 'untouched');
    assert.deepEqual(sent, []);
  });

  it('begins with the first statement and commits at the end', async () => {
    await tm.run(async (tx) => {
      await tx.db(table).insert({ name: 'a' });
      assert.equal(tx.began, true);
    });
    assert.equal(sent.length, 3);
    assert.match(sent[0]!, /^(BEGIN|START TRANSACTION)/);
    assert.equal(sent[2], 'COMMIT');
    assert.deepEqual(await names(), ['a']);
  });

  it('offers the whole knex API: raw, fn, ref, schema, .transacting(tx.db)', async () => {
    await tm.run(async (tx) => {
      await knex(table).insert({ name: 'via transacting' }).transacting(tx.db);
      await tx.db.raw(`insert into ${table} (name) values (?)`, ['via raw']);
      const [row] = await tx.db(table).select(tx.db.ref('name').as('n')).where('name', 'via raw');
      assert.equal(row.n, 'via raw');
      assert.ok(tx.db.fn.now());
      assert.ok(await tx.db.schema.hasTable(table));
    });
    assert.deepEqual(await names(), ['via transacting', 'via raw']);
  });

  it('tx.db.transaction(fn) runs fn in a savepoint that rolls back alone', async () => {
    await tm.run(async (tx) => {
      await tx.db(table).insert({ name: 'kept' });
      await assert.rejects(
        tx.db.transaction(async (sp) => {
          await sp(table).insert({ name: 'rolled back to the savepoint' });
          throw new Error('inner failure');
        }),
        /inner failure/,
      );
      await tx.db.transaction(async (sp) => sp(table).insert({ name: 'released' }));
    });
    assert.deepEqual(await names(), ['kept', 'released']);
  });

  it('refuses what would end or destroy the transaction behind the manager’s back', async () => {
    await tm.run(async (tx) => {
      assert.throws(() => tx.db.commit(), /tx.commit\(\), tx.abort\(\) or throw/);
      assert.throws(() => tx.db.rollback(), /the transaction manager ends the transaction/);
      assert.throws(() => tx.db.destroy(), /destroy the knex instance given to the TransactionManager/);
    });
  });

  it('query events reach listeners of tx.db and of the knex instance; tx.db listeners stay on tx.db', async () => {
    const onTx: string[] = [];
    const rootListeners = knex.listenerCount('query');
    await tm.run(async (tx) => {
      tx.db.on('query', (q: { sql: string }) => onTx.push(q.sql));
      await tx.db(table).insert({ name: 'x' });
    });
    await tm.run(async (tx) => tx.db(table).insert({ name: 'y' }));
    assert.equal(onTx.length, 3, 'BEGIN, insert and COMMIT of the first transaction only');
    assert.equal(sent.length, 6, 'the knex instance saw both transactions');
    assert.equal(knex.listenerCount('query'), rootListeners);
  });

  it('tx.commit() and tx.abort() end the database transaction and go on in a fresh one', async () => {
    const committedBatches: number[] = [];
    await tm.run(async (tx) => {
      for (let batch = 1; batch <= 3; batch++) {
        tx.afterCommit((ok, n: number) => ok && committedBatches.push(n), batch);
        await tx.db(table).insert({ name: `batch ${batch}` });
        await tx.commit();
        assert.equal(tx.began, false);
      }
      await tx.db(table).insert({ name: 'discarded' });
      await tx.abort();
      await tx.db(table).insert({ name: 'last' });
    });
    assert.deepEqual(committedBatches, [1, 2, 3]);
    assert.deepEqual(await names(), ['batch 1', 'batch 2', 'batch 3', 'last']);
  });

  it('a statement after the end is refused with a clear error and never sent', async () => {
    let db!: Knex.Transaction;
    await tm.run(async (tx) => {
      db = tx.db;
    });
    sent = [];
    await assert.rejects(db(table).insert({ name: 'too late' }), {
      name: 'TransactionEndedError',
      message: /a statement: this transaction has already ended/,
    });
    assert.deepEqual(sent, []);
  });
});

eachDialect(
  'checkpoints and hooks',
  (database) => {
    it('after tx.commit(), abort hooks registered before it no longer fire; tx.commit() refuses after setRollbackOnly()', async () => {
      const knex = database.knex();
      const tm = new TransactionManager(knex);
      const fired: string[] = [];
      await assert.rejects(
        tm.run(async (tx) => {
          tx.afterAbort(() => fired.push('abort hook of the committed part'));
          await tx.commit();
          tx.afterAbort(() => fired.push('abort hook of the rest'));
          throw new Error('the rest fails');
        }),
        /the rest fails/,
      );
      assert.deepEqual(fired, ['abort hook of the rest']);
      await tm.run(async (tx) => {
        tx.setRollbackOnly();
        await assert.rejects(tx.commit(), /tx.commit\(\) after setRollbackOnly\(\)/);
      });
    });
  },
  ['sqlite'],
);
