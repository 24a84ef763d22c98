/**
 * Entity keys keep their type (issue #11, point 7). MariaDB compares a number
 * with a string column numerically and a string with an integer column after
 * converting it to a number: `ref('invites', 0)` loaded an invite keyed by a
 * non-numeric token, `ref('users', '1 OR 1=1')` loaded user 1. The allow-list
 * declares each key column's type, and a key of another type is refused when
 * the context is built and when a stored context is loaded, before any query.
 */
import { after, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import {
  EntityNotAllowedError,
  PersistentTransactionalScheduler,
  TransactionManager,
  TransactionalScheduler,
  ref,
  type JobHandle,
  type PersistentContext,
} from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { finished, recordingLogger } from '../support/helpers.js';

eachDialect('entity key types', (database) => {
  let knex: Knex;
  let invites: string; // keyed by a string token
  let users: string; // keyed by an integer
  let lines: string; // a composite key: an integer and a string
  let oldInvites: string; // the same tables, listed in the older allow-list form, without types
  let oldUsers: string;
  let prefix: string;
  let tm: TransactionManager;
  let scheduler: TransactionalScheduler;
  let entities: Record<string, string | Record<string, 'integer' | 'string'>>;

  const loadFirst = async (_job: JobHandle, context: PersistentContext) => context.get(0);

  before(async () => {
    knex = database.knex();
    invites = database.table('invites');
    users = database.table('users');
    lines = database.table('lines');
    oldInvites = database.table('old_invites');
    oldUsers = database.table('old_users');
    prefix = `${database.table('kt')}_`;
    for (const table of [invites, oldInvites]) {
      await knex.schema.createTable(table, (t) => {
        t.string('token', 64).primary();
        t.string('email').notNullable();
      });
    }
    for (const table of [users, oldUsers]) {
      await knex.schema.createTable(table, (t) => {
        t.integer('id').primary();
        t.string('name').notNullable();
      });
    }
    await knex.schema.createTable(lines, (t) => {
      t.integer('order_id').notNullable();
      t.string('code', 16).notNullable();
      t.string('item').notNullable();
      t.primary(['order_id', 'code']);
    });
    entities = {
      [invites]: { token: 'string' },
      [users]: { id: 'integer' },
      [lines]: { order_id: 'integer', code: 'string' },
      [oldInvites]: 'token',
      [oldUsers]: 'id',
    };
    tm = new TransactionManager(knex, { logger: recordingLogger() });
    scheduler = new TransactionalScheduler(tm, { entities });
    scheduler.define('loadFirst', loadFirst);
  });

  after(async () => {
    await knex.schema.dropTableIfExists(`${prefix}jobs`);
    await knex.schema.dropTableIfExists(`${prefix}schema`);
  });

  beforeEach(async () => {
    for (const table of [invites, oldInvites]) {
      await knex(table).delete();
      await knex(table).insert([
        { token: 'k3y-0f-the-v1ctim', email: 'victim@example.com' },
        { token: '42', email: 'forty-two@example.com' },
      ]);
    }
    for (const table of [users, oldUsers]) {
      await knex(table).delete();
      await knex(table).insert([
        { id: 1, name: 'alice' },
        { id: 2, name: 'bob' },
      ]);
    }
    await knex(lines).delete();
    await knex(lines).insert({ order_id: 7, code: 'A1', item: 'tea' });
  });

  /** Builds a context of `entity` inside a transaction; returns the error it threw. */
  const refusal = (entity: unknown) =>
    tm.run(async () => {
      try {
        scheduler.context([entity]);
      } catch (err) {
        return err as Error;
      }
      throw new Error(`the context of ${String(entity)} was accepted`);
    });

  /** Schedules a job that loads `entity` and returns what it found (or how it failed). */
  const loaded = async (entity: unknown) => finished(scheduler, await tm.run(async () => scheduler.schedule('loadFirst', scheduler.context([entity]))));

  it('keys of the declared type load their rows', async () => {
    assert.deepEqual(await loaded(ref(invites, 'k3y-0f-the-v1ctim')), { state: 'done', value: { token: 'k3y-0f-the-v1ctim', email: 'victim@example.com' } });
    assert.deepEqual(await loaded(ref(invites, '42')), { state: 'done', value: { token: '42', email: 'forty-two@example.com' } });
    assert.deepEqual(await loaded(ref(users, 2)), { state: 'done', value: { id: 2, name: 'bob' } });
    assert.deepEqual(await loaded(ref(lines, { order_id: 7, code: 'A1' })), { state: 'done', value: { order_id: 7, code: 'A1', item: 'tea' } });
  });

  it("a string-keyed table refuses a number: ref(invites, 0) would load a real invite on MariaDB", async () => {
    for (const key of [0, 42]) {
      const err = await refusal(ref(invites, key));
      assert.ok(err instanceof EntityNotAllowedError, `got ${err}`);
      assert.equal(
        err.message,
        `ref('${invites}', ${key}): key column 'token' of table '${invites}' is declared 'string', but the key is the number ${key}: ` +
          'give the key as a string, e.g. String(key)',
      );
    }
    await tm.run(() => assert.rejects(scheduler.load(invites, 0), EntityNotAllowedError));
    const err = await refusal(ref(lines, { order_id: 7, code: 0 as unknown as string }));
    assert.match(err.message, /key column 'code' of table '\w+' is declared 'string', but the key is the number 0/);
  });

  it("an integer-keyed table refuses strings: '1 OR 1=1' would load user 1 on MariaDB, and '1' is a string too", async () => {
    for (const key of ['1 OR 1=1', '1']) {
      const err = await refusal(ref(users, key));
      assert.ok(err instanceof EntityNotAllowedError, `got ${err}`);
      assert.equal(
        err.message,
        `ref('${users}', ${JSON.stringify(key)}): key column 'id' of table '${users}' is declared 'integer', but the key is the string ${JSON.stringify(key)}: ` +
          'give it as a number, after checking that the input is one (e.g. Number(input) when /^\\d+$/.test(input))',
      );
    }
    for (const key of [1.5, 2 ** 53]) assert.match((await refusal(ref(users, key))).message, new RegExp(`is declared 'integer', but the key is the number ${key}: give a whole number`));
    await tm.run(() => assert.rejects(scheduler.load(users, '1 OR 1=1'), EntityNotAllowedError));
    assert.match((await refusal(ref(lines, { order_id: '7', code: 'A1' }))).message, /key column 'order_id' of table '\w+' is declared 'integer', but the key is the string "7"/);
  });

  describe('key columns listed without a type (the older allow-list forms)', () => {
    it('take integers only: a safe integer, or its decimal digits as a string', async () => {
      assert.deepEqual(await loaded(ref(oldUsers, 1)), { state: 'done', value: { id: 1, name: 'alice' } });
      assert.deepEqual(await loaded(ref(oldUsers, '2')), { state: 'done', value: { id: 2, name: 'bob' } });
      for (const key of ['1 OR 1=1', '01', '1.0', ' 1', '+1', '1e0', 1.5, 2 ** 53, '9007199254740993']) {
        const err = await refusal(ref(oldUsers, key));
        assert.ok(err instanceof EntityNotAllowedError, `${JSON.stringify(key)}: got ${err}`);
        assert.match(err.message, new RegExp(`key column 'id' of table '${oldUsers}' has no declared type, so its keys must be integers`));
        assert.match(err.message, new RegExp(`declare the column's type in the entities option, e.g. \\{ ${oldUsers}: \\{ id: 'string' \\} \\} or \\{ ${oldUsers}: \\{ id: 'integer' \\} \\}`));
      }
    });

    it('refuse a string token, saying how to declare the column', async () => {
      const err = await refusal(ref(oldInvites, 'k3y-0f-the-v1ctim'));
      assert.ok(err instanceof EntityNotAllowedError);
      assert.match(err.message, new RegExp(`has no declared type, so its keys must be integers .*, got the string "k3y-0f-the-v1ctim"`));
    });

    it('compare an integer key as its decimal digits: ref(oldInvites, 0) finds no invite, ref(oldInvites, 42) the one keyed "42"', async () => {
      assert.deepEqual(await loaded(ref(oldInvites, 0)), {
        state: 'failed',
        error: { name: 'EntityNotFoundError', message: `context entity 0: no row in '${oldInvites}' with key 0 (it was deleted after the job was scheduled?)` },
      });
      assert.deepEqual(await loaded(ref(oldInvites, 42)), { state: 'done', value: { token: '42', email: 'forty-two@example.com' } });
    });
  });

  it('an allow-list with an unknown key type is refused when the scheduler is made', () => {
    assert.throws(() => new TransactionalScheduler(tm, { entities: { [users]: { id: 'int' as 'integer' } } }), {
      name: 'TypeError',
      message: `entities.${users}.id: the key type must be 'integer' or 'string', got "int"`,
    });
    assert.throws(() => new TransactionalScheduler(tm, { entities: { [users]: {} } }), /entities\.\w+: name the primary key column\(s\)/);
  });

  it('a stored context whose key was changed to another type is refused when the job loads it, before any query of the table', async () => {
    const persistent = new PersistentTransactionalScheduler(tm, { tablePrefix: prefix, entities });
    persistent.define('loadFirst', loadFirst);
    await persistent.migrate();
    const tampering: [entity: ReturnType<typeof ref>, stored: string, tampered: string][] = [
      [ref(users, 1), '"key":1', '"key":"1 OR 1=1"'],
      [ref(invites, 'k3y-0f-the-v1ctim'), '"key":"k3y-0f-the-v1ctim"', '"key":0'],
      [ref(oldUsers, 1), '"key":1', '"key":"1 OR 1=1"'],
      [ref(lines, { order_id: 7, code: 'A1' }), '"code":"A1"', '"code":0'],
    ];
    const ids: string[] = [];
    for (const [entity, stored, tampered] of tampering) {
      const id = await tm.run(async () => persistent.schedule('loadFirst', persistent.context([entity])));
      const row = await knex(`${prefix}jobs`).where({ id }).first();
      assert.ok(row.args.includes(stored), row.args);
      await knex(`${prefix}jobs`).where({ id }).update({ args: row.args.replace(stored, tampered) });
      ids.push(id);
    }
    const sent: string[] = [];
    const record = (query: { sql: string }) => sent.push(query.sql);
    knex.on('query', record);
    const worker = persistent.worker({ minPollInterval: 10, maxPollInterval: 50 }).start();
    try {
      for (const [i, id] of ids.entries()) {
        const result = await finished(persistent, id);
        assert.ok(result.state === 'failed', JSON.stringify(result));
        assert.equal(result.error.name, 'EntityNotAllowedError');
        assert.match(result.error.message, /but the key is the (string "1 OR 1=1"|number 0)|has no declared type, so its keys must be integers/, `case ${i}`);
      }
    } finally {
      await worker.stop({ timeout: 1000 });
      knex.off('query', record);
    }
    const touched = sent.filter((sql) => [users, invites, oldUsers, lines].some((table) => sql.includes(table)));
    assert.deepEqual(touched, [], 'no query of an entity table was sent');
  });
});
