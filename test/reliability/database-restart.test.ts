/**
 * The database restarted while requests and jobs run (a private MariaDB, not
 * the shared one): requests during the outage fail fast with 503, nothing
 * committed is lost (every order a client was told about exists, and its job
 * ran exactly once), and the worker resumes on its own.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import Koa from 'koa';
import Router from '@koa/router';
import knexFactory, { type Knex } from 'knex';
import { CommitOutcomeUnknownError, PersistentTransactionalScheduler, TransactionManager, type JobHandle, type Worker } from '../../lib/index.js';
import { aftercommit, type AftercommitContext } from '../../lib/koa/index.js';
import { recordingLogger, until } from '../support/helpers.js';
import { serve, type Served } from '../support/http.js';
import { privateMariaDB, type PrivateMariaDB } from './private-mariadb.js';

type Phase = 'before' | 'outage' | 'restarting' | 'after';
interface Outcome {
  phase: Phase;
  error?: unknown;
  status: number;
  order?: number;
  endedAt: number;
}

let mariadb: PrivateMariaDB;
let knex: Knex;
let server: Served;
let worker: Worker;
let scheduler: PersistentTransactionalScheduler;
const serverErrors: unknown[] = [];

before(async () => {
  mariadb = await privateMariaDB();
  await mariadb.start();
  knex = knexFactory({ client: 'mysql2', connection: mariadb.url, pool: { min: 0, max: 12 }, log: { warn() {}, error() {}, debug() {}, deprecate() {} } });
  await knex.schema.createTable('orders', (t) => t.increments('id'));
  await knex.schema.createTable('fulfilments', (t) => {
    t.increments('id');
    t.integer('order_id').notNullable();
  });
  const tm = new TransactionManager(knex, { logger: recordingLogger() });
  scheduler = new PersistentTransactionalScheduler(tm, { lease: 2000 });
  scheduler.define('fulfil', async (job: JobHandle, order: number) => {
    await job.db('fulfilments').insert({ order_id: order });
    await new Promise((r) => setTimeout(r, 50)); // some jobs are mid-transaction when the server stops
  });
  await scheduler.migrate();
  worker = scheduler.worker({ concurrency: 4 }).start();

  const router = new Router<Koa.DefaultState, AftercommitContext>();
  router.post('/orders', async (ctx) => {
    const [order] = await ctx.db('orders').insert({});
    ctx.scheduler.schedule('fulfil', order);
    ctx.status = 201;
    ctx.body = { order };
  });
  const app = new Koa();
  app.silent = true;
  app.on('error', (err) => serverErrors.push(err));
  app.use(aftercommit({ manager: tm, scheduler }, router.routes()));
  server = await serve(app);
});

after(async () => {
  await server?.close();
  await worker?.stop({ timeout: 2000 });
  await knex?.destroy();
  await mariadb?.destroy();
});

it('requests fail fast with 503 during the outage; nothing committed is lost; the worker resumes by itself', async () => {
  let phase: Phase = 'before';
  let running = true;
  let paused = false;
  let inFlight = 0;
  const outcomes: Outcome[] = [];
  const load = Array.from({ length: 4 }, async () => {
    while (running) {
      if (paused) {
        await new Promise((r) => setTimeout(r, 10));
        continue;
      }
      const started = phase;
      inFlight++;
      const response = await fetch(`${server.url}/orders`, { method: 'POST' });
      const text = await response.text();
      const order = response.status === 201 ? (JSON.parse(text) as { order: number }).order : undefined;
      outcomes.push({ phase: started, status: response.status, order, endedAt: Date.now() });
      inFlight--;
      await new Promise((r) => setTimeout(r, 10));
    }
  });

  await until(() => outcomes.filter((o) => o.status === 201).length >= 50, 120_000, 'orders before the outage');
  await mariadb.stop();
  phase = 'outage';
  const downAt = Date.now();
  await until(() => outcomes.filter((o) => o.phase === 'outage').length >= 50 && Date.now() - downAt >= 2000, 120_000, 'requests during the outage');
  // Every request begun during the outage must end while the server is still down: none waits for it.
  paused = true;
  await until(() => inFlight === 0, 60_000, 'the requests of the outage to end while the server is down');
  paused = false;
  const restartAt = Date.now();
  phase = 'restarting'; // requests now may meet the server down or up
  await mariadb.start();
  phase = 'after';
  await until(() => outcomes.filter((o) => o.phase === 'after' && o.status === 201).length >= 50, 120_000, 'orders after the restart');
  running = false;
  await Promise.all(load);

  const count = (p: Phase, status: number) => outcomes.filter((o) => o.phase === p && o.status === status).length;
  const during = outcomes.filter((o) => o.phase === 'outage');
  assert.ok(during.length > 0);
  assert.deepEqual([...new Set(during.map((o) => o.status))], [503], 'every request that started during the outage got 503');
  // A request whose COMMIT was on the wire when the server went down cannot know whether it
  // committed: it fails with CommitOutcomeUnknownError (a 500, not a 503 that would invite a blind
  // retry). Only requests begun before the outage may end that way; no other server error.
  const ambiguous: unknown[] = serverErrors.filter((e) => e instanceof CommitOutcomeUnknownError);
  const others = serverErrors.filter((e) => (e as { status?: number }).status !== 503 && !ambiguous.includes(e));
  assert.deepEqual(others.map(String), [], 'no other server error');
  assert.equal(outcomes.filter((o) => o.status === 500 && o.phase !== 'before').length, 0);
  assert.equal(outcomes.filter((o) => o.status === 500).length, ambiguous.length);

  // Nothing committed is lost: every order a client was told about exists, and every order's job ran exactly once.
  const told = outcomes.filter((o) => o.status === 201).map((o) => o.order!);
  const stored = (await knex('orders').pluck('id')) as number[];
  assert.deepEqual(told.filter((id) => !stored.includes(id)), []);
  await until(async () => Number((await knex('fulfilments').count({ n: '*' }).first())!.n) >= stored.length, 120_000, 'the worker to catch up');
  const fulfilled = (await knex('fulfilments').pluck('order_id')) as number[];
  assert.deepEqual([...fulfilled].sort((a, b) => a - b), [...stored].sort((a, b) => a - b), 'one fulfilment per stored order');
  const stats = await scheduler.stats();
  assert.equal(stats.pending + stats.running, 0);

  const firstAfter = outcomes.filter((o) => o.endedAt > restartAt && o.status === 201).sort((a, b) => a.endedAt - b.endedAt)[0]!;
  console.log(
    `# outage of ${restartAt - downAt} ms: before ${count('before', 201)}×201; during ${during.length}×503; ` +
      `${ambiguous.length}×500 (COMMIT cut off by the shutdown); while restarting ${count('restarting', 503)}×503 and ${count('restarting', 201)}×201; after ${count('after', 201)}×201, first 201 ${firstAfter.endedAt - restartAt} ms after the restart began; ` +
      `${stored.length} orders stored, ${fulfilled.length} fulfilled exactly once`,
  );
});
