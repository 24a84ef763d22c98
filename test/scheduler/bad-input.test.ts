/**
 * What schedule() refuses, in the request, before anything is stored: unknown
 * job names, calls outside a transaction, and arguments that cannot be stored
 * faithfully. The request can catch the error and go on; nothing is lost.
 */
import { before, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import {
  NoTransactionError,
  TransactionManager,
  TransactionalScheduler,
  UnknownJobError,
  UnstorableValueError,
  bigIntCodec,
  type JobHandle,
} from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { finished, recordingLogger } from '../support/helpers.js';

eachDialect(
  'schedule() with bad input',
  (database) => {
    let knex: Knex;
    let notes: string;
    let tm: TransactionManager;
    let scheduler: TransactionalScheduler;

    before(async () => {
      knex = database.knex();
      notes = database.table('notes');
      await knex.schema.createTable(notes, (t) => {
        t.increments('id');
        t.string('text');
      });
      tm = new TransactionManager(knex, { logger: recordingLogger() });
      scheduler = new TransactionalScheduler(tm, { maxArgumentBytes: 1000 });
      scheduler.define('echo', async (_job: JobHandle, ...args: unknown[]) => args);
    });

    /** Schedules in a request that also writes a row; returns the error schedule() threw. */
    async function refused(...args: unknown[]): Promise<Error> {
      return tm.run(async (tx) => {
        await tx.db(notes).insert({ text: 'the request’s own work' });
        try {
          scheduler.schedule('echo', ...args);
        } catch (err) {
          return err as Error;
        }
        throw new Error('schedule() accepted what it should refuse');
      });
    }

    const cycle: Record<string, unknown> = { name: 'loop' };
    cycle.self = { back: cycle };
    const cases: [string, unknown[], RegExp][] = [
      ['a function', [1, { callback: () => 1 }], /argument 2\.callback is a function/],
      ['a cycle', [cycle], /argument 1\.self\.back is a reference back to one of its own containers \(a cycle\)/],
      ['a BigInt without a codec', [10n], /argument 1 is a BigInt \(add a codec, e.g\. codecs: \[bigIntCodec\]\)/],
      ['a class instance', [new Map([[1, 2]])], /argument 1 is an instance of Map/],
      ['NaN', [[1, Number.NaN]], /argument 1\[1\] is the number NaN/],
      ['a symbol', [Symbol('s')], /argument 1 is a symbol/],
      ['an Invalid Date', [new Date('nope')], /argument 1 is refused by codec 'date': an Invalid Date has no time to store/],
      ['too many bytes', ['x'.repeat(2000)], /the arguments of 'echo' take 2\d\d\d bytes when stored, over the limit of 1000 \(maxArgumentBytes\): pass ids and load the data in the job/],
    ];
    for (const [what, args, message] of cases) {
      it(`refuses ${what}, naming where it is`, async () => {
        const err = await refused(...args);
        assert.ok(err instanceof UnstorableValueError, `got ${err}`);
        assert.match(err.message, /^cannot schedule 'echo': |^the arguments of 'echo'/);
        assert.match(err.message, message);
      });
    }

    it('refuses an unknown job name, listing the defined ones', async () => {
      await tm.run(async () => {
        assert.throws(() => scheduler.schedule('ehco', 1), (err: unknown) => {
          assert.ok(err instanceof UnknownJobError);
          assert.equal(err.message, "no job named 'ehco' is defined (defined: 'echo'); register it with scheduler.define('ehco', fn) before scheduling it");
          return true;
        });
      });
    });

    it('refuses to schedule outside a transaction', () => {
      assert.throws(() => scheduler.schedule('echo', 1), NoTransactionError);
    });

    it('nothing is lost: the requests committed their own work, and no schedule was kept', async () => {
      const rows = await knex(notes).count({ n: '*' }).first();
      assert.equal(Number(rows!.n), cases.length);
      assert.deepEqual(scheduler.stats(), { uncommitted: 0, waiting: 0, pending: 0, running: 0, done: 0, failed: 0 });
    });

    it('stores what it accepts faithfully: undefined, null, nested data, Dates, and BigInt with its codec', async () => {
      const withBigInt = new TransactionalScheduler(tm, { codecs: [bigIntCodec] });
      withBigInt.define('echo', async (_job: JobHandle, ...args: unknown[]) => args);
      const args = [undefined, null, { $ac: 'looks like a tag', list: [1, 'two', { three: true }] }, new Date(0), 2n ** 70n];
      const id = await tm.run(async () => withBigInt.schedule('echo', ...args));
      assert.deepEqual(await finished(withBigInt, id), { state: 'done', value: args });
    });

    it('a key named __proto__ (from parsed JSON) comes back as a key, not as a prototype', async () => {
      const parsed = JSON.parse('{"__proto__": {"isAdmin": true}, "name": "x"}') as Record<string, unknown>;
      const id = await tm.run(async () => scheduler.schedule('echo', parsed));
      const result = await finished(scheduler, id);
      assert.ok(result.state === 'done');
      const [back] = result.value as [Record<string, unknown>];
      assert.ok(Object.hasOwn(back, '__proto__'));
      assert.equal(Object.getPrototypeOf(back), Object.prototype);
      assert.equal((back as { isAdmin?: unknown }).isAdmin, undefined);
      assert.deepEqual(Object.getOwnPropertyDescriptor(back, '__proto__')!.value, { isAdmin: true });
    });

    it('a hole in a sparse array comes back as undefined, not null (found by the property tests)', async () => {
      const id = await tm.run(async () => scheduler.schedule('echo', [, 'after the hole']));
      assert.deepStrictEqual(await finished(scheduler, id), { state: 'done', value: [[undefined, 'after the hole']] });
    });

    it('a result that cannot be stored fails the job and rolls back its writes', async () => {
      scheduler.define('returnsFunction', async (job: JobHandle) => {
        await job.db(notes).insert({ text: 'rolled back with the job' });
        return { render: () => 'html' };
      });
      const id = await tm.run(async () => scheduler.schedule('returnsFunction'));
      assert.deepEqual(await finished(scheduler, id), {
        state: 'failed',
        error: { name: 'UnstorableValueError', message: "the result of job 'returnsFunction' cannot be stored: result.render is a function" },
      });
      assert.equal((await knex(notes).where({ text: 'rolled back with the job' })).length, 0);
    });
  },
  ['sqlite'],
);
