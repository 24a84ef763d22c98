/**
 * Recurring jobs (`scheduler.recurring(key, { cron, timezone, missed }, name, ...args)`):
 * in one process, on every database, with a manual clock: a new key fires
 * nothing for the past, then each instant once; after the workers were down,
 * `missed: 'once'` fires one catch-up run and `'skip'` none; a key no process
 * declares any more stops firing; with the real clock, three schedulers (as
 * three processes) fire each instant once, their first ticks racing.
 * Declarations are checked where they are made. (With three worker processes:
 * test/reliability/recurring-processes.test.ts.)
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import {
  PersistentTransactionalScheduler,
  TransactionManager,
  UnknownJobError,
  UnstorableValueError,
  type JobHandle,
  type RecurringOptions,
} from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { ManualClock, recordingLogger, until } from '../support/helpers.js';
import { EVERY_SECOND, recurringSuite, type Fired } from '../support/recurring-suite.js';

eachDialect('recurring jobs in one process', (database) => {
  const t = recurringSuite(database);

  function scheduler(tm: TransactionManager): PersistentTransactionalScheduler {
    const s = new PersistentTransactionalScheduler(tm, { tablePrefix: t.prefix, lease: 60_000 });
    s.define('tick', async (job: JobHandle, key: string) => {
      await job.db(t.effects).insert({ job_id: job.id, key_name: key, pid: process.pid });
    });
    return s;
  }

  /** The job rows of `key` by instant, with how many effect rows each job wrote. */
  async function fired(key: string): Promise<Fired[]> {
    const rows = (await t.knex(`${t.prefix}jobs`).where({ recurring_key: key }).orderBy('run_at')) as Record<string, unknown>[];
    const effects = (await t.knex(t.effects).where({ key_name: key })) as { job_id: string }[];
    return rows.map((r) => ({
      id: r.id as string,
      runAt: Number(r.run_at),
      createdAt: Number(r.created_at),
      state: r.state as string,
      effects: effects.filter((e) => e.job_id === r.id).length,
    }));
  }

  /** Waits until `key` has `count` job rows, all done. */
  const settled = (key: string, count: number) =>
    until(async () => {
      const rows = await fired(key);
      return rows.length === count && rows.every((r) => r.state === 'done');
    }, 20_000, `${count} done runs of ${key}`);

  const offsets = (rows: Fired[], start: number) => rows.map((r) => r.runAt - start);

  it("fires nothing for the past, then each instant once; after the workers were down: 'once' one catch-up run, 'skip' none", async () => {
    const clock = new ManualClock(); // at a whole second
    const start = clock.now();
    const logger = recordingLogger();
    const s = scheduler(new TransactionManager(t.knex, { logger, clock }))
      .recurring('m-every', { cron: EVERY_SECOND }, 'tick', 'm-every')
      .recurring('m-once', { cron: EVERY_SECOND, missed: 'once', missedAfter: 2000 }, 'tick', 'm-once')
      .recurring('m-skip', { cron: EVERY_SECOND, missed: 'skip', missedAfter: 2000 }, 'tick', 'm-skip');
    const keys = ['m-every', 'm-once', 'm-skip'];
    let worker = s.worker({ concurrency: 8 }).start();
    try {
      await until(async () => (await t.knex(`${t.prefix}recurring`).whereIn('key', keys)).length === 3, 10_000, 'the first tick');
      const added = (await t.knex(`${t.prefix}recurring`).whereIn('key', keys)) as { last_instant: unknown }[];
      assert.deepEqual(added.map((r) => Number(r.last_instant)), [start, start, start], 'a new key starts from now');
      for (const key of keys) assert.deepEqual(await fired(key), [], 'nothing for the past');

      for (let second = 1; second <= 3; second++) {
        await clock.advance(1000);
        for (const key of keys) await settled(key, second);
      }
      for (const key of keys) assert.deepEqual(offsets(await fired(key), start), [1000, 2000, 3000]);
    } finally {
      await worker.stop();
    }

    await clock.advance(10_000); // no worker from 3 s to 13 s
    worker = s.worker({ concurrency: 8 }).start();
    try {
      await settled('m-every', 13);
      await settled('m-once', 7);
      await settled('m-skip', 6);
      // On time up to 60 s late (the default): every instant of the 10 s fires, late.
      assert.deepEqual(offsets(await fired('m-every'), start), Array.from({ length: 13 }, (_, i) => (i + 1) * 1000));
      // On time up to 2 s late: at 13 s, the instants 4-10 s were missed; 11 s (exactly 2 s late), 12 s and 13 s are on time.
      const once = (await fired('m-once')).slice(3);
      assert.deepEqual(offsets(once, start), [10_000, 11_000, 12_000, 13_000], "'once': one catch-up run, for the latest missed instant");
      assert.ok(once.every((r) => r.createdAt === start + 13_000));
      assert.deepEqual(offsets((await fired('m-skip')).slice(3), start), [11_000, 12_000, 13_000], "'skip': none of the missed");
      for (const key of keys) assert.ok((await fired(key)).every((r) => r.effects === 1), `each run of ${key} wrote its row once`);
      const notes = logger.lines.filter((l) => l.level === 'info' && /went unfired/.test(l.msg)).map((l) => l.obj.key);
      assert.deepEqual(notes.sort(), ['m-once', 'm-skip'], 'the missed instants are logged');

      await clock.advance(1000);
      await settled('m-skip', 7);
      assert.equal(offsets(await fired('m-skip'), start).at(-1), 14_000, 'and on it goes, on time');
    } finally {
      await worker.stop();
    }
    assert.deepEqual(logger.lines.filter((l) => l.level === 'error' || /firing its due instants failed/.test(l.msg)), [], 'no failed tick');
  });

  it('a key no process declares any more fires no more; its row stays', async () => {
    const clock = new ManualClock({ start: Date.UTC(2027, 0, 1) });
    const start = clock.now();
    const declaring = scheduler(new TransactionManager(t.knex, { logger: recordingLogger(), clock })).recurring('gone', { cron: EVERY_SECOND }, 'tick', 'gone');
    const first = declaring.worker().start();
    try {
      await until(async () => (await t.knex(`${t.prefix}recurring`).where({ key: 'gone' })).length === 1, 10_000, 'the first tick');
      await clock.advance(1000);
      await settled('gone', 1);
    } finally {
      await first.stop();
    }
    // The next release: the declaration is gone from the code; another key is declared.
    const next = scheduler(new TransactionManager(t.knex, { logger: recordingLogger(), clock })).recurring('kept', { cron: EVERY_SECOND }, 'tick', 'kept');
    const second = next.worker().start();
    try {
      await until(async () => (await t.knex(`${t.prefix}recurring`).where({ key: 'kept' })).length === 1, 10_000, 'the first tick');
      for (let n = 1; n <= 3; n++) {
        await clock.advance(1000);
        await settled('kept', n);
      }
    } finally {
      await second.stop();
    }
    assert.deepEqual(offsets(await fired('gone'), start), [1000]);
    const row = (await t.knex(`${t.prefix}recurring`).where({ key: 'gone' }).first()) as { last_instant: unknown };
    assert.equal(Number(row.last_instant), start + 1000, 'its row stays as it was');
  });

  it('three schedulers (as three processes, each with its connections but on SQLite) fire each instant once, their first ticks racing', async () => {
    const loggers = [1, 2, 3].map(() => recordingLogger());
    // SQLite: one connection for the three. better-sqlite3 waits for a lock synchronously, so connections of one
    // process would wait for each other's lock with the event loop blocked, for the whole busy timeout.
    const connection = () => (database.name === 'sqlite' ? t.knex : database.knex());
    const schedulers = loggers.map((logger) =>
      scheduler(new TransactionManager(connection(), { logger })).recurring('shared', { cron: EVERY_SECOND }, 'tick', 'shared'),
    );
    const workers = schedulers.map((s) => s.worker({ concurrency: 2 }));
    for (const w of workers) w.start(); // together: all three find no row for the key and add it
    try {
      await until(async () => (await fired('shared')).filter((r) => r.state === 'done').length >= 4, 30_000, 'four runs');
    } finally {
      await Promise.all(workers.map((w) => w.stop()));
    }
    await until(async () => (await fired('shared')).every((r) => r.state === 'done'), 20_000, 'the last runs');
    const rows = await fired('shared');
    for (let i = 1; i < rows.length; i++) assert.equal(rows[i]!.runAt - rows[i - 1]!.runAt, 1000, 'every instant once, none left out');
    assert.ok(rows.every((r) => r.effects === 1));
    // Conflicts retried (SQLITE_BUSY among three connections) are no failure: a tick that failed would be.
    const trouble = loggers.flatMap((l) => l.lines).filter((l) => l.level === 'error' || /firing its due instants failed/.test(l.msg));
    assert.deepEqual(trouble.map((l) => l.msg), [], 'no tick failed: no unique violation, no lost race');
  });

  if (database.name === 'sqlite') {
    it('declarations are checked where they are made', () => {
      const s = scheduler(new TransactionManager(t.knex, { logger: recordingLogger() }));
      const every: RecurringOptions = { cron: EVERY_SECOND };
      assert.throws(() => s.recurring('', every, 'tick'), { name: 'TypeError', message: /key must be a string of 1-191 characters/ });
      assert.throws(() => s.recurring('k'.repeat(192), every, 'tick'), /1-191 characters, got 192/);
      assert.throws(() => s.recurring('nightly', { cron: 'every night' }, 'tick'), { name: 'TypeError', message: /^recurring\('nightly'\): bad cron pattern "every night"/ });
      assert.throws(() => s.recurring('nightly', { cron: '0 0 31 2 *' }, 'tick'), /recurring\('nightly'\): the cron pattern "0 0 31 2 \*" never fires/);
      assert.throws(() => s.recurring('nightly', { cron: '0 9 * * *', timeZone: 'Europe/Berlin' } as RecurringOptions, 'tick'), {
        name: 'TypeError',
        message: 'recurring(\'nightly\'): unknown option "timeZone"; the options are cron, timezone, missed, missedAfter',
      });
      assert.throws(() => s.recurring('nightly', { cron: '0 3 * * *', timezone: 'Mars/Olympus' }, 'tick'), {
        name: 'TypeError',
        message: /^recurring\('nightly'\): unknown time zone "Mars\/Olympus"/,
      });
      assert.throws(() => s.recurring('nightly', { cron: '0 3 * * *', missed: 'always' as 'once' }, 'tick'), /missed must be 'skip' or 'once', got always/);
      assert.throws(() => s.recurring('nightly', { cron: '0 3 * * *', missedAfter: 500 }, 'tick'), /missedAfter \(ms\) must be an integer from 1000/);
      assert.throws(() => s.recurring('nightly', { cron: '0 3 * * *' }, 'report'), UnknownJobError, 'define() the job first');
      assert.throws(() => s.recurring('nightly', { cron: '0 3 * * *' }, 'tick', () => 1), UnstorableValueError, 'arguments are stored now');
      s.recurring('nightly', { cron: '0 3 * * *', timezone: 'Europe/Berlin' }, 'tick', 'a');
      assert.equal(s.recurring('nightly', { cron: '0 3 * * *', timezone: 'Europe/Berlin' }, 'tick', 'a'), s, 'the same declaration again is a no-op');
      assert.throws(() => s.recurring('nightly', { cron: '0 4 * * *', timezone: 'Europe/Berlin' }, 'tick', 'a'), /recurring\('nightly'\) was already declared otherwise/);
      assert.throws(() => s.recurring('nightly', { cron: '0 3 * * *', timezone: 'Europe/Berlin' }, 'tick', 'b'), /already declared otherwise/);
    });
  }
});
