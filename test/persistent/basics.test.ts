/**
 * PersistentTransactionalScheduler on each database: schedules written by the
 * scheduling transaction (exist iff it commits), seen and run from another
 * knex instance (as another process would), the result protocol, refusals at
 * schedule(), remove(), progress while the job's transaction is open, job
 * options, stats, migrations, and the claim index.
 */
import { after, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Knex } from 'knex';
import {
  PersistentTransactionalScheduler,
  TransactionManager,
  ConflictError,
  UnknownJobError,
  UnstorableValueError,
  type JobHandle,
  type SchedulerEvents,
  type Worker,
} from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { ManualClock, deferred, finished, recordingLogger, until, untilAborted } from '../support/helpers.js';

eachDialect('PersistentTransactionalScheduler', (database) => {
  let web: Knex; // the scheduling "process"
  let other: Knex; // another "process": its own knex instance, pool and scheduler
  let effects: string;
  let prefix: string;
  let tmWeb: TransactionManager;
  let tmOther: TransactionManager;
  let scheduling: PersistentTransactionalScheduler;
  let running: PersistentTransactionalScheduler;
  let worker: Worker | undefined;
  const gates = new Map<string, ReturnType<typeof deferred<void>>>();

  function defineJobs(scheduler: PersistentTransactionalScheduler) {
    scheduler.define('effect', async (job: JobHandle, n: number) => {
      await job.db(effects).insert({ job_id: job.id, n });
      return { n, user: job.meta.user ?? null };
    });
    scheduler.define('fails', async (job: JobHandle) => {
      await job.db(effects).insert({ job_id: job.id, n: -1 });
      throw new RangeError('the job failed on purpose');
    });
    /** Completes slowly: heartbeats are sent while its result waits to commit, and answered while its after-commit hook runs. */
    scheduler.define('slow-commit', async (job: JobHandle) => {
      const tx = scheduler.manager.current!;
      tx.beforeCommit(() => sleep(350));
      tx.afterCommit(() => sleep(350));
      return job.attempt;
    });
    scheduler.define('gated', async (job: JobHandle, gate: string) => {
      await job.db(effects).insert({ job_id: job.id, n: 0 });
      await job.progress(0.5, 'waiting at the gate');
      await Promise.race([gates.get(gate)!.promise, untilAborted(job.signal)]);
      return gate;
    });
  }

  /** Calls `then` synchronously when job `id` emits `event` on `scheduler` (right after its outcome's COMMIT), and resolves with its answer. */
  function when<T>(scheduler: PersistentTransactionalScheduler, event: 'succeeded' | 'failed', id: string, then: () => T): Promise<T> {
    return new Promise((resolve) => {
      const listener = (emitted: { id: string }) => {
        if (emitted.id !== id) return;
        scheduler.off(event, listener);
        resolve(then());
      };
      scheduler.on(event, listener);
    });
  }

  before(async () => {
    web = database.knex();
    other = database.knex();
    effects = database.table('effects');
    prefix = `${database.table('ac')}_`;
    await web.schema.createTable(effects, (t) => {
      t.increments('id');
      t.string('job_id', 32).notNullable();
      t.integer('n').notNullable();
    });
    tmWeb = new TransactionManager(web, { logger: recordingLogger() });
    tmOther = new TransactionManager(other, { logger: recordingLogger() });
    scheduling = new PersistentTransactionalScheduler(tmWeb, { tablePrefix: prefix, lease: 2000 });
    running = new PersistentTransactionalScheduler(tmOther, { tablePrefix: prefix, lease: 2000 });
    defineJobs(scheduling);
    defineJobs(running);
    // Three migrations at once, from two instances: idempotent and serialised.
    await Promise.all([scheduling.migrate(), running.migrate(), scheduling.migrate()]);
    await scheduling.migrate();
  });

  after(async () => {
    await worker?.stop({ timeout: 1000 });
    await web.schema.dropTableIfExists(`${prefix}jobs`);
    await web.schema.dropTableIfExists(`${prefix}schema`);
  });

  beforeEach(async () => {
    await worker?.stop({ timeout: 1000 });
    worker = undefined;
    await web(effects).delete();
    await web(`${prefix}jobs`).delete();
  });

  const startWorker = (options = {}) => (worker = running.worker({ minPollInterval: 20, maxPollInterval: 100, ...options }).start());
  const rows = async () => (await web(effects).orderBy('id')) as { job_id: string; n: number }[];

  it('a schedule is written by its transaction: pending inside it, seen from another instance after commit, run there', async () => {
    const id = await tmWeb.run(
      async () => {
        const id = scheduling.schedule('effect', 7);
        assert.deepEqual(await scheduling.getResult(id), { state: 'pending' }, 'pending before commit');
        return id;
      },
      { metadata: { user: 'alice' } },
    );
    assert.deepEqual(await running.getResult(id), { state: 'pending' }, 'another instance sees it once committed');
    startWorker();
    assert.deepEqual(await finished(scheduling, id), { state: 'done', value: { n: 7, user: 'alice' } });
    assert.deepEqual((await rows()).map((r) => [r.job_id, r.n]), [[id, 7]]);
  });

  it('an aborted transaction leaves no row, and its job never runs', async () => {
    let id = '';
    await assert.rejects(
      tmWeb.run(async () => {
        id = scheduling.schedule('effect', 1);
        throw new Error('the request fails');
      }),
      /the request fails/,
    );
    assert.equal((await web(`${prefix}jobs`).where({ id })).length, 0);
    assert.deepEqual(await running.getResult(id), { state: 'unknown' });
  });

  it('refuses unknown job names and unstorable arguments at schedule(), in the request', async () => {
    await tmWeb.run(async () => {
      assert.throws(() => scheduling.schedule('efect', 1), UnknownJobError);
      assert.throws(() => scheduling.schedule('effect', () => 1), UnstorableValueError);
      assert.throws(() => scheduling.schedule(async () => 1), /runs jobs by name: define\(name, fn\) the function/);
    });
    assert.equal((await web(`${prefix}jobs`)).length, 0);
  });

  it('a failing job records { name, message }, and its writes are rolled back', async () => {
    const id = await tmWeb.run(async () => scheduling.schedule('fails'));
    startWorker();
    assert.deepEqual(await finished(running, id), { state: 'failed', error: { name: 'RangeError', message: 'the job failed on purpose' } });
    assert.deepEqual(await rows(), []);
  });

  it('a fetched result is deleted after the fetching transaction commits, and kept when it aborts', async () => {
    const id = await tmWeb.run(async () => scheduling.schedule('effect', 3));
    startWorker();
    await finished(scheduling, id);
    await tmOther.run(async (tx) => {
      assert.equal((await running.getResult(id)).state, 'done');
      tx.setRollbackOnly();
    });
    assert.equal((await scheduling.getResult(id)).state, 'done', 'kept after an abort');
    await tmOther.run(async () => assert.equal((await running.getResult(id)).state, 'done'));
    assert.deepEqual(await scheduling.getResult(id), { state: 'unknown' }, 'deleted after the commit');
    assert.equal((await web(`${prefix}jobs`).where({ id })).length, 0);
  });

  it('once the outcome has committed, getResult in the worker’s own process says done or failed, never pending', async () => {
    const [ok, ko] = await tmWeb.run(async () => [scheduling.schedule('effect', 5), scheduling.with({ maxAttempts: 1 }).schedule('fails')]);
    // The events are emitted right after the outcome's COMMIT, before the worker has tidied up its run.
    const done = when(running, 'succeeded', ok!, () => running.getResult(ok!));
    const failed = when(running, 'failed', ko!, () => running.getResult(ko!));
    startWorker();
    assert.deepEqual(await done, { state: 'done', value: { n: 5, user: null } });
    assert.deepEqual(await failed, { state: 'failed', error: { name: 'RangeError', message: 'the job failed on purpose' } });
  });

  it('a heartbeat that meets the job’s own committed result reports no lost lease', async () => {
    const lost: string[] = [];
    const listener = (event: { id: string }) => lost.push(event.id);
    running.on('lost-lease', listener);
    try {
      const id = await tmWeb.run(async () => scheduling.with({ lease: 300 }).schedule('slow-commit'));
      startWorker();
      assert.deepEqual(await finished(running, id), { state: 'done', value: 1 });
      await until(() => worker!.running === 0);
      assert.deepEqual(lost, []);
    } finally {
      running.off('lost-lease', listener);
    }
  });

  it('getResult shows a schedule only to its user (visibleTo)', async () => {
    const id = await tmWeb.run(async () => scheduling.schedule('effect', 4), { metadata: { user: 42 } });
    assert.equal((await running.getResult(id, { visibleTo: 42 })).state, 'pending');
    assert.equal((await running.getResult(id, { visibleTo: '42' })).state, 'pending');
    assert.equal((await running.getResult(id, { visibleTo: 43 })).state, 'unknown');
    assert.equal((await running.getResult(id, { visibleTo: null })).state, 'unknown');
  });

  it('progress is visible to other instances while the job’s transaction is still open', async () => {
    gates.set('p', deferred());
    const id = await tmWeb.run(async () => scheduling.schedule('gated', 'p'));
    startWorker();
    if (database.name === 'sqlite') {
      // One writer: the progress stays in the running process, where getResult finds it.
      await until(async () => 'progress' in (await running.getResult(id)));
      assert.deepEqual(await running.getResult(id), { state: 'pending', progress: { fraction: 0.5, message: 'waiting at the gate' } });
    } else {
      await until(async () => 'progress' in (await scheduling.getResult(id)));
      assert.deepEqual(await scheduling.getResult(id), { state: 'pending', progress: { fraction: 0.5, message: 'waiting at the gate' } });
      assert.equal((await rows()).length, 0, "the job's own insert is not committed yet");
    }
    gates.get('p')!.resolve();
    assert.deepEqual(await finished(scheduling, id), { state: 'done', value: 'p' });
  });

  describe('remove()', () => {
    it('cancels a pending job: it never runs', async () => {
      const id = await tmWeb.run(async () => scheduling.schedule('effect', 5));
      await scheduling.remove(id);
      startWorker();
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(await rows(), []);
      assert.deepEqual(await running.getResult(id), { state: 'unknown' });
    });

    it('signals a running job, also in another process (through its lost lease); its writes roll back', async () => {
      gates.set('r', deferred());
      const lost: string[] = [];
      running.on('lost-lease', (e) => lost.push(e.id));
      const id = await tmWeb.run(async () => scheduling.schedule('gated', 'r'));
      startWorker();
      await until(async () => 'progress' in (await running.getResult(id)));
      if (database.name === 'sqlite') {
        // One writer: the DELETE waits for the job's transaction, so only the running process can remove it.
        await running.remove(id);
      } else {
        await scheduling.remove(id); // from the other instance: no local signal, the heartbeat finds out
        await until(() => lost.includes(id), 10_000, 'the heartbeat to notice');
      }
      await until(() => worker!.running === 0);
      assert.deepEqual(await rows(), []);
      assert.deepEqual(await scheduling.getResult(id), { state: 'unknown' });
    });
  });

  describe('job options', () => {
    it('priority orders due jobs; a queue runs only where a worker takes it; delay holds a job back', async () => {
      const ids = await tmWeb.run(async () => [
        scheduling.with({ priority: 5 }).schedule('effect', 5),
        scheduling.with({ priority: -1 }).schedule('effect', -1),
        scheduling.with({ priority: 0 }).schedule('effect', 0),
        scheduling.with({ queue: 'reports' }).schedule('effect', 100),
        scheduling.with({ delay: 60_000 }).schedule('effect', 200),
      ]);
      startWorker({ concurrency: 1 });
      for (const id of ids.slice(0, 3)) await finished(running, id);
      assert.deepEqual((await rows()).map((r) => r.n), [-1, 0, 5]);
      assert.deepEqual(await running.getResult(ids[3]!), { state: 'pending' }, 'no worker takes the reports queue');
      assert.deepEqual(await running.getResult(ids[4]!), { state: 'pending' }, 'not due for a minute');
      await worker!.stop();
      worker = running.worker({ queues: ['reports'], minPollInterval: 20, maxPollInterval: 100 }).start();
      await finished(running, ids[3]!);
    });

    it('maxAttempts re-runs a failing job with backoff, then fails it; each run rolled back', async () => {
      running.define('flaky', async (job: JobHandle) => {
        await job.db(effects).insert({ job_id: job.id, n: job.attempt });
        if (job.attempt < 3) throw new Error(`attempt ${job.attempt} fails`);
        return job.attempt;
      });
      scheduling.define('flaky', async () => undefined);
      const retried: number[] = [];
      running.on('retried', (e) => e.name === 'flaky' && retried.push(e.attempt));
      const ok = await tmWeb.run(async () => scheduling.with({ maxAttempts: 3, backoff: { initial: 20, max: 40 } }).schedule('flaky'));
      const ko = await tmWeb.run(async () => scheduling.with({ maxAttempts: 2, backoff: { initial: 20, max: 40 } }).schedule('flaky'));
      startWorker();
      assert.deepEqual(await finished(running, ok), { state: 'done', value: 3 });
      assert.deepEqual(await finished(running, ko), { state: 'failed', error: { name: 'Error', message: 'attempt 2 fails' } });
      assert.deepEqual(
        (await rows()).map((r) => [r.job_id === ok ? 'ok' : 'ko', r.n]),
        [['ok', 3]],
        'only the successful run’s write is committed',
      );
      assert.deepEqual(retried.sort(), [1, 1, 2]);
    });

    it('counts: conflicts re-run the same attempt and run; each failed run is the next attempt and run, never above maxAttempts', async () => {
      const seen = new Map<string, number[][]>();
      running.define('conflicts-then-fails', async (job: JobHandle) => {
        seen.set(job.id, [...(seen.get(job.id) ?? []), [job.attempt, job.run, job.transactionAttempt, job.maxAttempts]]);
        await job.db(effects).insert({ job_id: job.id, n: job.attempt });
        if (job.run === 1 && job.transactionAttempt < 3) throw new ConflictError('a conflict its transaction retries');
        throw new Error(`run ${job.run} fails`);
      });
      scheduling.define('conflicts-then-fails', async () => undefined);
      const events: string[] = [];
      const onRetried = (e: SchedulerEvents['retried'][0]) =>
        e.name === 'conflicts-then-fails' && events.push(`${e.id} retried after attempt ${e.attempt} run ${e.run} tx ${e.transactionAttempt}`);
      const onFailed = (e: SchedulerEvents['failed'][0]) => e.name === 'conflicts-then-fails' && events.push(`${e.id} failed in attempt ${e.attempt} run ${e.run}`);
      running.on('retried', onRetried);
      running.on('failed', onFailed);
      try {
        const ids = await tmWeb.run(async () =>
          [1, 2, 3].map(() => scheduling.with({ maxAttempts: 2, backoff: { initial: 20, max: 40 } }).schedule('conflicts-then-fails')),
        );
        startWorker({ concurrency: 3 });
        for (const id of ids) {
          assert.deepEqual(await finished(running, id), { state: 'failed', error: { name: 'Error', message: 'run 2 fails' } });
          // The failed event comes once the failure has committed, which a poller may see first.
          await until(() => events.some((e) => e === `${id} failed in attempt 2 run 2`), 10_000, `the failed event of ${id}`);
          assert.deepEqual(seen.get(id), [
            [1, 1, 1, 2],
            [1, 1, 2, 2],
            [1, 1, 3, 2],
            [2, 2, 1, 2],
          ]);
          assert.deepEqual(
            events.filter((e) => e.startsWith(id)).map((e) => e.slice(id.length + 1)),
            ['retried after attempt 1 run 1 tx 1', 'retried after attempt 1 run 1 tx 2', 'retried after attempt 1 run 1 tx 3', 'failed in attempt 2 run 2'],
          );
        }
        assert.deepEqual((await rows()).filter((r) => ids.includes(r.job_id)), [], 'every run rolled back');
      } finally {
        running.off('retried', onRetried);
        running.off('failed', onFailed);
      }
    });

    it('timeout aborts the job’s signal and fails it', async () => {
      gates.set('never', deferred());
      const id = await tmWeb.run(async () => scheduling.with({ timeout: 200 }).schedule('gated', 'never'));
      startWorker();
      assert.deepEqual(await finished(running, id), {
        state: 'failed',
        error: { name: 'JobTimeoutError', message: 'job gated ran longer than its timeout of 200 ms; its signal was aborted and its writes are rolled back' },
      });
      assert.deepEqual(await rows(), []);
    });

    it('dedupeKey: a second schedule while the first is pending returns the first id, also across transactions', async () => {
      const [first, second] = await tmWeb.run(async () => [
        await scheduling.with({ dedupeKey: 'report:2026-10' }).schedule('effect', 1),
        await scheduling.with({ dedupeKey: 'report:2026-10' }).schedule('effect', 2),
      ]);
      assert.equal(second, first);
      const third = await tmWeb.run(async () => scheduling.with({ dedupeKey: 'report:2026-10' }).schedule('effect', 3));
      assert.equal(third, first);
      startWorker();
      await finished(running, first!);
      const fourth = await tmWeb.run(async () => scheduling.with({ dedupeKey: 'report:2026-10' }).schedule('effect', 4));
      assert.notEqual(fourth, first, 'once the first started, the key is free again');
      await finished(running, fourth);
      assert.deepEqual((await rows()).map((r) => r.n), [1, 4]);
    });
  });

  it('an unfetched result expires after ttl, and a worker deletes its row', async () => {
    const shortLived = new PersistentTransactionalScheduler(tmOther, { tablePrefix: prefix, lease: 2000, ttl: 300 });
    defineJobs(shortLived);
    const id = await tmWeb.run(async () => scheduling.schedule('effect', 8));
    const succeeded = when(shortLived, 'succeeded', id, () => undefined);
    worker = shortLived.worker({ minPollInterval: 20, maxPollInterval: 100 }).start();
    await succeeded; // not polled for 'done': a slow poll may come after the 300 ms ttl
    await until(async () => (await web(`${prefix}jobs`).where({ id })).length === 0, 10_000, 'the expired row to be deleted');
    assert.deepEqual(await scheduling.getResult(id), { state: 'unknown' });
  });

  it('stats() counts by state and gives the oldest due job’s age', async () => {
    await tmWeb.run(async () => {
      scheduling.schedule('effect', 1);
      scheduling.schedule('effect', 2);
    });
    const stats = await scheduling.stats();
    assert.equal(stats.pending, 2);
    assert.equal(stats.done + stats.running + stats.failed, 0);
    assert.ok(stats.oldestDueMs !== null && stats.oldestDueMs >= 0);
  });

  it('a local worker starts a job its process committed at once, without waiting for a poll', async () => {
    // A clock that never moves: the worker's polling sleeps never end, only the wake-up can start the job.
    const frozen = new TransactionManager(web, { logger: recordingLogger(), clock: new ManualClock() });
    const local = new PersistentTransactionalScheduler(frozen, { tablePrefix: prefix, lease: 2000 });
    defineJobs(local);
    const localWorker = local.worker({ minPollInterval: 60_000, maxPollInterval: 60_000 }).start();
    try {
      await new Promise((r) => setTimeout(r, 50)); // the first (empty) claim is done; the worker sleeps
      const id = await frozen.run(async () => local.schedule('effect', 9));
      assert.deepEqual(await finished(local, id), { state: 'done', value: { n: 9, user: null } });
    } finally {
      await localWorker.stop({ timeout: 1000 });
    }
  });

  if (database.name !== 'sqlite') {
    it('the claim query uses the claim index in its ORDER BY: no sort', async () => {
      await tmWeb.run(async (tx) => {
        for (let i = 0; i < 300; i++) scheduling.with({ priority: i % 7 }).schedule('effect', i);
        await tx.db.raw('select 1');
      });
      // The statement a worker sends to claim, as knex reports it.
      const claims: Knex.Sql[] = [];
      const capture = (query: Knex.Sql) => {
        if (/skip locked/i.test(query.sql) && /run_at/.test(query.sql)) claims.push(query);
      };
      web.on('query', capture);
      const claimer = scheduling.worker({ concurrency: 10, minPollInterval: 60_000, maxPollInterval: 60_000 }).start();
      try {
        await until(() => claims.length > 0);
      } finally {
        await claimer.stop();
        web.off('query', capture);
      }
      const { bindings } = claims[0]!;
      const sql = claims[0]!.sql.replace(/\$\d+/g, '?'); // PostgreSQL's numbered parameters, as knex.raw takes them
      if (database.name === 'mysql') {
        const [plan] = await web.raw(`EXPLAIN ${sql}`, bindings as Knex.RawBinding[]);
        assert.equal(plan[0].key, `${prefix}jobs_claim`);
        assert.doesNotMatch(String(plan[0].Extra), /filesort/);
      } else {
        await web.raw('ANALYZE ??', [`${prefix}jobs`]); // the planner needs statistics of the fresh table
        const plan = await web.transaction(async (trx) => {
          await trx.raw('SET LOCAL enable_seqscan = off'); // a small table: make the planner show the index path
          return (await trx.raw(`EXPLAIN (FORMAT JSON) ${sql}`, bindings as Knex.RawBinding[])).rows[0]['QUERY PLAN'];
        });
        const text = JSON.stringify(plan);
        assert.match(text, new RegExp(`"Index Name":"${prefix}jobs_claim"`));
        assert.doesNotMatch(text, /"Node Type":"Sort"/);
      }
    });
  }
});
