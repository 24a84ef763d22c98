/**
 * Bad input, generated (fast-check): the polling route never answers 5xx and
 * shows a job only to its owner; schedule() either stores arguments faithfully
 * or refuses them with UnstorableValueError, storing nothing; no unhandled
 * rejection anywhere.
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
