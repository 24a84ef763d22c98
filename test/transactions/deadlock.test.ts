/**
 * Real deadlocks, forced with two connections that lock two rows in opposite
 * order, and failures at COMMIT time: the transaction manager retries the whole
 * function and every transfer lands exactly once.
 */
import { before, beforeEach, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import { TransactionDoomedError, TransactionManager, type RetryEvent } from '../../lib/index.js';
import { eachDialect, type TestDatabase } from '../support/databases.js';
import { ManualClock, barrier, recordingLogger } from '../support/helpers.js';
import { balances, createAccounts, injectCommitFailure, opposingTransfers, resetAccounts } from './forced-conflicts.js';

function setup(database: TestDatabase) {
  const state = {} as {
    knex: Knex;
    accounts: string;
    journal: string;
    tm: TransactionManager;
    retries: RetryEvent[];
    logger: ReturnType<typeof recordingLogger>;
  };
  before(async () => {
    state.knex = database.knex();
    state.accounts = database.table('accounts');
    state.journal = database.table('journal');
    await createAccounts(state.knex, state.accounts);
    await state.knex.schema.createTable(state.journal, (t) => {
      t.increments('id');
      t.string('entry').notNullable();
      t.integer('attempt').notNullable();
    });
  });
  beforeEach(async () => {
    await state.knex(state.journal).delete();
    await resetAccounts(state.knex, state.accounts);
    state.logger = recordingLogger();
    state.retries = [];
    state.tm = new TransactionManager(state.knex, { logger: state.logger, clock: new ManualClock({ auto: true }) });
    state.tm.onRetry((event) => state.retries.push(event));
  });
  return state;
}

eachDialect(
  'a real deadlock between two transactions',
  (database) => {
    const s = setup(database);

    it('is retried, and both transfers land', async () => {
      const attempts = await opposingTransfers(s.tm, s.accounts);

      assert.deepEqual(attempts.sort(), [1, 2], 'one transaction was the victim and ran twice');
      assert.deepEqual(await balances(s.knex, s.accounts), [110, 90]);
      assert.equal(s.retries.length, 1);
      assert.equal(s.retries[0]!.escalated, true, 'the victim’s retry ran alone');
      const error = s.retries[0]!.error as { errno?: number; code?: string };
      if (database.name === 'mysql') assert.equal(error.errno, 1213);
      else assert.equal(error.code, '40P01');
      assert.match(s.logger.lines.find((l) => l.level === 'warn')!.msg, /^retrying transfer \d->\d after /);
    });

    it('is retried even when the function swallows the deadlock and goes on writing', async () => {
      const bothHoldOneLock = barrier(2);
      const swallowed: unknown[] = [];
      const sentToServer: string[] = [];
      s.knex.on('query', (q: { sql: string }) => sentToServer.push(q.sql));
      const careless = (from: number, to: number) =>
        s.tm.run(async (tx) => {
          await tx.db(s.accounts).where({ id: from }).decrement('balance', 10);
          if (tx.attempt === 1) await bothHoldOneLock.arrive();
          try {
            await tx.db(s.accounts).where({ id: to }).increment('balance', 10);
          } catch (err) {
            swallowed.push(err); // the deadlock: ignored by careless code
          }
          try {
            await tx.db(s.journal).insert({ entry: `${from}->${to}`, attempt: tx.attempt });
          } catch (err) {
            swallowed.push(err); // refused: the database had rolled this attempt back
          }
          return tx.attempt;
        });

      const attempts = await Promise.all([careless(1, 2), careless(2, 1)]);

      assert.deepEqual(attempts.sort(), [1, 2]);
      assert.equal(swallowed.length, 2);
      assert.ok(s.tm.isTransient(swallowed[0]), 'first the deadlock itself');
      assert.ok(swallowed[1] instanceof TransactionDoomedError, 'then the refusal of the next statement');
      // The victim's first attempt left nothing: no journal row, no half transfer.
      const journal = await s.knex(s.journal).orderBy('id');
      assert.equal(journal.length, 2);
      assert.deepEqual(journal.map((r: { attempt: number }) => r.attempt).sort(), [1, 2]);
      assert.deepEqual(await balances(s.knex, s.accounts), [100, 100]);
      const journalInserts = sentToServer.filter((sql) => sql.startsWith('insert into'));
      assert.equal(journalInserts.length, 2, 'the refused insert never reached the server');
    });
  },
  ['mysql', 'postgres'],
);

eachDialect(
  'a failure at COMMIT',
  (database) => {
    const s = setup(database);

    it('goes through the retry classifier: the transaction is run again and lands once', async () => {
      const inject = await injectCommitFailure(database, s.knex, s.accounts);
      const committed: boolean[] = [];
      const escalated: boolean[] = [];
      const attempts = await s.tm.run(async (tx) => {
        escalated.push(tx.escalated);
        tx.afterCommit((ok) => committed.push(ok));
        await tx.db(s.accounts).where({ id: 1 }).decrement('balance', 10);
        await tx.db(s.accounts).where({ id: 2 }).increment('balance', 10);
        inject.arm(tx);
        return tx.attempt;
      });
      await inject.release();
      assert.equal(attempts, 2);
      assert.deepEqual(committed, [false, true], 'after-commit hooks learn of the failed commit');
      assert.deepEqual(await balances(s.knex, s.accounts), [90, 110]);
      assert.equal(s.retries.length, 1);
      assert.ok(s.tm.isTransient(s.retries[0]!.error));
      // 40001 at COMMIT (PostgreSQL), SQLITE_BUSY at COMMIT, Galera's certification failure (MariaDB): escalated too.
      assert.deepEqual(escalated, [false, true]);
      assert.equal(s.retries[0]!.escalated, true);
    });
  },
);
