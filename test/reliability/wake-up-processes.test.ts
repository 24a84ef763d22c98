/**
 * Wake-ups across real processes: a worker process (the CLI) polls every 60 s,
 * and this process schedules a job. Its loop still turns every 5 s (the
 * registry heartbeat's cap on the wait), so the test schedules just after a
 * turn began (its heartbeat written, its claim long done): without a wake-up
 * the job waits about 4.5 s for the next turn; with one it starts at once. A
 * control schedules the same way with wake-ups turned off (`wakeUp: false`)
 * and must see the wait, so the measurement can fail.
 */
import { before, it } from 'node:test';
import assert from 'node:assert/strict';
import { PersistentTransactionalScheduler, type JobHandle } from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { barrier, until } from '../support/helpers.js';
import { multiProcessSuite, type MultiProcessSuite, type WorkerProcess } from '../support/workers.js';

/** A started job counts as woken under this (ms); one left to the poll starts about 4,000 ms after its commit. */
const WOKEN_WITHIN_MS = 2000;
/** The least a job left to the poll waits (ms) in the control. */
const POLLED_AFTER_MS = 3000;

eachDialect(
  'wake-ups across processes',
  (database) => {
    const lease = 10_000;
    const suite = multiProcessSuite(database, { lease, jobs: ['effect'], poll: { minPollInterval: 60_000, maxPollInterval: 60_000 } });
    /** Schedules like suite.scheduler, without wake-ups. */
    let unannounced: PersistentTransactionalScheduler;

    before(() => {
      unannounced = new PersistentTransactionalScheduler(suite.tm, { tablePrefix: suite.prefix, lease, wakeUp: false });
      unannounced.define('effect', async (_job: JobHandle) => undefined);
    });

    it('a job scheduled here starts at once in a worker process in its long poll wait; without wake-ups it waits for the poll', async () => {
      const worker = suite.spawn();
      await listening(suite, worker);
      const woken = await startDelay(suite, worker, suite.scheduler, 1);
      console.log(`# ${database.name}: started ${woken} ms after the commit, woken`);
      assert.ok(woken < WOKEN_WITHIN_MS, `started ${woken} ms after its commit: the worker waited for its poll`);
      const polled = await startDelay(suite, worker, unannounced, 2);
      console.log(`# ${database.name}: started ${polled} ms after the commit, without a wake-up`);
      assert.ok(polled >= POLLED_AFTER_MS, `without a wake-up the job started ${polled} ms after its commit: the measurement cannot tell`);
    });

    it('jobs of interleaved transactions, woken across two worker processes, each run once', async () => {
      const workers = [suite.spawn({ concurrency: 4 }), suite.spawn({ concurrency: 4 })];
      for (const worker of workers) await listening(suite, worker);
      const transactions = 8;
      const together = barrier(transactions);
      const committedAt = Date.now();
      const ids = (
        await Promise.all(
          Array.from({ length: transactions }, (_, t) =>
            suite.tm.run(async () => {
              const first = suite.scheduler.schedule('effect', 100 + t);
              await together.arrive(); // all open at once; they commit in any order
              return [first, suite.scheduler.schedule('effect', 200 + t)];
            }),
          ),
        )
      ).flat();
      await until(async () => (await suite.knex(suite.effects).whereIn('job_id', ids)).length >= ids.length, 20_000, 'every job run');
      console.log(`# ${database.name}: ${ids.length} jobs done ${Date.now() - committedAt} ms after their transactions began`);
      const rows = (await suite.knex(suite.effects).whereIn('job_id', ids)) as { job_id: string }[];
      assert.deepEqual(rows.map((row) => row.job_id).sort(), [...ids].sort(), 'each job ran exactly once');
    });
  },
  ['mysql', 'postgres'],
);

/**
 * Waits until the worker process is registered and listens for wake-ups: its address in the registry (MySQL),
 * or a LISTEN session for each worker process started (PostgreSQL, where sessions do not name their process).
 */
async function listening(suite: MultiProcessSuite, worker: WorkerProcess): Promise<void> {
  const listens = async () => {
    const row = (await suite.knex(`${suite.prefix}workers`).where({ pid: worker.pid }).first('wake_address')) as { wake_address: string | null } | undefined;
    if (suite.knex.client.config.client !== 'pg') return Boolean(row?.wake_address);
    const { rows } = (await suite.knex.raw('SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND query = ?', [`LISTEN "${suite.prefix}jobs"`])) as {
      rows: unknown[];
    };
    return row !== undefined && rows.length >= suite.workers.length;
  };
  await until(listens, 60_000, `worker process ${worker.pid} to listen for wake-ups`);
}

/**
 * Schedules job `n` with `scheduler` just after a turn of the worker's loop began (its heartbeat changed,
 * and its claim is done: it waits 5 s now), and answers how long (ms) after the commit the job ran.
 */
async function startDelay(suite: MultiProcessSuite, worker: WorkerProcess, scheduler: PersistentTransactionalScheduler, n: number): Promise<number> {
  const heartbeat = async () => Number(((await suite.knex(`${suite.prefix}workers`).where({ pid: worker.pid }).first('heartbeat_at')) as { heartbeat_at: number }).heartbeat_at);
  const last = await heartbeat();
  await until(async () => (await heartbeat()) !== last, 10_000, 'a turn of the worker’s loop');
  await new Promise((resolve) => setTimeout(resolve, 1000)); // its claim found nothing (1 s, for a loaded machine): it waits for its next turn, 4 s on
  const id = await suite.tm.run(async () => scheduler.schedule('effect', n));
  const committedAt = Date.now();
  await until(async () => (await suite.knex(suite.effects).where({ job_id: id })).length > 0, 20_000, `job ${n} to run`);
  return Date.now() - committedAt;
}
