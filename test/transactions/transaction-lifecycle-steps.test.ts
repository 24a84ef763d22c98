/**
 * A transaction's life step by step (nesting, hooks, retries, commit and
 * abort), as the original package's `transactional` doctests walk it: the same
 * functions and printed lines, against a real database. Each function
 * also writes a row, so "committed" and "aborted" are checked in the database
 * and not only through hooks.
 */
import { before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import { ConflictError, TransactionManager, type Transaction } from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { ManualClock, recordingLogger } from '../support/helpers.js';

eachDialect('transactions step by step', (database) => {
  let knex: Knex;
  let observer: Knex;
  let table: string;
  let printed: string[];
  let logger: ReturnType<typeof recordingLogger>;
  let tm: TransactionManager;

  before(async () => {
    knex = database.knex();
    observer = database.knex();
    table = database.table('seed_rows');
    await knex.schema.createTable(table, (t) => {
      t.increments('id');
      t.string('written_by');
    });
  });

  beforeEach(async () => {
    await knex(table).delete();
    printed = [];
    logger = recordingLogger();
    tm = new TransactionManager(knex, { logger, clock: new ManualClock({ auto: true }) });
  });

  const print = (...parts: unknown[]) => printed.push(parts.join(' '));
  const rows = async () => (await observer(table).orderBy('id')).map((r: { written_by: string }) => r.written_by);

  /** register transaction hooks such that we can monitor transaction operation */
  function registerHooks(tx: Transaction, text: string) {
    tx.afterCommit(() => print('transaction commit:', text));
    tx.afterAbort(() => print('transaction abort:', text));
  }

  describe('nesting', () => {
    function define() {
      const g = tm.wrap(async function g(x: number) {
        registerHooks(tm.current!, 'g');
        print('g:', x);
        await tm.current!.db(table).insert({ written_by: 'g' });
      });
      const f = tm.wrap(async function f(a = 1, b = 2) {
        registerHooks(tm.current!, 'f');
        print('f:', a, b);
        await tm.current!.db(table).insert({ written_by: 'f' });
        await g(2 * a);
        print('after g call');
        print('seen from another connection:', (await rows()).length);
        return a + b;
      });
      return { f, g };
    }

    it('g called inside f joins f: both commit at the end of f, hooks in order f, g', async () => {
      const { f } = define();
      assert.equal(await f(), 3);
      assert.deepEqual(printed, [
        'f: 1 2',
        'g: 2',
        'after g call',
        'seen from another connection: 0',
        'transaction commit: f',
        'transaction commit: g',
      ]);
      assert.deepEqual(await rows(), ['f', 'g']);
    });

    it('g called on its own gets its own transaction', async () => {
      const { g } = define();
      await g(1);
      assert.deepEqual(printed, ['g: 1', 'transaction commit: g']);
      assert.deepEqual(await rows(), ['g']);
    });
  });

  it('an exception aborts the transaction and propagates', async () => {
    const raiseException = tm.wrap(async function raiseException() {
      registerHooks(tm.current!, 'raise exception');
      await tm.current!.db(table).insert({ written_by: 'raise exception' });
      print('raise exception');
      throw new RangeError('raised on purpose');
    });
    await assert.rejects(raiseException(), { name: 'RangeError', message: 'raised on purpose' });
    assert.deepEqual(printed, ['raise exception', 'transaction abort: raise exception']);
    assert.deepEqual(await rows(), []);
  });

  it('a ConflictError is retried in a new transaction, which then commits', async () => {
    class ConflictRaiser {
      raised = false;
      call = tm.wrap(async function call(this: ConflictRaiser) {
        registerHooks(tm.current!, 'conflict raiser');
        await tm.current!.db(table).insert({ written_by: this.raised ? 'second attempt' : 'first attempt' });
        if (this.raised) {
          print('conflict raiser returns without exception');
        } else {
          print('conflict raiser raises `ConflictError`');
          this.raised = true;
          throw new ConflictError();
        }
      });
    }
    const cr = new ConflictRaiser();
    await cr.call();
    assert.deepEqual(printed, [
      'conflict raiser raises `ConflictError`',
      'transaction abort: conflict raiser',
      'conflict raiser returns without exception',
      'transaction commit: conflict raiser',
    ]);
    assert.deepEqual(await rows(), ['second attempt']);
    const retries = logger.lines.filter((l) => l.msg.startsWith('retrying'));
    assert.equal(retries.length, 1);
    assert.match(retries[0]!.msg, /^retrying call after AFTERCOMMIT_CONFLICT: database conflict error \(attempt 2 of 4/);
    assert.equal(retries[0]!.obj.fn, 'call');
  });

  it('gives up after 1 + retries attempts and throws the last error', async () => {
    let attempts = 0;
    const alwaysConflicts = tm.wrap(
      async function alwaysConflicts() {
        attempts++;
        await tm.current!.db(table).insert({ written_by: `attempt ${attempts}` });
        throw new ConflictError(`conflict number ${attempts}`);
      },
      { retries: 2 },
    );
    await assert.rejects(alwaysConflicts(), { name: 'ConflictError', message: 'conflict number 3' });
    assert.equal(attempts, 3);
    assert.deepEqual(await rows(), []);
    assert.equal(logger.lines.filter((l) => l.msg.startsWith('retrying alwaysConflicts')).length, 2);
  });
});
