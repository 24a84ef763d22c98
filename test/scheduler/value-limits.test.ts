/**
 * Deep, wide and large values (issue #11, point 8). Arguments nested thousands
 * of levels deep gave a RangeError (a 500) instead of UnstorableValueError;
 * the transaction's metadata was not checked at schedule(), so a 70 KB
 * `meta.extension` failed at COMMIT on MariaDB. Values are stored at most 100
 * levels deep (checked by the encoder, with the path), everything accepted is
 * decoded whole, and meta is checked for storability and size at schedule().
 */
import { after, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import {
  PersistentTransactionalScheduler,
  TransactionManager,
  TransactionalScheduler,
  UnstorableValueError,
  type ArgumentCodec,
  type JobHandle,
  type ScheduleResult,
  type TransactionMeta,
  type Worker,
} from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { finished, recordingLogger } from '../support/helpers.js';

/** `leaf` inside `depth` objects ({ a: … }) or arrays ([ … ]), built without recursion. */
function nested(depth: number, container: 'object' | 'array', leaf: unknown = 'leaf'): unknown {
  let value = leaf;
  for (let level = 0; level < depth; level++) value = container === 'object' ? { a: value } : [value];
  return value;
}

/** A value of a class the test codec stores as a plain object that holds the value itself. */
class Box {
  constructor(readonly inner: unknown) {}
}
const selfEncodingCodec: ArgumentCodec<Box> = { name: 'box', test: (v) => v instanceof Box, encode: (box) => box, decode: (stored) => stored as Box };

eachDialect('limits of stored values', (database) => {
  let knex: Knex;
  let notes: string;
  let prefix: string;
  let tm: TransactionManager;
  let inMemory: TransactionalScheduler;
  let persistent: PersistentTransactionalScheduler;
  let worker: Worker;

  function defineJobs(scheduler: TransactionalScheduler | PersistentTransactionalScheduler) {
    scheduler.define('identity', async (_job: JobHandle, value: unknown) => value);
    scheduler.define('meta', async (job: JobHandle) => job.meta);
  }

  before(async () => {
    knex = database.knex();
    notes = database.table('notes');
    prefix = `${database.table('vl')}_`;
    await knex.schema.createTable(notes, (t) => {
      t.increments('id');
      t.string('text');
    });
    tm = new TransactionManager(knex, { logger: recordingLogger() });
    inMemory = new TransactionalScheduler(tm, { codecs: [selfEncodingCodec] });
    persistent = new PersistentTransactionalScheduler(tm, { tablePrefix: prefix, codecs: [selfEncodingCodec] });
    defineJobs(inMemory);
    defineJobs(persistent);
    await persistent.migrate();
    worker = persistent.worker({ minPollInterval: 10, maxPollInterval: 50 }).start();
  });

  after(async () => {
    await worker.stop({ timeout: 1000 });
    await knex.schema.dropTableIfExists(`${prefix}jobs`);
    await knex.schema.dropTableIfExists(`${prefix}schema`);
  });

  beforeEach(() => knex(notes).delete());

  for (const kind of ['in-memory', 'persistent'] as const) {
    describe(`${kind} scheduler`, () => {
      const scheduler = () => (kind === 'in-memory' ? inMemory : persistent);

      /** Schedules in a request that also writes a row; returns the error schedule() threw. */
      const refused = (job: string, args: unknown[], metadata?: TransactionMeta) =>
        tm.run(
          async (tx) => {
            await tx.db(notes).insert({ text: 'the request’s own work' });
            try {
              scheduler().schedule(job, ...args);
            } catch (err) {
              return err as Error;
            }
            throw new Error('schedule() accepted what it should refuse');
          },
          { metadata },
        );

      it('arguments nested thousands of levels deep are refused with UnstorableValueError naming the path, not a RangeError', async () => {
        for (const container of ['object', 'array'] as const) {
          const err = await refused('identity', [nested(5000, container)]);
          assert.ok(err instanceof UnstorableValueError, `got ${err}`);
          assert.match(
            err.message,
            container === 'object'
              ? /^cannot schedule 'identity': argument 1\.a\.a\.a.*\.a\.a is nested more than 100 levels deep when stored/
              : /^cannot schedule 'identity': argument 1\[0\]\[0\].*\[0\]\[0\] is nested more than 100 levels deep when stored/,
          );
          assert.ok(err.message.length < 600, `a short message: ${err.message}`);
        }
        assert.equal(Number((await knex(notes).count({ n: '*' }).first())!.n), 2, 'the requests went on and committed');
      });

      it('the deepest value accepted (100 levels) comes back whole from the job; one level more is refused', async () => {
        for (const container of ['object', 'array'] as const) {
          const deepest = nested(100, container, new Date(0)); // the Date is one more level when stored
          assert.match((await refused('identity', [deepest])).message, /is nested more than 100 levels deep/);
          const accepted = nested(99, container, new Date(0));
          const id = await tm.run(async () => scheduler().schedule('identity', accepted));
          assert.deepStrictEqual(await finished(scheduler(), id), { state: 'done', value: accepted });
          assert.match((await refused('identity', [nested(101, container)])).message, /is nested more than 100 levels deep/);
        }
      });

      it('a codec whose stored form holds what it encodes is refused, not a stack overflow', async () => {
        const err = await refused('identity', [new Box(1)]);
        assert.ok(err instanceof UnstorableValueError, `got ${err}`);
        assert.match(err.message, /argument 1 is nested more than 100 levels deep when stored/);
      });

      it('a sparse array of 4 billion holes, and an array that holds itself 2^60 times, are refused at once for their size', async () => {
        const holes: unknown[] = [];
        holes.length = 2 ** 32 - 1;
        let doubling: unknown = [1];
        for (let i = 0; i < 60; i++) doubling = [doubling, doubling];
        for (const value of [holes, doubling]) {
          const started = Date.now();
          const err = await refused('identity', [value]);
          assert.ok(err instanceof UnstorableValueError, `got ${err}`);
          assert.match(err.message, /^the arguments of 'identity' hold more than 65536 values, so they take more than the limit of 65536 bytes \(maxArgumentBytes\) when stored/);
          assert.ok(Date.now() - started < 2000, `refused in ${Date.now() - started} ms`);
        }
      });

      it('a 70 KB meta.extension is refused at schedule(), naming meta.extension.blob; the request goes on and commits', async () => {
        const metadata = { user: 'alice', extension: { requestId: 'r1', blob: 'x'.repeat(70_000) } };
        const err = await refused('identity', [1], metadata);
        assert.ok(err instanceof UnstorableValueError, `got ${err}`);
        assert.match(
          err.message,
          /^cannot schedule 'identity': the transaction's meta takes 700\d\d bytes when stored, over the limit of 65535 \(a TEXT column on MySQL\/MariaDB\): keep meta\.extension to ids and short notes \(meta\.extension\.blob takes 700\d\d of them\)$/,
        );
        assert.equal(Number((await knex(notes).count({ n: '*' }).first())!.n), 1, 'the request committed its own work');
        const id = await tm.run(async () => scheduler().schedule('meta'), { metadata: { ...metadata, extension: { ...metadata.extension, blob: 'x'.repeat(60_000) } } });
        assert.equal(((await finished(scheduler(), id)) as { value: TransactionMeta }).value.extension!.blob, 'x'.repeat(60_000), 'up to the limit is kept');
      });

      it('meta that cannot be stored, or is nested too deep, is refused at schedule() naming the path', async () => {
        const cases: [unknown, RegExp][] = [
          [{ callback: () => 1 }, /^cannot schedule 'meta': the transaction's meta\.extension\.callback is a function/],
          [{ seen: new Map() }, /^cannot schedule 'meta': the transaction's meta\.extension\.seen is an instance of Map/],
          [{ deep: nested(5000, 'object') }, /^cannot schedule 'meta': the transaction's meta\.extension\.deep\.a\.a.* is nested more than 100 levels deep when stored/],
        ];
        for (const [extension, message] of cases) {
          const err = await refused('meta', [], { user: 'alice', extension: extension as Record<string, unknown> });
          assert.ok(err instanceof UnstorableValueError, `got ${err}`);
          assert.match(err.message, message);
        }
      });

      it('meta comes back whole in job.meta, Dates and undefined included', async () => {
        const metadata = { user: 7, note: 'POST /reports', extension: { at: new Date(0), list: [undefined, 'x'], nested: nested(90, 'array') } };
        const id = await tm.run(async () => scheduler().schedule('meta'), { metadata });
        assert.deepStrictEqual(await finished(scheduler(), id), { state: 'done', value: metadata } satisfies ScheduleResult);
      });
    });
  }

  it('a stored value nested deeper than the limit (written to the jobs table) fails its job with UnstorableValueError, not a RangeError', async () => {
    const id = await tm.run(async () => persistent.with({ delay: 3_600_000 }).schedule('identity', 1)); // not run before it is changed
    const tooDeep = `[${'['.repeat(5000)}1${']'.repeat(5000)}]`;
    await knex(`${prefix}jobs`).where({ id }).update({ args: tooDeep, run_at: 0 });
    const result = await finished(persistent, id);
    assert.deepEqual(result, {
      state: 'failed',
      error: { name: 'UnstorableValueError', message: 'a stored value is nested more than 100 levels deep: it was not written by this version of aftercommit, or was changed since' },
    });
  });
});
