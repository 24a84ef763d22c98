/**
 * The persistent scheduler at the edges of its transactions: dedupe keys under
 * MySQL's snapshot reads, schedules after a tx.abort() checkpoint, a job's own
 * COMMIT lost or another COMMIT inside it lost, the re-queue delay's random
 * source, and the knex migration source.
 */
import { before, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import { PersistentTransactionalScheduler, TransactionManager, type JobHandle } from '../../lib/index.js';
import { eachDialect, killSessionOf } from '../support/databases.js';
import { deferred, finished, recordingLogger, until } from '../support/helpers.js';

eachDialect('persistent scheduler at the edges of its transactions', (database) => {
  let knex: Knex;
  let tm: TransactionManager;
  let scheduler: PersistentTransactionalScheduler;
  let prefix: string;

  before(async () => {
    knex = database.knex();
    prefix = `${database.table('rf')}_`;
    tm = new TransactionManager(knex, { logger: recordingLogger() });
    scheduler = new PersistentTransactionalScheduler(tm, { tablePrefix: prefix });
    scheduler.define('echo', async (_job: JobHandle, value: unknown) => value);
    await scheduler.migrate();
  });

  if (database.name !== 'sqlite') {
    it('a dedupe key scheduled by a transaction that began earlier still finds the first id', async () => {
      const snapshotTaken = deferred<void>();
      const firstCommitted = deferred<void>();
      const late = tm.run(async (tx) => {
        await tx.db(`${prefix}jobs`).count({ n: '*' }); // the transaction's snapshot (REPEATABLE READ) starts here
        snapshotTaken.resolve();
        await firstCommitted.promise;
        return [await scheduler.with({ dedupeKey: 'double-click' }).schedule('echo', 'second'), tx.attempt] as const;
      });
      await snapshotTaken.promise;
      const first = await tm.run(() => scheduler.with({ dedupeKey: 'double-click' }).schedule('echo', 'first'));
      firstCommitted.resolve();
      const [id, attempt] = await late;
      assert.equal(id, first);
      assert.equal(attempt, 1, 'found by a locking read, without running the transaction again');
      assert.equal((await knex(`${prefix}jobs`).where({ name: 'echo' })).length, 1);
    });
  }

  it('schedules made after tx.abort() in the same run are kept', async () => {
    const [dropped, kept] = await tm.run(async (tx) => {
      const dropped = scheduler.schedule('echo', 'rolled back');
      await tx.abort();
      return [dropped, scheduler.schedule('echo', 'kept')];
    });
    assert.deepEqual(await scheduler.getResult(dropped!), { state: 'unknown' });
    assert.deepEqual(await scheduler.getResult(kept!), { state: 'pending' });
    const worker = scheduler.worker({ minPollInterval: 10, maxPollInterval: 50 }).start();
    try {
      assert.deepEqual(await finished(scheduler, kept!), { state: 'done', value: 'kept' });
    } finally {
      await worker.stop();
    }
  });

  it('a migration step cut short (MySQL commits each ALTER) is taken up where it stopped', async () => {
    // As a process that died after step 5's columns, before its index and its record, leaves the tables.
    await knex.schema.alterTable(`${prefix}jobs`, (t) => t.dropIndex(['request_id'], `${prefix}jobs_request`));
    await knex.schema.alterTable(`${prefix}workers`, (t) => t.dropColumn('finished'));
    await knex(`${prefix}schema`).where({ version: 5 }).delete();
    assert.equal(await tm.dialect.hasIndex(knex, `${prefix}jobs`, `${prefix}jobs_request`), false);
    await scheduler.migrate();
    assert.equal(await tm.dialect.hasIndex(knex, `${prefix}jobs`, `${prefix}jobs_request`), true);
    assert.equal(await knex.schema.hasColumn(`${prefix}workers`, 'finished'), true);
    assert.deepEqual((await knex(`${prefix}schema`).where({ version: 5 })).length, 1);
  });

  it('knex’s migrator with migrationSource() creates the same tables, and migrate() agrees', async () => {
    const other = new PersistentTransactionalScheduler(tm, { tablePrefix: `${prefix}mig_` });
    const migrations = { migrationSource: other.migrationSource(), tableName: `${prefix}knex_migrations` };
    try {
      const [, first] = (await knex.migrate.latest(migrations)) as [number, string[]];
      assert.equal(first.length, 5, 'one migration per schema step');
      const [, again] = (await knex.migrate.latest(migrations)) as [number, string[]];
      assert.deepEqual(again, [], 'nothing left to run');
      await other.migrate(); // recorded: a no-op
      assert.ok(await knex.schema.hasTable(`${prefix}mig_jobs`));
      await knex.migrate.rollback(migrations, true);
      assert.equal(await knex.schema.hasTable(`${prefix}mig_jobs`), false);
      assert.equal(await knex.schema.hasTable(`${prefix}mig_recurring`), false);
      assert.equal(await knex.schema.hasTable(`${prefix}mig_queues`), false);
      assert.equal(await knex.schema.hasTable(`${prefix}mig_workers`), false);
    } finally {
      await knex.schema.dropTableIfExists(`${prefix}knex_migrations_lock`);
      await knex.schema.dropTableIfExists(`${prefix}knex_migrations`);
      await knex.schema.dropTableIfExists(`${prefix}mig_jobs`);
      await knex.schema.dropTableIfExists(`${prefix}mig_schema`);
      await knex.schema.dropTableIfExists(`${prefix}mig_recurring`);
      await knex.schema.dropTableIfExists(`${prefix}mig_queues`);
      await knex.schema.dropTableIfExists(`${prefix}mig_workers`);
    }
  });

  if (database.name !== 'sqlite') {
    let admin: Knex; // kills the job's session from outside
    before(() => {
      admin = database.knex();
    });

    it('a job whose COMMIT lost its connection goes back to the queue, does not fail, and its writes land once', async () => {
      const effects = database.table('rf_effects');
      await knex.schema.createTable(effects, (t) => t.string('job_id', 64));
      scheduler.define('cut-at-commit', async (job: JobHandle) => {
        await job.db(effects).insert({ job_id: job.id });
        if (job.run === 1) tm.current!.beforeCommit(() => killSessionOf(database, admin, job.db));
        return [job.attempt, job.run];
      });
      const id = await tm.run(() => scheduler.with({ maxAttempts: 1 }).schedule('cut-at-commit'));
      const worker = scheduler.worker({ minPollInterval: 10, maxPollInterval: 50 }).start();
      try {
        // A second run of the same attempt: a COMMIT whose outcome is unknown is not the job's failure.
        assert.deepEqual(await finished(scheduler, id), { state: 'done', value: [1, 2] });
      } finally {
        await worker.stop();
      }
      assert.deepEqual(await knex(effects).where({ job_id: id }).pluck('job_id'), [id]);
    });

    it('a lost COMMIT of other work inside a job is the job’s failure, not a reason to run it again', async () => {
      let runs = 0;
      scheduler.define('inner-commit-cut', async () => {
        runs++;
        await tm.outside(() =>
          tm.run(async (tx) => {
            await tx.db.raw('SELECT 1');
            tx.beforeCommit(() => killSessionOf(database, admin, tx.db));
          }),
        );
      });
      const id = await tm.run(() => scheduler.with({ maxAttempts: 1 }).schedule('inner-commit-cut'));
      const worker = scheduler.worker({ minPollInterval: 10, maxPollInterval: 50 }).start();
      try {
        const result = await finished(scheduler, id);
        assert.equal(result.state, 'failed');
        assert.equal(result.state === 'failed' && result.error.name, 'CommitOutcomeUnknownError');
        assert.equal(runs, 1, 'maxAttempts: 1 and no re-queue');
      } finally {
        await worker.stop();
      }
    });
  }

  it('a failed run is re-queued after a delay drawn from the manager’s random source', async () => {
    const seeded = new TransactionManager(knex, { logger: recordingLogger(), random: () => 0.5 });
    const requeueing = new PersistentTransactionalScheduler(seeded, { tablePrefix: prefix });
    requeueing.define('fails', async () => {
      throw new Error('fails on purpose');
    });
    const bound = 600_000; // uniform(0, bound) with the source fixed at 0.5: exactly half of it
    const id = await seeded.run(() => requeueing.with({ maxAttempts: 2, backoff: { initial: bound, max: bound } }).schedule('fails'));
    const before = Date.now();
    const worker = requeueing.worker({ minPollInterval: 10, maxPollInterval: 50 }).start();
    let row: { failures: number; run_at: number | string } | undefined;
    try {
      await until(async () => (row = await knex(`${prefix}jobs`).where({ id }).first())!.failures === 1, 10_000, 'the first run to fail');
    } finally {
      await worker.stop();
    }
    const after = Date.now();
    const runAt = Number(row!.run_at);
    assert.ok(runAt >= before + bound / 2 && runAt <= after + bound / 2, `re-queued for ${runAt - before} ms after the worker started`);
  });

  it('cleanup', async () => {
    await knex.schema.dropTableIfExists(`${prefix}jobs`);
    await knex.schema.dropTableIfExists(`${prefix}schema`);
  });
});
