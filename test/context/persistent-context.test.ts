/**
 * Entity contexts: refs (simple and composite keys), rows the library loaded,
 * refusal of anything else, of tables not allowed and of keys that do not fit,
 * re-loading in the job's transaction, and entities that disappeared.
 */
import { before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import {
  EntityNotAllowedError,
  TransactionManager,
  TransactionalScheduler,
  UnstorableValueError,
  ref,
  type JobHandle,
  type PersistentContext,
} from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { finished, recordingLogger } from '../support/helpers.js';

eachDialect('persistent contexts', (database) => {
  let knex: Knex;
  let users: string;
  let lines: string;
  let secrets: string;
  let tm: TransactionManager;
  let scheduler: TransactionalScheduler;

  before(async () => {
    knex = database.knex();
    users = database.table('users');
    lines = database.table('order_lines');
    secrets = database.table('secrets');
    await knex.schema.createTable(users, (t) => {
      t.integer('id').primary();
      t.string('name').notNullable();
    });
    await knex.schema.createTable(lines, (t) => {
      t.integer('order_id').notNullable();
      t.integer('line').notNullable();
      t.string('item').notNullable();
      t.primary(['order_id', 'line']);
    });
    await knex.schema.createTable(secrets, (t) => {
      t.integer('id').primary();
      t.string('secret');
    });
    tm = new TransactionManager(knex, { logger: recordingLogger() });
    scheduler = new TransactionalScheduler(tm, { entities: { [users]: 'id', [lines]: ['order_id', 'line'] } });
    scheduler.define('describe', async (job: JobHandle, context: PersistentContext) => {
      const out: string[] = [];
      for (let i = 0; i < context.length; i++) out.push(JSON.stringify(await context.get(i)));
      for (const name of context.names()) out.push(`${name}=${JSON.stringify(await context.get(name))}`);
      return out;
    });
  });

  beforeEach(async () => {
    for (const table of [users, lines, secrets]) await knex(table).delete();
    await knex(users).insert([
      { id: 1, name: 'alice' },
      { id: 2, name: 'bob' },
    ]);
    await knex(lines).insert({ order_id: 7, line: 2, item: 'tea' });
    await knex(secrets).insert({ id: 1, secret: 'do not load me' });
  });

  it('re-loads refs, composite refs and loaded rows in the job, positional and named', async () => {
    const sid = await tm.run(async () => {
      const bob = await scheduler.load(users, 2);
      return scheduler.schedule(
        'describe',
        scheduler.context([ref(users, 1), bob], { line: ref(lines, { order_id: 7, line: 2 }) }),
      );
    });
    assert.deepEqual(await finished(scheduler, sid), {
      state: 'done',
      value: ['{"id":1,"name":"alice"}', '{"id":2,"name":"bob"}', 'line={"order_id":7,"line":2,"item":"tea"}'],
    });
  });

  it('many requests at once each hand their own entities to their own job', async () => {
    await knex(users).insert(Array.from({ length: 30 }, (_, i) => ({ id: 100 + i, name: `user ${100 + i}` })));
    const ids = await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        tm.run(async (tx) => {
          await new Promise((r) => setTimeout(r, Math.random() * 5));
          const id = scheduler.schedule('describe', scheduler.context([], { me: await scheduler.load(users, 100 + i) }));
          await tx.db(users).where({ id: 100 + i }).update({ name: `renamed ${100 + i}` }); // after schedule()
          return id;
        }),
      ),
    );
    for (const [i, id] of ids.entries()) {
      assert.deepEqual(await finished(scheduler, id), { state: 'done', value: [`me={"id":${100 + i},"name":"renamed ${100 + i}"}`] });
    }
  });

  describe('refused when the context is built', () => {
    it('a plain object: the context cannot tell its table and key', async () => {
      await tm.run(async () => {
        assert.throws(() => scheduler.context([{ id: 1, name: 'alice' }]), {
          name: 'UnstorableValueError',
          message: /context entity 0 is a plain object, and a context cannot tell its table and key: give ref\(table, key\) instead/,
        });
        assert.throws(() => scheduler.context([], { who: 42 }), UnstorableValueError);
      });
    });

    it('a table that is not in the allow-list', async () => {
      assert.throws(() => scheduler.context([ref(secrets, 1)]), {
        name: 'EntityNotAllowedError',
        message: new RegExp(`jobs may not load entities from table '${secrets}': the scheduler's entities option allows '${users}', '${lines}'`),
      });
      const noList = new TransactionalScheduler(tm);
      assert.throws(() => noList.context([ref(users, 1)]), /the scheduler has no entities option; declare the tables and their keys/);
    });

    it('a key that does not fit the table’s primary key', () => {
      assert.throws(() => scheduler.context([ref(lines, 7)]), /has a composite key \(order_id, line\): give it as an object/);
      assert.throws(() => scheduler.context([ref(lines, { order_id: 7 })]), /is keyed by \(order_id, line\), not by \(order_id\)/);
      assert.throws(() => ref(users, { id: Number.NaN }), /must be a non-empty string or a finite number/);
      assert.throws(() => ref('users; drop table x', 1), /must be a plain table name/);
    });
  });

  it('an entity deleted after scheduling fails the job with an error naming table and key', async () => {
    const sid = await tm.run(async (tx) => {
      const id = scheduler.schedule('describe', scheduler.context([], { who: ref(users, 2) }));
      await tx.db(users).where({ id: 2 }).delete();
      return id;
    });
    assert.deepEqual(await finished(scheduler, sid), {
      state: 'failed',
      error: {
        name: 'EntityNotFoundError',
        message: `context entity 'who': no row in '${users}' with key 2 (it was deleted after the job was scheduled?)`,
      },
    });
  });

  it('stored data naming another table is refused when read back, before any query', async () => {
    // What a tampered store would hand back: a context naming a table outside the allow-list.
    const tampered = JSON.stringify([{ $ac: 'context', v: { positional: [{ table: secrets, key: 1 }], named: {} } }]);
    const codec = (scheduler as unknown as { codec: { decodeArguments(text: string): unknown[] } }).codec;
    const sent: string[] = [];
    knex.on('query', (q: { sql: string }) => sent.push(q.sql));
    assert.throws(() => codec.decodeArguments(tampered), EntityNotAllowedError);
    assert.deepEqual(sent, []);
  });
});
