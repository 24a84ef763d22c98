/**
 * dedupeKey compares exactly (case and trailing spaces count) and is scoped by
 * owner: one user is never handed the id of another user's job, and keys of
 * jobs scheduled without a user are still unique among themselves.
 */
import { beforeEach, it } from 'node:test';
import assert from 'node:assert/strict';
import type { TransactionMeta } from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { persistentSuite } from '../support/persistent-suite.js';
import { finished } from '../support/helpers.js';

eachDialect('dedupeKey', (database) => {
  const suite = persistentSuite(database, 'dd', (scheduler) => scheduler.define('report', async () => undefined));

  beforeEach(() => suite.knex(`${suite.prefix}jobs`).delete());

  /** Schedules with `key` in a transaction of its own, for `user` (none when undefined). */
  const scheduleAs = (user: TransactionMeta['user'], key: string) =>
    suite.tm.run(() => suite.scheduler.with({ dedupeKey: key }).schedule('report'), { metadata: { user } });

  it('keys that differ only in case are two keys', async () => {
    const upper = await scheduleAs('alice', 'report:Alice');
    const lower = await scheduleAs('alice', 'report:alice');
    assert.notEqual(lower, upper);
    assert.equal(await scheduleAs('alice', 'report:alice'), lower);
    assert.equal(await scheduleAs('alice', 'report:Alice'), upper);
  });

  it('keys that differ only in a trailing space are two keys', async () => {
    const bare = await scheduleAs('alice', 'report:alice');
    const spaced = await scheduleAs('alice', 'report:alice ');
    assert.notEqual(spaced, bare);
    assert.equal(await scheduleAs('alice', 'report:alice '), spaced);
  });

  it('two owners with the same key get a job each, and each sees only their own', async () => {
    const alices = await scheduleAs('alice', 'monthly');
    const bobs = await scheduleAs('bob', 'monthly');
    assert.notEqual(bobs, alices);
    assert.equal((await suite.scheduler.getResult(bobs, { visibleTo: 'bob' })).state, 'pending');
    assert.equal((await suite.scheduler.getResult(alices, { visibleTo: 'bob' })).state, 'unknown');
  });

  it('owners that differ only in case are two owners', async () => {
    const alices = await scheduleAs('alice', 'monthly');
    assert.notEqual(await scheduleAs('Alice', 'monthly'), alices);
  });

  it('the same owner gets the first id, in the same transaction and in later ones', async () => {
    const [first, second] = await suite.tm.run(
      async () => [await suite.scheduler.with({ dedupeKey: 'monthly' }).schedule('report'), await suite.scheduler.with({ dedupeKey: 'monthly' }).schedule('report')],
      { metadata: { user: 42 } },
    );
    assert.equal(second, first);
    assert.equal(await scheduleAs(42, 'monthly'), first);
    assert.equal(await scheduleAs('42', 'monthly'), first, 'meta.user 42 and "42" are one owner, as for getResult');
  });

  it('without a user, keys are still unique among themselves, and apart from every user’s', async () => {
    const anonymous = await scheduleAs(undefined, 'monthly');
    assert.equal(await scheduleAs(undefined, 'monthly'), anonymous);
    const alices = await scheduleAs('alice', 'monthly');
    assert.notEqual(alices, anonymous);
    assert.equal(await scheduleAs(undefined, 'monthly'), anonymous);
    assert.equal(Number((await suite.knex(`${suite.prefix}jobs`).count({ n: '*' }))[0]!.n), 2);
  });

  it('a key is free again once its job started, for its owner only (also without a user)', async () => {
    const scheduleIn = (user: TransactionMeta['user'], queue: string) =>
      suite.tm.run(() => suite.scheduler.with({ dedupeKey: 'monthly', queue }).schedule('report'), { metadata: { user } });
    const anonymous = await scheduleIn(undefined, 'now');
    const alices = await scheduleIn('alice', 'later');
    const worker = suite.scheduler.worker({ queues: ['now'], minPollInterval: 10, maxPollInterval: 50 }).start();
    try {
      assert.equal((await finished(suite.scheduler, anonymous)).state, 'done');
    } finally {
      await worker.stop();
    }
    assert.notEqual(await scheduleIn(undefined, 'now'), anonymous);
    assert.equal(await scheduleIn('alice', 'later'), alices, 'alice’s job has not started: her key still holds');
  });
});
