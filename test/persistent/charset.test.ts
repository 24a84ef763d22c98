/**
 * The job tables are UTF-8 whatever the database's default: on a latin1
 * MariaDB/MySQL database, an owner in Cyrillic and an emoji argument are stored
 * and read back exactly. And migration step 2 upgrades a version-1 table in
 * place: its text becomes UTF-8 and exact, its pending dedupe keys still hold.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import knexFactory, { type Knex } from 'knex';
import { PersistentTransactionalScheduler, TransactionManager, type JobHandle } from '../../lib/index.js';
import { eachDialect, type TestDatabase } from '../support/databases.js';
import { finished, recordingLogger } from '../support/helpers.js';

const OWNER = 'жанна';
const ARGUMENT = { note: 'Grüße 🎉👩🏽‍💻 ∑', list: ['€', '𝄞'] };

function schedulerOn(knex: Knex, prefix: string): PersistentTransactionalScheduler {
  const scheduler = new PersistentTransactionalScheduler(new TransactionManager(knex, { logger: recordingLogger() }), { tablePrefix: prefix });
  scheduler.define('echo', async (_job: JobHandle, value: unknown) => value);
  return scheduler;
}

/** Applies migration step 1 only, as an install of the previous version did. */
async function migrateToVersion1(knex: Knex, scheduler: PersistentTransactionalScheduler): Promise<void> {
  const source = scheduler.migrationSource();
  const [first] = await source.getMigrations([]);
  await (await source.getMigration(first)).up(knex);
}

/** Writes a pending job as version 1 did (the same columns, no anonymous_dedupe_key); returns its id. */
async function writeAsVersion1(knex: Knex, jobs: string, job: { owner: string | null; key: string; args?: unknown[] }): Promise<string> {
  const id = randomBytes(16).toString('hex');
  const now = Date.now();
  await knex(jobs).insert({
    ...{ id, name: 'echo', queue: 'default', state: 'pending', priority: 0, run_at: now, args: JSON.stringify(job.args ?? []), meta: '{}' },
    ...{ owner: job.owner, runs: 0, failures: 0, max_attempts: 1, backoff: '{"initial":1000,"factor":2,"max":3600000}', lease_ms: 30_000 },
    ...{ dedupe_key: job.key, created_at: now },
  });
  return id;
}

/** Schedules, runs and fetches `value` for `owner`; also checks the stored row. */
async function roundTrip(scheduler: PersistentTransactionalScheduler, jobs: string, owner: string, value: unknown): Promise<void> {
  const tm = scheduler.manager;
  const id = await tm.run(() => scheduler.with({ dedupeKey: `отчёт:${owner}:🎉` }).schedule('echo', value), { metadata: { user: owner } });
  const row = (await tm.knex(jobs).where({ id }).first('owner', 'dedupe_key')) as { owner: string; dedupe_key: string };
  assert.deepEqual(row, { owner, dedupe_key: `отчёт:${owner}:🎉` });
  const worker = scheduler.worker({ minPollInterval: 10, maxPollInterval: 50 }).start();
  try {
    await finished({ getResult: (i: string) => scheduler.getResult(i, { visibleTo: owner }) }, id);
  } finally {
    await worker.stop();
  }
  assert.deepEqual(await scheduler.getResult(id, { visibleTo: owner }), { state: 'done', value });
}

eachDialect(
  'a latin1 database',
  (database) => {
    let admin: Knex;
    let latin1: Knex;
    const name = `aftercommit_latin1_${randomBytes(4).toString('hex')}`;

    before(async () => {
      admin = database.knex();
      await admin.raw(`CREATE DATABASE ${name} CHARACTER SET latin1 COLLATE latin1_swedish_ci`);
      const url = new URL(database.config.connection as string);
      url.pathname = `/${name}`;
      latin1 = knexFactory({ ...database.config, connection: url.toString() });
    });

    after(async () => {
      await latin1?.destroy();
      await admin.raw(`DROP DATABASE IF EXISTS ${name}`);
    });

    it('a fresh install stores an owner in Cyrillic and emoji arguments exactly, compared byte for byte', async () => {
      const scheduler = schedulerOn(latin1, 'fresh_');
      await scheduler.migrate();
      await roundTrip(scheduler, 'fresh_jobs', OWNER, ARGUMENT);
      const columns = (
        await latin1.raw(
          "SELECT COLUMN_NAME AS name, CHARACTER_SET_NAME AS charset, COLLATION_NAME AS collation FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'fresh_jobs' AND CHARACTER_SET_NAME IS NOT NULL",
        )
      )[0] as { name: string; charset: string; collation: string }[];
      for (const column of columns) {
        assert.equal(column.charset, 'utf8mb4', column.name);
        assert.match(column.collation, /^utf8mb4_(0900|nopad)_bin$/, column.name);
      }
    });

    it('a version-1 table in latin1 is converted by migrate(): its rows kept, new text stored exactly', async () => {
      const scheduler = schedulerOn(latin1, 'old_');
      await migrateToVersion1(latin1, scheduler);
      const old = await writeAsVersion1(latin1, 'old_jobs', { owner: 'zoë', key: 'café', args: ['crème brûlée'] });
      await scheduler.migrate();
      const row = (await latin1('old_jobs').where({ id: old }).first('owner', 'dedupe_key', 'args')) as { owner: string; dedupe_key: string; args: string };
      assert.deepEqual(row, { owner: 'zoë', dedupe_key: 'café', args: '["crème brûlée"]' });
      await roundTrip(scheduler, 'old_jobs', OWNER, ARGUMENT);
    });
  },
  ['mysql'],
);

eachDialect('migration step 2 on a version-1 table', (database: TestDatabase) => {
  let knex: Knex;
  let prefix: string;

  before(() => {
    knex = database.knex();
    prefix = `${database.table('v1')}_`;
  });

  after(() => knex.schema.dropTableIfExists(`${prefix}jobs`).dropTableIfExists(`${prefix}schema`));

  it('keeps the pending keys (with and without an owner), then scopes keys by owner and compares them exactly', async () => {
    const scheduler = schedulerOn(knex, prefix);
    const tm = scheduler.manager;
    await migrateToVersion1(knex, scheduler);
    const keyed = (user: string | undefined, key: string) => tm.run(() => scheduler.with({ dedupeKey: key }).schedule('echo', key), { metadata: { user } });
    const anonymous = await writeAsVersion1(knex, `${prefix}jobs`, { owner: null, key: 'nightly' });
    const alices = await writeAsVersion1(knex, `${prefix}jobs`, { owner: 'alice', key: 'report' });
    await scheduler.migrate();
    assert.deepEqual((await knex(`${prefix}schema`).orderBy('version')).map((r: { version: number }) => Number(r.version)), [1, 2, 3, 4, 5]);
    assert.equal(await keyed(undefined, 'nightly'), anonymous, 'a pending key without an owner still holds');
    assert.equal(await keyed('alice', 'report'), alices, 'a pending key of an owner still holds');
    assert.notEqual(await keyed('bob', 'report'), alices, 'another owner gets a job of their own');
    assert.notEqual(await keyed('alice', 'Report'), alices, 'case counts');
    assert.notEqual(await keyed('alice', 'report '), alices, 'trailing spaces count');
    await scheduler.migrate(); // recorded: a no-op
  });
});
