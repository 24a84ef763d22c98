/**
 * Real deadlocks, forced with two connections that lock two rows in opposite
 * order, and failures at COMMIT time: the transaction manager retries the whole
 * function and every transfer lands exactly once.
 */
import { before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import { TransactionDoomedError, TransactionManager, type RetryEvent, type Transaction } from '../../lib/index.js';
import { eachDialect, type TestDatabase } from '../support/databases.js';
import { ManualClock, barrier, recordingLogger } from '../support/helpers.js';

async function createAccounts(knex: Knex, table: string) {
  await knex.schema.createTable(table, (t) => {
    t.integer('id').primary();
    t.integer('balance').notNullable();
  });
}

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
    await state.knex(state.accounts).delete();
    await state.knex(state.accounts).insert([
      { id: 1, balance: 100 },
      { id: 2, balance: 100 },
    ]);
    state.logger = recordingLogger();
    state.retries = [];
    state.tm = new TransactionManager(state.knex, { logger: state.logger, clock: new ManualClock({ auto: true }) });
    state.tm.onRetry((event) => state.retries.push(event));
  });
  return state;
}

async function balances(knex: Knex, table: string) {
  return (await knex(table).orderBy('id')).map((r: { balance: number }) => r.balance);
}

eachDialect(
  'a real deadlock between two transactions',
  (database) => {
    const s = setup(database);

    it('is retried, and both transfers land', async () => {
      const bothHoldOneLock = barrier(2);
      const transfer = (from: number, to: number, amount: number) =>
        s.tm.run(
          async (tx) => {
            await tx.db(s.accounts).where({ id: from }).decrement('balance', amount);
            if (tx.attempt === 1) await bothHoldOneLock.arrive();
            await tx.db(s.accounts).where({ id: to }).increment('balance', amount);
            return tx.attempt;
          },
          { name: `transfer ${from}->${to}` },
        );

      const attempts = await Promise.all([transfer(1, 2, 10), transfer(2, 1, 20)]);

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

interface CommitFault {
  /** Makes the COMMIT of this transaction fail, if it is the first attempt. */
  arm(tx: Transaction): void;
  release(): Promise<void>;
}

/**
 * A transient error at COMMIT, as real as each database allows:
 * - PostgreSQL: a deferred constraint trigger raises SQLSTATE 40001 during COMMIT
 *   (once, counted by a sequence, which a rollback does not undo);
 * - SQLite: a second connection holds a read lock, so COMMIT cannot take its
 *   exclusive lock and fails with SQLITE_BUSY after the busy timeout;
 * - MariaDB has no commit-time checks outside Galera, so the fault is injected at
 *   the driver: COMMIT is replaced by a real ROLLBACK and the error Galera sends
 *   for a certification failure (errno 1213, SQLSTATE 40001).
 */
async function injectCommitFailure(database: TestDatabase, knex: Knex, table: string): Promise<CommitFault> {
  if (database.name === 'postgres') {
    const seq = `${table}_fail_seq`;
    await knex.raw(`CREATE SEQUENCE ${seq}`);
    await knex.raw(`
      CREATE FUNCTION ${table}_fail_once() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF nextval('${seq}') = 1 THEN
          RAISE EXCEPTION 'could not serialize access (injected at commit)' USING ERRCODE = '40001';
        END IF;
        RETURN NULL;
      END $$`);
    await knex.raw(`
      CREATE CONSTRAINT TRIGGER ${table}_fail_at_commit AFTER UPDATE ON ${table}
      DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.id = 1) EXECUTE FUNCTION ${table}_fail_once()`);
    return {
      arm: () => undefined,
      release: async () => {
        await knex.raw(`DROP TRIGGER ${table}_fail_at_commit ON ${table}`);
        await knex.raw(`DROP FUNCTION ${table}_fail_once()`);
        await knex.raw(`DROP SEQUENCE ${seq}`);
      },
    };
  }
  if (database.name === 'sqlite') {
    const { default: Database } = await import('better-sqlite3');
    const filename = (database.config.connection as { filename: string }).filename;
    const reader = new Database(filename);
    await knex.raw('PRAGMA busy_timeout = 50'); // the pool's only connection: fail fast instead of after 5 s
    return {
      arm: (tx) => {
        if (tx.attempt !== 1) return;
        reader.prepare('BEGIN').run();
        reader.prepare(`SELECT * FROM ${table}`).all(); // a SHARED lock, held until the reader's ROLLBACK
        tx.afterCommit(() => reader.prepare('ROLLBACK').run());
      },
      release: async () => {
        reader.close();
      },
    };
  }
  const client = knex.client as { _query(c: unknown, o: { sql: string }): Promise<unknown> };
  const original = client._query;
  return {
    arm: (tx) => {
      if (tx.attempt !== 1) return;
      client._query = async function (this: unknown, connection, obj) {
        if (obj.sql !== 'COMMIT') return original.call(this, connection, obj);
        client._query = original;
        await original.call(this, connection, { sql: 'ROLLBACK' });
        throw Object.assign(new Error('Deadlock found when trying to get lock; try restarting transaction'), {
          code: 'ER_LOCK_DEADLOCK',
          errno: 1213,
          sqlState: '40001',
        });
      };
    },
    release: async () => {
      client._query = original;
    },
  };
}
