/**
 * Stored errors carry no data and no SQL (issue #11, point 11). A failed job's
 * error reaches whoever polls it; a database error is stored as its class, its
 * code and a fixed description, never the driver's message (MariaDB quotes the
 * duplicate value) nor knex's (which starts with the SQL and its bound values).
 * The full text goes to the log. Real errors, from both schedulers, through the
 * job's transaction and through the root knex.
 */
import { after, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import {
  PersistentTransactionalScheduler,
  TransactionDoomedError,
  TransactionManager,
  TransactionalScheduler,
  type JobHandle,
  type ScheduleResult,
  type StoredError,
  type Worker,
} from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { finished, recordingLogger, until } from '../support/helpers.js';

const SECRET = 'victim-4f1c@example.com';

eachDialect('stored errors of database failures', (database) => {
  let knex: Knex;
  let accounts: string;
  let prefix: string;
  let logger: ReturnType<typeof recordingLogger>;
  let tm: TransactionManager;
  let inMemory: TransactionalScheduler;
  let persistent: PersistentTransactionalScheduler;
  let worker: Worker;

  /** What each database calls a duplicate key. */
  const duplicate: Pick<StoredError, 'code' | 'sqlState' | 'errno'> = {
    mysql: { code: 'ER_DUP_ENTRY', sqlState: '23000', errno: 1062 },
    postgres: { code: '23505', sqlState: '23505' },
    sqlite: { code: 'SQLITE_CONSTRAINT_UNIQUE' },
  }[database.name];

  function defineJobs(scheduler: TransactionalScheduler | PersistentTransactionalScheduler) {
    scheduler.define('duplicateThroughJobDb', async (job: JobHandle) => {
      await job.db(accounts).insert({ email: SECRET, balance: 1 });
    });
    scheduler.define('duplicateThroughRootKnex', async () => {
      await scheduler.manager.knex(accounts).insert({ email: SECRET, balance: 1 });
    });
    scheduler.define('quotesDuplicate', async (job: JobHandle) => {
      try {
        await job.db(accounts).insert({ email: SECRET, balance: 1 });
      } catch (err) {
        throw new Error(`could not add the account: ${(err as Error).message}`, { cause: err });
      }
    });
    scheduler.define('doomedByDuplicate', async (job: JobHandle) => {
      try {
        await job.db(accounts).insert({ email: SECRET, balance: 1 });
      } catch (err) {
        throw new TransactionDoomedError(err); // quotes its cause's first line: the SQL, with the value on MariaDB and SQLite
      }
    });
    scheduler.define('wrongTypeThroughRootKnex', async () => {
      await scheduler.manager.knex(accounts).insert({ email: 'another@example.com', balance: SECRET });
    });
  }

  before(async () => {
    knex = database.knex();
    accounts = database.table('accounts');
    prefix = `${database.table('se')}_`;
    await knex.schema.createTable(accounts, (t) => {
      t.increments('id');
      t.string('email').notNullable().unique();
      t.integer('balance').notNullable();
    });
    logger = recordingLogger();
    tm = new TransactionManager(knex, { logger });
    inMemory = new TransactionalScheduler(tm);
    persistent = new PersistentTransactionalScheduler(tm, { tablePrefix: prefix });
    defineJobs(inMemory);
    defineJobs(persistent);
    await persistent.migrate();
    worker = persistent.worker({ minPollInterval: 10, maxPollInterval: 50 }).start();
  });

  after(async () => {
    await worker.stop({ timeout: 1000 });
    await knex.schema.dropTableIfExists(`${prefix}jobs`);
    await knex.schema.dropTableIfExists(`${prefix}schema`);
  });

  beforeEach(async () => {
    await knex(accounts).delete();
    await knex(accounts).insert({ email: SECRET, balance: 0 });
    logger.lines.length = 0;
  });

  /** Asserts that nothing of the data or the SQL is in what a poller (or the jobs table) sees. */
  function assertClean(seen: string) {
    assert.ok(!seen.includes(SECRET), `the secret value is in ${seen}`);
    assert.ok(!seen.includes('victim'), `part of the secret value is in ${seen}`);
    assert.ok(!seen.includes(accounts), `the table's name (so, some SQL) is in ${seen}`);
    assert.doesNotMatch(seen, /\binsert\b|\binto\b|\bvalues\b|\$1|\?/i, `SQL is in ${seen}`);
  }

  /**
   * Asserts that the failure of `id` is logged with the original error: the SQL, and the value (PostgreSQL
   * gives it in `detail`). A worker logs it once the failure has committed, which a poller may see first.
   */
  async function assertLoggedInFull(id: string, value: string) {
    const logged = () => logger.lines.find((l) => l.level === 'error' && l.obj.id === id);
    await until(() => logged() !== undefined, 10_000, `the failure of ${id} to be logged`);
    const line = logged()!;
    const err = line.obj.err as Error & { detail?: string };
    assert.match(err.message, /insert into/i, 'the log has the SQL');
    assert.ok(`${err.message} ${err.detail}`.includes(value), `the log has the value: ${err.message} ${err.detail}`);
  }

  for (const kind of ['in-memory', 'persistent'] as const) {
    describe(`${kind} scheduler`, () => {
      const scheduler = () => (kind === 'in-memory' ? inMemory : persistent);

      for (const job of ['duplicateThroughJobDb', 'duplicateThroughRootKnex']) {
        it(`${job}: the poller gets DatabaseError with the code, without the duplicate value or the SQL; the log keeps them`, async () => {
          const id = await tm.run(async () => scheduler().schedule(job));
          const result = (await finished(scheduler(), id)) as Extract<ScheduleResult, { state: 'failed' }>;
          assert.equal(result.state, 'failed', JSON.stringify(result));
          assert.deepEqual(result.error, {
            name: 'DatabaseError',
            ...duplicate,
            message: `duplicate key: another row already has this value of a unique key (${duplicate.code})`,
          });
          assertClean(JSON.stringify(result));
          if (kind === 'persistent') assertClean((await knex(`${prefix}jobs`).where({ id }).first()).error);
          await assertLoggedInFull(id, SECRET);
          assert.deepEqual(await knex(accounts).pluck('balance'), [0], 'nothing of the job was kept');
        });
      }

      it('an error made from a database error, quoting it, is stored with its description in place of the quote', async () => {
        const description = `duplicate key: another row already has this value of a unique key (${duplicate.code})`;
        const expected: [string, StoredError][] = [
          ['quotesDuplicate', { name: 'Error', message: `could not add the account: ${description}` }],
          [
            'doomedByDuplicate',
            {
              name: 'TransactionDoomedError',
              message: `the database already rolled this transaction back (${description}); no further statement of this attempt is sent, and the whole function will be run again`,
            },
          ],
        ];
        for (const [job, error] of expected) {
          // TransactionDoomedError is transient: the persistent scheduler runs the job again (maxRuns), without waiting long here.
          const id = await tm.run(async () => (kind === 'in-memory' ? inMemory : persistent.with({ backoff: { initial: 10, max: 10 } })).schedule(job));
          const result = await finished(scheduler(), id);
          assert.deepEqual(result, { state: 'failed', error });
          assertClean(JSON.stringify(result));
          await assertLoggedInFull(id, database.name === 'postgres' ? 'duplicate key value' : SECRET);
        }
      });

      it('a value of the wrong type (MariaDB and PostgreSQL quote it in their message) is stored without it', async (t) => {
        if (database.name === 'sqlite') return t.skip('SQLite stores a string in an integer column');
        const id = await tm.run(async () => scheduler().schedule('wrongTypeThroughRootKnex'));
        const result = (await finished(scheduler(), id)) as Extract<ScheduleResult, { state: 'failed' }>;
        assert.equal(result.error.name, 'DatabaseError');
        const expected =
          database.name === 'mysql'
            ? { code: 'ER_TRUNCATED_WRONG_VALUE_FOR_FIELD', sqlState: '22007', errno: 1366 }
            : { code: '22P02', sqlState: '22P02' };
        assert.deepEqual({ code: result.error.code, sqlState: result.error.sqlState, errno: result.error.errno }, { errno: undefined, ...expected });
        assert.match(result.error.message, /^a value does not fit its column/);
        assertClean(JSON.stringify(result));
        await assertLoggedInFull(id, SECRET);
      });
    });
  }
});
