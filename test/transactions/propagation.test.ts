/**
 * The current transaction travels with the async context: 50 interleaved runs
 * each see only their own transaction across awaits, timers and knex query
 * builders, and none is handed out after it ended.
 */
import { before, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Knex } from 'knex';
import { TransactionManager, type Transaction } from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { barrier, deferred } from '../support/helpers.js';

eachDialect('propagation of the current transaction', (database) => {
  let knex: Knex;
  let table: string;
  let tm: TransactionManager;

  before(async () => {
    knex = database.knex();
    table = database.table('marks');
    await knex.schema.createTable(table, (t) => {
      t.increments('id');
      t.integer('run').notNullable();
    });
    tm = new TransactionManager(knex);
  });

  it('50 interleaved runs each see only their own transaction', async () => {
    const runs = 50;
    // SQLite has one connection: runs that write wait for it, so there only the
    // first write is interleaved; the servers interleave everything.
    const allStarted = barrier(runs);
    const lateTimers: Promise<Transaction | undefined>[] = [];
    const nested = tm.wrap(async function nested() {
      return tm.current;
    });

    const results = await Promise.all(
      Array.from({ length: runs }, (_, run) =>
        tm.run(async (tx) => {
          const seen: (Transaction | undefined)[] = [];
          await allStarted.arrive(); // every run has begun before any goes on
          seen.push(tm.current);
          await sleep(Math.random() * 5);
          seen.push(await new Promise<Transaction | undefined>((r) => setTimeout(() => r(tm.current), Math.random() * 5)));
          seen.push(await new Promise<Transaction | undefined>((r) => setImmediate(() => r(tm.current))));
          await tm.current!.db(table).insert({ run });
          seen.push(tm.current);
          seen.push(await tm.current!.db(table).where({ run }).then(() => tm.current));
          seen.push(await nested());
          // Only this run's uncommitted row is visible through the current transaction.
          const visible = await tm.current!.db(table).where({ run }).count({ n: '*' }).first();
          // A timer that fires after the run has ended must not find its transaction.
          const late = deferred<Transaction | undefined>();
          setTimeout(() => late.resolve(tm.current), 30);
          lateTimers.push(late.promise);
          return { tx, seen, visible: Number(visible!.n) };
        }),
      ),
    );

    for (const { tx, seen, visible } of results) {
      assert.equal(seen.length, 6);
      for (const current of seen) assert.equal(current, tx);
      assert.equal(visible, 1);
    }
    assert.equal(new Set(results.map((r) => r.tx)).size, runs, 'every run had a transaction of its own');
    assert.equal(tm.current, undefined);
    for (const late of await Promise.all(lateTimers)) assert.equal(late, undefined);
    const total = await knex(table).count({ n: '*' }).first();
    assert.equal(Number(total!.n), runs);
  });

  it('a transaction is not handed out once it has ended, even to code that kept it', async () => {
    let kept: Transaction | undefined;
    await tm.run(async (tx) => {
      kept = tx;
      tx.afterCommit(() => assert.equal(tm.current, undefined, 'after-commit hooks run outside the transaction'));
    });
    assert.equal(tm.current, undefined);
    await assert.rejects(kept!.db(table).select(), { name: 'TransactionEndedError' });
    assert.throws(() => kept!.afterCommit(() => undefined), { name: 'TransactionEndedError' });
  });

  it('runs of two managers do not join each other', async () => {
    const other = new TransactionManager(knex);
    await tm.run(async (outer) => {
      assert.equal(other.current, undefined);
      await other.run(async (inner) => {
        assert.notEqual(inner, outer);
        assert.equal(tm.current, outer);
        assert.equal(other.current, inner);
      });
    });
  });
});
