/**
 * Hooks, metadata, setRollbackOnly and debug: what runs when a transaction ends.
 */
import { before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import { ConflictError, TransactionManager, type Transaction } from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { ManualClock, recordingLogger } from '../support/helpers.js';

eachDialect('hooks and the end of a transaction', (database) => {
  let knex: Knex;
  let observer: Knex;
  let table: string;
  let logger: ReturnType<typeof recordingLogger>;
  let events: string[];

  before(async () => {
    knex = database.knex();
    observer = database.knex();
    table = database.table('notes');
    await knex.schema.createTable(table, (t) => {
      t.increments('id');
      t.string('text').notNullable();
    });
  });

  beforeEach(async () => {
    await knex(table).delete();
    logger = recordingLogger();
    events = [];
  });

  const manager = (options = {}) =>
    new TransactionManager(knex, { logger, clock: new ManualClock({ auto: true }), ...options });
  const texts = async () => (await observer(table).orderBy('id')).map((r: { text: string }) => r.text);

  describe('hook order and arguments', () => {
    it('runs before-commit hooks inside the transaction, then after-commit hooks with ok and their arguments', async () => {
      const tm = manager();
      await tm.run(async (tx) => {
        tx.afterCommit((ok, a: string, b: number) => events.push(`after 1 ${ok} ${a} ${b}`), 'x', 2);
        tx.beforeCommit(async (label: string) => {
          assert.equal(tm.current, tx);
          await tm.current!.db(table).insert({ text: `written by ${label}` });
          events.push('before 1');
          tx.beforeCommit(() => events.push('before 2, added by before 1'));
        }, 'hook');
        tx.afterCommit(() => events.push('after 2'));
        tx.afterAbort(() => events.push('never: the transaction commits'));
      });
      assert.deepEqual(events, ['before 1', 'before 2, added by before 1', 'after 1 true x 2', 'after 2']);
      assert.deepEqual(await texts(), ['written by hook']);
    });

    it('a before-commit hook that throws fails the attempt like an error in the function', async () => {
      const tm = manager();
      await assert.rejects(
        tm.run(async (tx) => {
          await tx.db(table).insert({ text: 'rolled back' });
          tx.beforeCommit(() => {
            throw new TypeError('invariant broken');
          });
          tx.afterAbort(() => events.push('aborted'));
        }),
        { name: 'TypeError', message: 'invariant broken' },
      );
      assert.deepEqual(events, ['aborted']);
      assert.deepEqual(await texts(), []);
    });

    it('a transient error in a before-commit hook is retried', async () => {
      const tm = manager();
      const attempts = await tm.run(async (tx) => {
        await tx.db(table).insert({ text: `attempt ${tx.attempt}` });
        tx.beforeCommit(() => {
          if (tx.attempt === 1) throw new ConflictError('stale version');
        });
        return tx.attempt;
      });
      assert.equal(attempts, 2);
      assert.deepEqual(await texts(), ['attempt 2']);
    });

    it('an after-commit hook that throws is logged and changes nothing', async () => {
      const tm = manager();
      const value = await tm.run(async (tx) => {
        await tx.db(table).insert({ text: 'kept' });
        tx.afterCommit(function failingHook() {
          throw new Error('hook failure');
        });
        tx.afterCommit(() => events.push('next hook still runs'));
        return 'value';
      });
      assert.equal(value, 'value');
      assert.deepEqual(events, ['next hook still runs']);
      assert.deepEqual(await texts(), ['kept']);
      const line = logger.lines.find((l) => l.level === 'error')!;
      assert.match(line.msg, /after-commit hook failingHook failed; ignored/);
    });
  });

  describe('setRollbackOnly', () => {
    it('rolls back instead of committing, and run() still returns the value', async () => {
      const tm = manager();
      const value = await tm.run(async (tx) => {
        await tx.db(table).insert({ text: 'not kept' });
        tx.afterCommit(() => events.push('never'));
        tx.afterAbort(() => events.push('aborted'));
        tx.setRollbackOnly();
        assert.equal(tx.rollbackOnly, true);
        return 'answer';
      });
      assert.equal(value, 'answer');
      assert.deepEqual(events, ['aborted']);
      assert.deepEqual(await texts(), []);
    });
  });

  describe('metadata', () => {
    it('comes from the manager, then the run options, with the function name as default note', async () => {
      const tm = manager({ metadata: () => ({ user: 'alice', extension: { tenant: 't1' } }) });
      const metas: unknown[] = [];
      await tm.run(async function nightlyImport(tx) {
        metas.push(tx.meta);
      });
      await tm.run(async (tx) => metas.push(tx.meta), { metadata: { note: 'POST /x', extension: { requestId: 'r1' } } });
      assert.deepEqual(metas, [
        { user: 'alice', note: 'nightlyImport', extension: { tenant: 't1' } },
        { user: 'alice', note: 'POST /x', extension: { tenant: 't1', requestId: 'r1' } },
      ]);
    });
  });

  describe('debug', () => {
    it('is awaited with the transaction still open before the rollback of a failing call', async () => {
      const inspected: string[][] = [];
      const tm = manager({
        debug: async (err: unknown, tx: Transaction) => {
          events.push(`debug ${(err as Error).message}`);
          inspected.push((await tx.db(table).orderBy('id')).map((r: { text: string }) => r.text));
        },
      });
      await assert.rejects(
        tm.run(async (tx) => {
          tx.afterAbort(() => events.push('aborted'));
          await tx.db(table).insert({ text: 'uncommitted' });
          throw new Error('boom');
        }),
        /boom/,
      );
      assert.deepEqual(events, ['debug boom', 'aborted']);
      assert.deepEqual(inspected, [['uncommitted']]);
      assert.deepEqual(await texts(), []);
    });

    it('is not called for an attempt that will be retried, only when retries run out', async () => {
      const tm = manager({ retries: 2, debug: (err: unknown, tx: Transaction) => events.push(`debug attempt ${tx.attempt}`) });
      await tm.run(async (tx) => {
        if (tx.attempt < 3) throw new ConflictError();
      });
      assert.deepEqual(events, []);
      await assert.rejects(
        tm.run(async () => {
          throw new ConflictError();
        }),
        ConflictError,
      );
      assert.deepEqual(events, ['debug attempt 3']);
    });
  });
});

eachDialect(
  'a failed statement whose error was swallowed (PostgreSQL)',
  (database) => {
    let knex: Knex;
    let table: string;
    before(async () => {
      knex = database.knex();
      table = database.table('unique_names');
      await knex.schema.createTable(table, (t) => t.string('name').primary());
      await knex(table).insert({ name: 'taken' });
    });

    it('COMMIT answered with ROLLBACK is a failed commit, not a success', async () => {
      const tm = new TransactionManager(knex, { logger: recordingLogger() });
      const seen: boolean[] = [];
      await assert.rejects(
        tm.run(async (tx) => {
          tx.afterCommit((ok) => seen.push(ok));
          await tx.db(table).insert({ name: 'new' });
          await tx.db(table).insert({ name: 'taken' }).catch(() => undefined); // duplicate, ignored
        }),
        { name: 'CommitRolledBackError', message: /one of its statements failed earlier/ },
      );
      assert.deepEqual(seen, [false], 'after-commit hooks learn that nothing was committed');
      assert.deepEqual((await knex(table).orderBy('name')).map((r: { name: string }) => r.name), ['taken']);
      // The way to survive a failing statement: a savepoint.
      await tm.run(async (tx) => {
        await tx.db(table).insert({ name: 'new' });
        await tx.db.transaction((sp) => sp(table).insert({ name: 'taken' })).catch(() => undefined);
      });
      assert.deepEqual((await knex(table).orderBy('name')).map((r: { name: string }) => r.name), ['new', 'taken']);
    });
  },
  ['postgres'],
);
