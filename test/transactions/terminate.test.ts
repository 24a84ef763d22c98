/**
 * RunOptions.signal ends a call from outside: a function that holds a row lock
 * and never returns has its transaction ended at once (the server rolls back and
 * frees the lock), run() rejects with the signal's reason, no other attempt is
 * made, and the connection and the turn go back.
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { ConflictError, TransactionManager, type Transaction } from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { deferred, recordingLogger } from '../support/helpers.js';

eachDialect('ending a transaction from outside', (database) => {
  async function setup(base: string) {
    // SQLite keeps its one connection: a second one in this process would block the event loop on BUSY.
    const knex = database.name === 'sqlite' ? database.knex() : database.knex({ pool: { min: 0, max: 2 } });
    const table = database.table(base);
    await knex.schema.createTable(table, (t) => {
      t.integer('id').primary();
      t.integer('n').notNullable();
    });
    await knex(table).insert({ id: 1, n: 0 });
    return { knex, table, tm: new TransactionManager(knex, { logger: recordingLogger() }) };
  }

  it('a function that holds a row lock and never returns: its lock is freed, run rejects with the reason', async () => {
    const { knex, table, tm } = await setup('held');
    const holds = deferred();
    const controller = new AbortController();
    let attempts = 0;
    let seenSignal: AbortSignal | undefined;
    const hung = tm.run(
      async (tx: Transaction) => {
        attempts++;
        seenSignal = tx.signal;
        await tx.db(table).where({ id: 1 }).increment('n', 100);
        holds.resolve();
        await new Promise(() => undefined); // never settles
      },
      { signal: controller.signal },
    );
    await holds.promise;
    const reason = new Error('deadline passed');
    controller.abort(reason);
    await assert.rejects(hung, (err) => err === reason);
    assert.equal(attempts, 1);
    assert.equal(seenSignal?.aborted, true, 'tx.signal tells the function');
    // The row is free at once and nothing of the hung transaction is kept (a held lock would fail here).
    const other = new TransactionManager(knex, { logger: recordingLogger() });
    await other.run(async (tx) => {
      if (database.name === 'mysql') await tx.db.raw('SET SESSION innodb_lock_wait_timeout = 2');
      if (database.name === 'postgres') await tx.db.raw("SET LOCAL lock_timeout = '2s'");
      await tx.db(table).where({ id: 1 }).increment('n', 1);
    });
    assert.equal((await knex(table).first('n')).n, 1);
    // The turn and the connection came back: an escalated attempt (which waits for all turns) and two more run.
    await tm.run(async (tx) => {
      if (tx.attempt === 1) throw new ConflictError();
      await tx.db(table).where({ id: 1 }).increment('n', 1);
    });
    await Promise.all([1, 2].map(() => tm.run((tx) => tx.db(table).where({ id: 1 }).first())));
  });

  it('a signal aborted before the function queries: its statements fail with the reason, nothing begins', async () => {
    const { table, tm } = await setup('held_before');
    const controller = new AbortController();
    const mayQuery = deferred();
    const started = deferred();
    const run = tm.run(
      async (tx) => {
        started.resolve();
        await mayQuery.promise;
        return tx.db(table).first();
      },
      { signal: controller.signal },
    );
    await started.promise;
    controller.abort(new Error('client went away'));
    mayQuery.resolve();
    await assert.rejects(run, /client went away/);
    await assert.rejects(tm.run(() => 1, { signal: controller.signal }), /client went away/, 'an aborted signal refuses at once');
  });
});
