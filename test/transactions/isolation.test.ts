/**
 * RunOptions.isolationLevel sets the level of the transaction it begins:
 * under READ COMMITTED a second read sees a row another transaction committed
 * meanwhile; under REPEATABLE READ it does not.
 */
import { before, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import { TransactionManager, type IsolationLevel } from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';

eachDialect(
  'isolation levels',
  (database) => {
    let knex: Knex;
    let other: Knex;
    let table: string;
    let tm: TransactionManager;

    before(async () => {
      knex = database.knex();
      other = database.knex();
      table = database.table('iso');
      await knex.schema.createTable(table, (t) => t.increments('id'));
      tm = new TransactionManager(knex);
    });

    const count = async (db: Knex | Knex.Transaction) => Number((await db(table).count({ n: '*' }).first())!.n);

    async function secondReadSeesCommit(isolationLevel: IsolationLevel): Promise<boolean> {
      return tm.run(
        async (tx) => {
          const first = await count(tx.db);
          await other(table).insert({}); // committed by another connection between the two reads
          return (await count(tx.db)) === first + 1;
        },
        { isolationLevel },
      );
    }

    it('read committed sees a concurrent commit; repeatable read does not', async () => {
      assert.equal(await secondReadSeesCommit('read committed'), true);
      assert.equal(await secondReadSeesCommit('repeatable read'), false);
      assert.equal(await secondReadSeesCommit('read committed'), true, 'the level is per transaction');
    });
  },
  ['mysql', 'postgres'],
);

eachDialect('isolation level values', (database) => {
  it('only the documented levels are accepted: the level is part of the BEGIN statement', async () => {
    const knex = database.knex();
    const table = database.table('iso_injection');
    await knex.schema.createTable(table, (t) => t.increments('id'));
    const tm = new TransactionManager(knex);
    for (const level of [`read committed; insert into ${table} default values`, 'READ COMMITTED', 'snapshot', 1]) {
      await assert.rejects(
        tm.run((tx) => tx.db(table).count(), { isolationLevel: level as IsolationLevel }),
        (err: unknown) => err instanceof TypeError && /isolationLevel must be one of 'read committed', 'repeatable read', 'serializable'/.test(err.message),
      );
    }
    assert.equal(Number((await knex(table).count({ n: '*' }).first())!.n), 0, 'nothing was inserted');
  });
});
