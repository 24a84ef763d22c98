/**
 * The low end of the knex peer range: the other suites run on knex 3; this one
 * runs the transaction manager and the persistent scheduler on knex 2.5 on each
 * database, through every path that uses knex's internals: tx.db and its
 * statements, checkpoints, retries of real conflicts (escalated, with the
 * escalation lock), a transaction ended from outside, the pool's limits, and on
 * PostgreSQL the cancelling of lock waits from a connection outside the pool.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import knex25Module from 'knex25';
import type { Knex } from 'knex';
import { PersistentTransactionalScheduler, TransactionManager, type JobHandle, type RetryEvent } from '../../lib/index.js';
import { eachDialect, type KnexFactory } from '../support/databases.js';
import { finished, recordingLogger } from '../support/helpers.js';
import {
  balances,
  createAccounts,
  createCounter,
  injectCommitFailure,
  lockWaitPreempted,
  opposingTransfers,
  signalEndsHungTransaction,
} from './forced-conflicts.js';

// knex 2.5's typings declare ES exports for its CommonJS module; its `knex` property is the same function either way.
// Its instances are typed as knex 3's, which the library is typed against.
const knex25 = knex25Module.knex as unknown as KnexFactory;
const { version } = createRequire(import.meta.url)('knex25/package.json') as { version: string };

it('the devDependency knex25 is knex 2.5', () => {
  assert.match(version, /^2\.5\./);
});

eachDialect(`knex ${version}: TransactionManager`, (database) => {
  /** A manager on a knex 2.5 instance (SQLite keeps its one connection), recording its retries and log lines. */
  function managerOf(extra: Partial<Knex.Config> = {}) {
    const knex = database.knex(database.name === 'sqlite' ? {} : { pool: { min: 0, max: 4 }, ...extra }, knex25);
    const logger = recordingLogger();
    const tm = new TransactionManager(knex, { logger });
    const retries: RetryEvent[] = [];
    tm.onRetry((event) => retries.push(event));
    return { knex, tm, logger, retries };
  }

  it('runs transactions on tx.db: statements, savepoints, .transacting(), query events, checkpoints and after-commit hooks', async () => {
    const { knex, tm } = managerOf();
    const table = database.table('k25_items');
    await knex.schema.createTable(table, (t) => {
      t.increments('id');
      t.string('name').notNullable();
    });
    const sent: string[] = [];
    knex.on('query', (q: { sql: string }) => sent.push(q.sql));
    const hooks: string[] = [];
    await tm.run(async (tx) => {
      tx.afterCommit((ok, what: string) => hooks.push(`${what}: ${ok}`), 'checkpoint');
      await tx.db(table).insert({ name: 'committed by tx.commit()' });
      await tx.commit();
      await tx.db(table).insert({ name: 'rolled back by tx.abort()' });
      await tx.abort();
      tx.afterCommit((ok, what: string) => hooks.push(`${what}: ${ok}`), 'end');
      await knex(table).insert({ name: 'via transacting' }).transacting(tx.db);
      await assert.rejects(
        tx.db.transaction(async (savepoint) => {
          await savepoint(table).insert({ name: 'rolled back to the savepoint' });
          throw new Error('inner failure');
        }),
        /inner failure/,
      );
      assert.ok(await tx.db.schema.hasTable(table));
    });
    const names = (await knex(table).orderBy('id')).map((r: { name: string }) => r.name);
    assert.deepEqual(names, ['committed by tx.commit()', 'via transacting']);
    assert.deepEqual(hooks, ['checkpoint: true', 'end: true']);
    assert.equal(sent.filter((sql) => sql === 'COMMIT').length, 2, 'the statements the attempt sends itself reach knex’s query events');
  });

  it('retries a failure at COMMIT, escalated, and runs the after-commit hooks of both attempts', async () => {
    const { knex, tm, retries } = managerOf();
    const accounts = database.table('k25_commit');
    await createAccounts(knex, accounts);
    const fault = await injectCommitFailure(database, knex, accounts);
    const committed: boolean[] = [];
    const attempts = await tm.run(async (tx) => {
      tx.afterCommit((ok) => committed.push(ok));
      await tx.db(accounts).where({ id: 1 }).decrement('balance', 10);
      await tx.db(accounts).where({ id: 2 }).increment('balance', 10);
      fault.arm(tx);
      return tx.attempt;
    });
    await fault.release();
    assert.equal(attempts, 2);
    assert.deepEqual(committed, [false, true]);
    assert.deepEqual(await balances(knex, accounts), [90, 110]);
    assert.equal(retries.length, 1);
    assert.equal(retries[0]!.escalated, true);
  });

  it('knows the pool’s size: the contention gate admits no more attempts than there are connections', () => {
    const { tm } = managerOf();
    assert.equal(tm.contention!.concurrencyLimit, database.name === 'sqlite' ? 1 : 4);
  });

  if (database.name === 'sqlite') return; // one connection: no deadlock, no lock held from another connection

  it('retries a real deadlock; the retry runs escalated, with the escalation lock', async () => {
    const { knex, tm, logger, retries } = managerOf();
    const accounts = database.table('k25_deadlock');
    await createAccounts(knex, accounts);
    const attempts = await opposingTransfers(tm, accounts);
    assert.deepEqual(attempts.sort(), [1, 2], 'one transaction was the victim and ran twice');
    assert.deepEqual(await balances(knex, accounts), [110, 90]);
    assert.equal(retries.length, 1);
    assert.equal(retries[0]!.escalated, true);
    assert.deepEqual(
      logger.lines.filter((line) => /escalation lock/.test(line.msg)),
      [],
      'the escalation lock was taken and given back without a hitch',
    );
  });

  it('RunOptions.signal ends a transaction that holds a row lock: the lock, the connection and the turn come back', async () => {
    const { knex, tm } = managerOf({ pool: { min: 0, max: 2 } });
    const table = database.table('k25_held');
    await createCounter(knex, table);
    await signalEndsHungTransaction(database, knex, tm, table);
  });

  if (database.name !== 'postgres') return;

  it('cancels a lock wait in the way of an escalated attempt from a connection outside the pool (PostgreSQL)', async () => {
    const { knex, tm } = managerOf();
    await lockWaitPreempted(tm, knex, database.table('k25_preempt'));
  });
});

eachDialect(`knex ${version}: PersistentTransactionalScheduler`, (database) => {
  let knex: Knex;
  let scheduler: PersistentTransactionalScheduler;
  let prefix: string;

  before(async () => {
    knex = database.knex({}, knex25);
    prefix = `${database.table('k25')}_`;
    scheduler = new PersistentTransactionalScheduler(new TransactionManager(knex, { logger: recordingLogger() }), { tablePrefix: prefix });
    scheduler.define('double', async (job: JobHandle, n: number) => ({ doubled: n * 2, attempt: job.attempt }));
    await scheduler.migrate();
  });
  after(async () => {
    await knex.schema.dropTableIfExists(`${prefix}jobs`).dropTableIfExists(`${prefix}schema`);
  });

  it('migrates its tables and runs a job scheduled in a transaction through a worker', async () => {
    const id = await scheduler.manager.run(async () => scheduler.schedule('double', 21));
    const worker = scheduler.worker({ minPollInterval: 20, maxPollInterval: 100 }).start();
    try {
      assert.deepEqual(await finished(scheduler, id), { state: 'done', value: { doubled: 42, attempt: 1 } });
    } finally {
      await worker.stop({ timeout: 1000 });
    }
  });
});
