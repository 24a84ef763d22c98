/**
 * Conflicts forced for real, for the suites that test how transactions are
 * retried: a deadlock between two transfers, a failure at COMMIT, a lock wait
 * behind a row held from outside the manager; and the scenarios built on them
 * that run on each knex version (contention, terminate and knex-versions).
 */
import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import { ConflictError, TransactionManager, type RetryEvent, type Transaction } from '../../lib/index.js';
import type { TestDatabase } from '../support/databases.js';
import { barrier, deferred, recordingLogger, until } from '../support/helpers.js';

/** Throws a conflict on its first attempt only, before touching the database: its second attempt is escalated. */
export function conflictOnce<T>(fn: (tx: Transaction) => Promise<T>) {
  return async (tx: Transaction) => {
    if (tx.attempt === 1) throw new ConflictError('the first attempt collides');
    return fn(tx);
  };
}

/** Creates `table`, a one-row counter: id 1, n 0. */
export async function createCounter(knex: Knex, table: string): Promise<void> {
  await knex.schema.createTable(table, (t) => {
    t.integer('id').primary();
    t.integer('n').notNullable();
  });
  await knex(table).insert({ id: 1, n: 0 });
}

/** Creates `table` with accounts 1 and 2 (balance 100 each); call resetAccounts to fill it again. */
export async function createAccounts(knex: Knex, table: string): Promise<void> {
  await knex.schema.createTable(table, (t) => {
    t.integer('id').primary();
    t.integer('balance').notNullable();
  });
  await resetAccounts(knex, table);
}

export async function resetAccounts(knex: Knex, table: string): Promise<void> {
  await knex(table).delete();
  await knex(table).insert([
    { id: 1, balance: 100 },
    { id: 2, balance: 100 },
  ]);
}

export async function balances(knex: Knex, table: string): Promise<number[]> {
  return (await knex(table).orderBy('id')).map((r: { balance: number }) => r.balance);
}

/**
 * Two transfers between accounts 1 and 2 in opposite order (10 from 1 to 2, 20
 * from 2 to 1): on their first attempts each takes its first row lock and waits
 * until the other holds its own, so they deadlock (MySQL/MariaDB, PostgreSQL).
 * Resolves to the attempt each committed in.
 */
export function opposingTransfers(tm: TransactionManager, table: string): Promise<number[]> {
  const bothHoldOneLock = barrier(2);
  const transfer = (from: number, to: number, amount: number) =>
    tm.run(
      async (tx) => {
        await tx.db(table).where({ id: from }).decrement('balance', amount);
        if (tx.attempt === 1) await bothHoldOneLock.arrive();
        await tx.db(table).where({ id: to }).increment('balance', amount);
        return tx.attempt;
      },
      { name: `transfer ${from}->${to}` },
    );
  return Promise.all([transfer(1, 2, 10), transfer(2, 1, 20)]);
}

export interface CommitFault {
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
export async function injectCommitFailure(database: TestDatabase, knex: Knex, table: string): Promise<CommitFault> {
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

/**
 * PostgreSQL: a one-row counter `table` (n = 0), a transaction outside the
 * manager holding that row, and `lockWaitShown()`: resolves once a statement is
 * shown waiting for a lock.
 */
export async function counterHeldOutside(knex: Knex, table: string) {
  await createCounter(knex, table);
  const release = deferred();
  const holds = deferred();
  const blocker = knex.transaction(async (trx) => {
    await trx(table).where({ id: 1 }).increment('n', 100);
    holds.resolve();
    await release.promise;
  });
  await holds.promise;
  const lockWaitShown = () =>
    until(
      async () => (await knex.raw("SELECT COUNT(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock'")).rows[0].n > 0,
      10_000,
      'the ordinary attempt to wait for the row lock',
    );
  const increment = (by: number) => (tx: Transaction) => tx.db(table).where({ id: 1 }).increment('n', by);
  const endBlocker = () => {
    release.resolve();
    return blocker;
  };
  return { lockWaitShown, increment, endBlocker };
}

/**
 * PostgreSQL: an ordinary attempt of `tm` waits for the row of counterHeldOutside
 * on `table`; an escalated attempt comes, and the manager cancels that lock wait
 * from a connection outside the pool. Asserts that the ordinary attempt was
 * cancelled once and ran again escalated, that its retry names the preemption, and
 * that every increment committed once.
 */
export async function lockWaitPreempted(tm: TransactionManager, knex: Knex, table: string): Promise<void> {
  const { lockWaitShown, increment, endBlocker } = await counterHeldOutside(knex, table);
  const retries: RetryEvent[] = [];
  const stopListening = tm.onRetry((event) => retries.push(event));
  try {
    const ordinaryAttempts: boolean[] = [];
    const ordinary = tm.run(async (tx) => {
      ordinaryAttempts.push(tx.escalated);
      await increment(1)(tx);
    });
    await lockWaitShown();
    const escalated = tm.run(conflictOnce(increment(10)));
    await until(() => tm.contention!.preempted >= 1, 10_000, 'the lock wait to be cancelled');
    await endBlocker();
    await Promise.all([ordinary, escalated]);

    assert.deepEqual(ordinaryAttempts, [false, true], 'cancelled once, then run escalated');
    assert.equal((await knex(table).first('n')).n, 111, 'every increment committed once');
    const preempted = retries.find((r) => (r.error as Error).name === 'PreemptedError');
    assert.ok(preempted, 'the retry names the preemption');
    assert.equal(preempted.escalated, true);
  } finally {
    stopListening();
  }
}

/**
 * RunOptions.signal ends a hung transaction from outside: a function of `tm`
 * increments the counter `table` (see createCounter), so holds its row lock, and
 * never returns; the signal is aborted. Asserts that run() rejects with the
 * signal's reason after one attempt, that tx.signal told the function, that the
 * row is free at once and the increment rolled back, and that the turns and the
 * connections came back: an escalated attempt (which waits for every turn) and
 * then two at once (a pool of two needs both connections) run.
 */
export async function signalEndsHungTransaction(database: TestDatabase, knex: Knex, tm: TransactionManager, table: string): Promise<void> {
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
  assert.equal((await knex(table).first('n')).n, 1, 'the ended transaction’s increment was rolled back');
  await tm.run(conflictOnce((tx) => tx.db(table).where({ id: 1 }).increment('n', 1)));
  await Promise.all([1, 2].map(() => tm.run((tx) => tx.db(table).where({ id: 1 }).increment('n', 1))));
  assert.equal((await knex(table).first('n')).n, 4);
}
