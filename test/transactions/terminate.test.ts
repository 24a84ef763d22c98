/**
 * RunOptions.signal ends a call from outside: a function that holds a row lock
 * and never returns has its transaction ended at once (the server rolls back and
 * frees the lock), run() rejects with the signal's reason, no other attempt is
 * made, and the connection and the turn go back.
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { TransactionManager } from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { deferred, recordingLogger } from '../support/helpers.js';
import { createCounter, signalEndsHungTransaction } from './forced-conflicts.js';

eachDialect('ending a transaction from outside', (database) => {
  async function setup(base: string) {
    // SQLite keeps its one connection: a second one in this process would block the event loop on BUSY.
    const knex = database.name === 'sqlite' ? database.knex() : database.knex({ pool: { min: 0, max: 2 } });
    const table = database.table(base);
    await createCounter(knex, table);
    return { knex, table, tm: new TransactionManager(knex, { logger: recordingLogger() }) };
  }

  it('a function that holds a row lock and never returns: its lock is freed, run rejects with the reason', async () => {
    const { knex, table, tm } = await setup('held');
    await signalEndsHungTransaction(database, knex, tm, table);
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
