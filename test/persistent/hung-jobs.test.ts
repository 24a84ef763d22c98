/**
 * A job that never settles and ignores its signal is ended from outside once its
 * signal has been aborted (timeout, remove(), stop()) and the worker's grace has
 * passed: its connection is closed, so the database rolls back and frees its row
 * locks; its slot is free again and its lease is no longer renewed. The CLI
 * exits within --stop-timeout plus --grace, and at once on a second signal.
 */
import { after, before, beforeEach, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import { PersistentTransactionalScheduler, TransactionManager, type JobHandle, type Worker } from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { finished, recordingLogger, until } from '../support/helpers.js';
import { fixtureEnv, multiProcessSuite, startWorker } from '../support/workers.js';

const GRACE = 200;

eachDialect(
  'a job that ignores its signal and never ends',
  (database) => {
    let knex: Knex;
    let admin: Knex;
    let prefix: string;
    let rows: string;
    let scheduler: PersistentTransactionalScheduler;
    let worker: Worker | undefined;
    const started = new Set<string>();

    before(async () => {
      knex = database.knex();
      admin = database.knex({ pool: { min: 0, max: 1 } });
      prefix = `${database.table('hung')}_`;
      rows = database.table('hung_rows');
      await knex.schema.createTable(rows, (t) => {
        t.integer('id').primary();
        t.integer('n').notNullable();
      });
      await knex(rows).insert({ id: 1, n: 0 });
      scheduler = new PersistentTransactionalScheduler(new TransactionManager(knex, { logger: recordingLogger() }), { tablePrefix: prefix, lease: 600 });
      // Takes the row's lock, then waits forever without looking at its signal.
      scheduler.define('stuck', async (job: JobHandle) => {
        await job.db(rows).where({ id: 1 }).increment('n', 1);
        started.add(job.id);
        await new Promise(() => undefined);
      });
      scheduler.define('quick', async () => 'ran');
      await scheduler.migrate();
    });
    after(async () => {
      await worker?.stop({ timeout: 100 });
      await knex.schema.dropTableIfExists(`${prefix}jobs`);
      await knex.schema.dropTableIfExists(`${prefix}schema`);
    });
    beforeEach(async () => {
      await worker?.stop({ timeout: 100 });
      worker = scheduler.worker({ concurrency: 1, grace: GRACE, minPollInterval: 20, maxPollInterval: 100 }).start();
    });

    /** The row is free: an update from another connection goes through (a held lock would fail it after 2 s). */
    async function rowIsFree(): Promise<void> {
      await admin.transaction(async (trx) => {
        if (database.name === 'mysql') await trx.raw('SET SESSION innodb_lock_wait_timeout = 2');
        if (database.name === 'postgres') await trx.raw("SET LOCAL lock_timeout = '2s'");
        await trx(rows).where({ id: 1 }).update({ n: 0 });
      });
    }
    const jobRow = async (id: string) => (await knex(`${prefix}jobs`).where({ id }).first()) as { state: string; locked_until: string | null } | undefined;

    it('past its timeout: failed with JobTimeoutError, its lock freed, its slot free for the next job', async () => {
      const id = await scheduler.manager.run(async () => scheduler.with({ timeout: 200 }).schedule('stuck'));
      const next = await scheduler.manager.run(async () => scheduler.schedule('quick'));
      assert.deepEqual(await finished(scheduler, id, 20_000), {
        state: 'failed',
        error: { name: 'JobTimeoutError', message: 'job stuck ran longer than its timeout of 200 ms; its signal was aborted and its writes are rolled back' },
      });
      await rowIsFree();
      assert.deepEqual(await finished(scheduler, next, 20_000), { state: 'done', value: 'ran' }, 'the only slot ran the next job');
      await until(() => worker!.running === 0, 20_000, 'the slot to be free (the result is visible a moment before the run leaves it)');
    });

    it('removed while it runs: its transaction ends after the grace, the lease is not renewed', async () => {
      const id = await scheduler.manager.run(async () => scheduler.schedule('stuck'));
      await until(() => started.has(id), 20_000, 'the job to take the row');
      await scheduler.manager.run(() => scheduler.remove(id));
      await until(() => worker!.running === 0, 20_000, 'the slot to be free');
      await rowIsFree();
      assert.equal(await jobRow(id), undefined);
    });

    it('stop({ timeout }) returns, the job goes back to the queue and its lock is freed', async () => {
      const id = await scheduler.manager.run(async () => scheduler.schedule('stuck'));
      await until(() => started.has(id), 20_000, 'the job to take the row');
      await worker!.stop({ timeout: 100 });
      worker = undefined;
      await rowIsFree();
      const row = await jobRow(id);
      assert.equal(row?.state, 'pending', 'handed back for another worker');
      await knex(`${prefix}jobs`).where({ id }).delete();
    });
  },
  ['mysql', 'postgres'],
);

eachDialect(
  'the CLI with a job that never ends',
  (database) => {
    const suite = multiProcessSuite(database, { lease: 1000, jobs: ['stuck'] });
    const env = () => fixtureEnv(database, { prefix: suite.prefix, effects: suite.effects, lease: 1000 });

    it('SIGTERM: exits 0 after --stop-timeout plus --grace, the job back in the queue', async () => {
      const worker = startWorker(env(), ['--stop-timeout', '300', '--grace', '300']);
      suite.workers.push(worker);
      const id = await suite.tm.run(async () => suite.scheduler.schedule('stuck', 1));
      await until(() => worker.lines.some((l) => l.msg === 'stuck' && l.id === id), 30_000, 'the job to start');
      worker.child.kill('SIGTERM');
      assert.equal(await worker.exited, 0);
      assert.equal((await suite.knex(`${suite.prefix}jobs`).where({ id }).first()).state, 'pending');
      await suite.knex(`${suite.prefix}jobs`).where({ id }).delete();
    });

    it('a second signal exits at once, whatever --stop-timeout says', async () => {
      const worker = startWorker(env(), ['--stop-timeout', '600000']);
      suite.workers.push(worker);
      const id = await suite.tm.run(async () => suite.scheduler.schedule('stuck', 2));
      await until(() => worker.lines.some((l) => l.msg === 'stuck' && l.id === id), 30_000, 'the job to start');
      worker.child.kill('SIGTERM');
      await until(() => worker.lines.some((l) => typeof l.msg === 'string' && l.msg.includes('stopping worker')), 10_000, 'the first signal to be taken');
      worker.child.kill('SIGTERM');
      assert.equal(await worker.exited, 143);
    });
  },
  ['mysql', 'postgres'],
);
