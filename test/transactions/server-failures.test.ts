/**
 * Failures only a server can produce: a connection lost during COMMIT (outcome
 * unknown: never retried), one lost before it (the database is unavailable) and
 * lock wait timeouts (retried only when enabled).
 */
import { before, beforeEach, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import { CommitOutcomeUnknownError, TransactionManager } from '../../lib/index.js';
import { eachDialect, killSessionOf } from '../support/databases.js';
import { ManualClock, recordingLogger } from '../support/helpers.js';

eachDialect(
  'server failures',
  (database) => {
    let knex: Knex;
    let admin: Knex;
    let table: string;

    before(async () => {
      knex = database.knex();
      admin = database.knex();
      table = database.table('rows');
      await knex.schema.createTable(table, (t) => {
        t.integer('id').primary();
        t.integer('value').notNullable();
      });
    });
    beforeEach(async () => {
      await knex(table).delete();
      await knex(table).insert({ id: 1, value: 0 });
    });

    const manager = (options = {}) =>
      new TransactionManager(knex, { logger: recordingLogger(), clock: new ManualClock({ auto: true }), ...options });

    const killConnectionOf = (db: Knex.Transaction) => killSessionOf(database, admin, db);

    /** The error `promise` rejects with; a resolution fails the test with `why`. */
    const rejectionOf = (promise: Promise<unknown>, why: string) =>
      promise.then(
        () => assert.fail(why),
        (err: unknown) => err,
      );

    it('a connection lost during COMMIT is not retried, and the error says the outcome is unknown', async () => {
      const tm = manager();
      let attempts = 0;
      const error = await rejectionOf(
        tm.run(async (tx) => {
          attempts++;
          await tx.db(table).where({ id: 1 }).increment('value', 1);
          tx.beforeCommit(() => killConnectionOf(tx.db));
        }),
        'the commit cannot have succeeded',
      );
      assert.ok(error instanceof CommitOutcomeUnknownError, `got ${String(error)}`);
      assert.match(error.message, /connection was lost during COMMIT .* unknown whether the transaction committed; it is not retried/);
      assert.ok(error.cause);
      assert.equal(attempts, 1);
      // The broken connection is not reused: the next transaction works.
      await tm.run(async (tx) => tx.db(table).where({ id: 1 }).increment('value', 10));
      assert.equal((await admin(table).where({ id: 1 }).first()).value, 10);
    });

    for (const moment of ['at once', 'after the driver noticed']) {
      it(`a connection killed in the middle of a transaction (${moment}) is "unavailable": not retried, nothing written`, async () => {
        const tm = manager();
        let attempts = 0;
        const error = await rejectionOf(
          tm.run(async (tx) => {
            attempts++;
            await tx.db(table).where({ id: 1 }).increment('value', 1);
            await killConnectionOf(tx.db);
            // node-postgres answers differently once it has seen the socket close: no SQLSTATE, only a message.
            if (moment !== 'at once') await new Promise((resolve) => setTimeout(resolve, 100));
            await tx.db(table).where({ id: 1 }).increment('value', 1);
          }),
          'the killed connection cannot have run the statement',
        );
        assert.equal(tm.isUnavailable(error), true, `not recognised as unavailable: ${String(error)}`);
        assert.equal(tm.isTransient(error), false);
        assert.equal(attempts, 1);
        assert.equal((await admin(table).where({ id: 1 }).first()).value, 0);
        await tm.run(async (tx) => tx.db(table).where({ id: 1 }).increment('value', 10)); // the pool moved on
        assert.equal((await admin(table).where({ id: 1 }).first()).value, 10);
      });
    }

    if (database.name === 'mysql') {
      it('a lock wait timeout (1205) is retried only with retryLockWaitTimeout', async () => {
        const blocker = await admin.transaction();
        await blocker(table).where({ id: 1 }).update({ value: 100 });
        let released: Promise<unknown> | undefined;
        const work = (tm: TransactionManager) =>
          tm.run(async (tx) => {
            await released; // the blocker's ROLLBACK has reached the server
            await tx.db.raw('SET SESSION innodb_lock_wait_timeout = 1');
            await tx.db(table).where({ id: 1 }).increment('value', 1);
            return tx.attempt;
          });
        try {
          await assert.rejects(work(manager()), { errno: 1205 });
          const patient = manager({ retryLockWaitTimeout: true });
          patient.onRetry(() => {
            released = blocker.rollback(); // the blocker gives way after the first timeout
          });
          assert.equal(await work(patient), 2);
        } finally {
          if (!blocker.isCompleted()) await blocker.rollback();
        }
        assert.equal((await admin(table).where({ id: 1 }).first()).value, 1);
      });
    }
  },
  ['mysql', 'postgres'],
);
