/**
 * getResult checks the owner in its query and reads only small columns first:
 * a foreign id is read like an unknown one (the same statement, no row), and
 * the result or error is read only for whoever may see it; the arguments never.
 * (The cost, measured: .exp/getresult-cost.mts, reported in issue #11.)
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import { PersistentTransactionalScheduler, TransactionManager, type JobHandle } from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { finished, recordingLogger } from '../support/helpers.js';

eachDialect('getResult reads', (database) => {
  let knex: Knex;
  let tm: TransactionManager;
  let scheduler: PersistentTransactionalScheduler;
  let prefix: string;
  let statements: string[] | undefined;

  before(async () => {
    knex = database.knex();
    prefix = `${database.table('poll')}_`;
    tm = new TransactionManager(knex, { logger: recordingLogger() });
    // Without wake-ups: on MySQL, a commit's read of the workers to wake would land among the statements counted here.
    scheduler = new PersistentTransactionalScheduler(tm, { tablePrefix: prefix, wakeUp: false });
    scheduler.define('echo', async (_job: JobHandle, value: unknown) => value);
    await scheduler.migrate();
    knex.on('query', (query: { sql: string }) => statements?.push(query.sql));
  });

  after(() => knex.schema.dropTableIfExists(`${prefix}jobs`).dropTableIfExists(`${prefix}schema`));

  /** The statements `call` sends. */
  async function sent(call: () => Promise<unknown>): Promise<string[]> {
    statements = [];
    try {
      await call();
      return statements;
    } finally {
      statements = undefined;
    }
  }

  const LARGE_COLUMNS = /\*|\bargs\b|\bmeta\b|\bresult\b|\berror\b/;

  it('a foreign id sends what an unknown id sends: one small-column read with the owner in its WHERE clause', async () => {
    const alices = await tm.run(() => scheduler.schedule('echo', 'x'.repeat(60_000)), { metadata: { user: 'alice' } });
    const foreign = await sent(async () => assert.deepEqual(await scheduler.getResult(alices, { visibleTo: 'bob' }), { state: 'unknown' }));
    const unknown = await sent(async () => assert.deepEqual(await scheduler.getResult('f'.repeat(32), { visibleTo: 'bob' }), { state: 'unknown' }));
    assert.deepEqual(foreign, unknown);
    assert.equal(foreign.length, 1);
    assert.match(foreign[0]!, /\bowner\b.*\bowner\b/, 'the owner condition is in the query');
    assert.doesNotMatch(foreign[0]!, LARGE_COLUMNS);
    const own = await sent(async () => assert.deepEqual(await scheduler.getResult(alices, { visibleTo: 'alice' }), { state: 'pending' }));
    assert.deepEqual(own, foreign, 'a pending job of one’s own: the same read');
  });

  it('the result is read only for the owner (and for trusted callers), after the owner check', async () => {
    const id = await tm.run(() => scheduler.schedule('echo', 'the result'), { metadata: { user: 'alice' } });
    const worker = scheduler.worker({ minPollInterval: 10, maxPollInterval: 50 }).start();
    try {
      await finished(scheduler, id);
    } finally {
      await worker.stop();
    }
    const foreign = await sent(async () => assert.deepEqual(await scheduler.getResult(id, { visibleTo: 'bob' }), { state: 'unknown' }));
    assert.equal(foreign.length, 1);
    assert.doesNotMatch(foreign[0]!, LARGE_COLUMNS);
    const own = await sent(async () => assert.deepEqual(await scheduler.getResult(id, { visibleTo: 'alice' }), { state: 'done', value: 'the result' }));
    assert.deepEqual(own[0], foreign[0]);
    assert.equal(own.length, 2);
    assert.match(own[1]!, /\bresult\b/);
    assert.doesNotMatch(own[1]!, /\*|\bargs\b/);
    const trusted = await sent(async () => assert.equal((await scheduler.getResult(id)).state, 'done'));
    assert.doesNotMatch(trusted[0]!, /\bowner\b.*\bowner\b|\bargs\b|\*/, 'no owner condition without visibleTo, and no arguments');
  });
});
