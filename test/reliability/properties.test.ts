/**
 * Bad input, generated (fast-check): the polling route never answers 5xx and
 * shows a job only to its owner; schedule() either stores arguments faithfully
 * or refuses them with UnstorableValueError, storing nothing, and so it does for
 * values thousands of levels deep, arrays and objects of thousands of members
 * (or billions of holes), and the transaction's metadata that travels with the
 * job; no unhandled rejection anywhere.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import Koa from 'koa';
import knexFactory, { type Knex } from 'knex';
import {
  PersistentTransactionalScheduler,
  TransactionManager,
  UnknownJobError,
  UnstorableValueError,
  type JobHandle,
  type TransactionMeta,
  type Worker,
} from '../../lib/index.js';
import { aftercommit, jobRoutes } from '../../lib/koa/index.js';
import { finished, recordingLogger } from '../support/helpers.js';
import { serve, type Served } from '../support/http.js';

const unhandled: unknown[] = [];
process.on('unhandledRejection', (reason) => unhandled.push(reason));

let dir: string;
let knex: Knex;
let tm: TransactionManager;
let scheduler: PersistentTransactionalScheduler;
let worker: Worker;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'aftercommit-properties-'));
  knex = knexFactory({ client: 'better-sqlite3', connection: { filename: join(dir, 'db.sqlite') }, useNullAsDefault: true });
  tm = new TransactionManager(knex, { logger: recordingLogger() });
  scheduler = new PersistentTransactionalScheduler(tm);
  scheduler.define('echo', async (_job: JobHandle, ...args: unknown[]) => args);
  scheduler.define('identity', async (_job: JobHandle, value: unknown) => value);
  scheduler.define('meta', async (job: JobHandle) => job.meta);
  await scheduler.migrate();
  worker = scheduler.worker({ minPollInterval: 5, maxPollInterval: 20 }).start();
});

after(async () => {
  await worker.stop({ timeout: 1000 });
  await knex.destroy();
  rmSync(dir, { recursive: true, force: true });
  assert.deepEqual(unhandled, [], 'no unhandled rejection');
});

/** What a stored value comes back as: -0 as 0, holes as undefined, undefined properties dropped, plain prototypes. */
function normalize(value: unknown): unknown {
  if (Object.is(value, -0)) return 0;
  if (Array.isArray(value)) return Array.from(value, normalize);
  if (value instanceof Date || typeof value !== 'object' || value === null) return value;
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined).map(([k, v]) => [k, normalize(v)]));
}

const jobRows = async () => Number((await knex('aftercommit_jobs').count({ n: '*' }).first())!.n);

/**
 * Schedules `job` in a transaction with `metadata`; an accepted schedule must
 * come back from the job as `expected`, a refused one must be refused with
 * UnstorableValueError and store nothing. Returns which it was.
 */
async function storedFaithfullyOrRefused(job: string, args: unknown[], expected: unknown, metadata?: TransactionMeta): Promise<'accepted' | 'refused'> {
  const before = await jobRows();
  let id: string | undefined;
  let refusal: unknown;
  await tm.run(
    async () => {
      try {
        id = scheduler.schedule(job, ...args);
      } catch (err) {
        refusal = err;
      }
    },
    { name: 'property', metadata },
  );
  if (refusal !== undefined) {
    assert.ok(refusal instanceof UnstorableValueError, `refused with ${String(refusal)}`);
    assert.equal(await jobRows(), before, 'a refused schedule stores no row');
    return 'refused';
  }
  const result = await finished(scheduler, id!);
  assert.equal(result.state, 'done', JSON.stringify(result).slice(0, 1000));
  assert.deepStrictEqual(normalize((result as { value: unknown }).value), normalize(expected));
  return 'accepted';
}

/** `leaf` inside `depth` containers, cycling through `shapes`; built without recursion, as deep as asked. */
function nestedValue({ depth, shapes, leaf }: { depth: number; shapes: ('array' | 'object' | 'tagKey' | 'hole')[]; leaf: unknown }): unknown {
  let value = leaf;
  for (let level = 0; level < depth; level++) {
    const shape = shapes[level % shapes.length];
    if (shape === 'array') value = [value];
    else if (shape === 'object') value = { a: value };
    else if (shape === 'tagKey') value = { $ac: 'not a tag', v: value }; // stored inside a tag of its own: one level more
    else value = [, value]; // a hole, then the value
  }
  return value;
}

/** Values from a few levels to thousands of levels deep, most of them near the 100 levels the encoder allows. */
const deepValues = fc
  .record({
    depth: fc.oneof(fc.integer({ min: 0, max: 120 }), fc.integer({ min: 0, max: 5000 })),
    shapes: fc.array(fc.constantFrom('array' as const, 'object' as const, 'tagKey' as const, 'hole' as const), { minLength: 1, maxLength: 4 }),
    leaf: fc.oneof(fc.string({ maxLength: 5 }), fc.integer(), fc.constant(undefined), fc.date({ noInvalidDate: true })),
  })
  .map(nestedValue);

/** Wide values, either side of the 65,536 bytes of maxArgumentBytes: long arrays and strings, objects of many keys, billions of holes, shared arrays. */
const wideValues = fc.oneof(
  fc.nat(30_000).map((n) => Array.from({ length: n }, (_, i) => i)),
  fc.nat(15_000).map((n) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`key${i}`, i % 2 === 0 ? i : null]))),
  fc.nat(100_000).map((n) => 'x'.repeat(n)),
  fc.oneof(fc.nat(5000), fc.nat(2 ** 32 - 1)).map((n) => {
    const holes: unknown[] = [];
    holes.length = n;
    return holes;
  }),
  fc.nat(62).map((times) => {
    let shared: unknown = ['leaf'];
    for (let i = 0; i < times; i++) shared = [shared, shared]; // 2^times leaves when stored
    return shared;
  }),
);

describe('schedule() arguments', () => {
  it('are stored faithfully or refused with UnstorableValueError, and a refusal stores nothing', async () => {
    let accepted = 0;
    let refused = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.anything({
            maxDepth: 3,
            withBigInt: true,
            withDate: true,
            withMap: true,
            withSet: true,
            withTypedArray: true,
            withSparseArray: true,
            withNullPrototype: true,
            withObjectString: true,
            withBoxedValues: true,
          }),
          { maxLength: 3 },
        ),
        async (args) => {
          const before = await jobRows();
          let id: string | undefined;
          let refusal: unknown;
          await tm.run(async () => {
            try {
              id = scheduler.schedule('echo', ...args);
            } catch (err) {
              refusal = err;
            }
          });
          if (refusal !== undefined) {
            refused++;
            assert.ok(refusal instanceof UnstorableValueError, `refused with ${String(refusal)}`);
            assert.equal(await jobRows(), before, 'a refused schedule stores no row');
            return;
          }
          accepted++;
          const result = await finished(scheduler, id!);
          assert.equal(result.state, 'done', JSON.stringify(result));
          assert.deepStrictEqual(normalize((result as { value: unknown }).value), normalize(args));
        },
      ),
      { numRuns: 150 },
    );
    console.log(`# schedule(): ${accepted} argument lists stored faithfully, ${refused} refused with UnstorableValueError`);
    assert.ok(accepted > 10 && refused > 10, 'both outcomes were exercised');
  });

  it('deep and wide values are stored faithfully or refused with UnstorableValueError, never another error, and never hang', async () => {
    const outcomes = { accepted: 0, refused: 0 };
    await fc.assert(
      fc.asyncProperty(fc.oneof(deepValues, wideValues), async (value) => {
        outcomes[await storedFaithfullyOrRefused('identity', [value], value)]++;
      }),
      { numRuns: 150 },
    );
    console.log(`# deep and wide values: ${outcomes.accepted} stored faithfully, ${outcomes.refused} refused with UnstorableValueError`);
    assert.ok(outcomes.accepted > 10 && outcomes.refused > 10, 'both outcomes were exercised');
  });

  it('the transaction’s metadata reaches job.meta faithfully or is refused at schedule() with UnstorableValueError', async () => {
    const extension = fc.oneof(
      fc.dictionary(fc.string({ maxLength: 10 }), fc.anything({ maxDepth: 3, withBigInt: true, withDate: true, withMap: true, withSparseArray: true, withNullPrototype: true })),
      fc.oneof(deepValues, wideValues).map((value) => ({ value })),
    );
    const metadata = fc.record({
      // Owners the owner rule accepts: what it refuses (an empty or overlong user) it refuses with JobOwnerError, by design.
      user: fc.option(fc.oneof(fc.string({ minLength: 1, maxLength: 50 }), fc.integer()), { nil: undefined }),
      note: fc.option(fc.string({ maxLength: 100 }), { nil: undefined }),
      extension: fc.option(extension, { nil: undefined }),
    });
    const outcomes = { accepted: 0, refused: 0 };
    await fc.assert(
      fc.asyncProperty(metadata, async (meta) => {
        const expected = { ...meta, note: meta.note ?? 'property' }; // the manager's default note: the function's name
        outcomes[await storedFaithfullyOrRefused('meta', [], expected, meta as TransactionMeta)]++;
      }),
      { numRuns: 150 },
    );
    console.log(`# meta: ${outcomes.accepted} reached job.meta faithfully, ${outcomes.refused} refused with UnstorableValueError`);
    assert.ok(outcomes.accepted > 10 && outcomes.refused > 10, 'both outcomes were exercised');
  });

  it('job names: anything undefined is refused with UnknownJobError, storing nothing', async () => {
    await fc.assert(
      fc.asyncProperty(fc.string({ maxLength: 30 }).filter((name) => name !== 'echo'), async (name) => {
        const before = await jobRows();
        await tm.run(async () => assert.throws(() => scheduler.schedule(name), UnknownJobError));
        assert.equal(await jobRows(), before);
      }),
      { numRuns: 100 },
    );
  });
});

describe('the polling route', () => {
  let server: Served;
  const errors: unknown[] = [];
  const owned: { id: string; user: string }[] = [];

  before(async () => {
    const app = new Koa();
    app.silent = true;
    app.on('error', (err) => errors.push(err));
    app.use(async (ctx, next) => {
      const user = ctx.get('X-User');
      if (user) ctx.state.user = { id: user };
      await next();
    });
    app.use(aftercommit({ manager: tm, scheduler }, jobRoutes({ prefix: '/jobs', consume: false })));
    server = await serve(app);
    for (const user of ['alice', 'bob', '']) {
      const id = await tm.run(async () => scheduler.schedule('echo', user), user ? { metadata: { user } } : {});
      await finished(scheduler, id);
      owned.push({ id, user });
    }
  });
  after(() => server.close());

  it('never answers 5xx, and answers 200 only to the owner of a real job (or anyone, for a job without user)', async () => {
    const segment = fc.oneof(
      fc.constantFrom(...owned.map((o) => o.id)),
      fc.constantFrom(...owned.map((o) => o.id)).map((id) => id.toUpperCase()),
      fc.constantFrom(...owned.map((o) => o.id)).chain((id) => fc.string({ maxLength: 3 }).map((s) => id + s)),
      fc.stringMatching(/^[0-9a-f]{0,40}$/),
      fc.string({ maxLength: 60, unit: 'binary' }),
    );
    const user = fc.option(fc.oneof(fc.constantFrom('alice', 'bob', 'mallory'), fc.stringMatching(/^[\x21-\x7e]{1,20}$/)), { nil: undefined });
    const method = fc.constantFrom('GET', 'HEAD', 'POST', 'DELETE', 'OPTIONS');
    await fc.assert(
      fc.asyncProperty(segment, user, method, async (seg, who, verb) => {
        const response = await fetch(`${server.url}/jobs/${encodeURIComponent(seg)}`, {
          method: verb,
          headers: who === undefined ? {} : { 'X-User': who },
        });
        await response.arrayBuffer();
        assert.ok(response.status < 500, `${verb} /jobs/${seg} as ${who}: ${response.status}`);
        if (response.status === 200 && verb === 'GET') {
          const job = owned.find((o) => o.id === seg);
          assert.ok(job, `200 for ${seg}, which is no job`);
          assert.ok(job.user === '' || job.user === who, `${who} saw ${job.user}'s job`);
        }
      }),
      { numRuns: 300 },
    );
    assert.deepEqual(errors, []);
  });
});
