/**
 * A soak: minutes of mixed requests and jobs on MariaDB (orders that schedule
 * jobs, polls, conflicting transfers, requests that never touch the database),
 * with the heap (without code) sampled after a forced GC every few seconds. It must not
 * grow without bound: the slope over the run after a warm-up is reported and
 * bounded. AFTERCOMMIT_SOAK_MS sets the length (default 5 minutes).
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { getHeapSpaceStatistics } from 'node:v8';
import Koa from 'koa';
import Router from '@koa/router';
import type { Knex } from 'knex';
import { ConflictError, PersistentTransactionalScheduler, TransactionManager, type JobHandle, type Worker } from '../../lib/index.js';
import { aftercommit, jobRoutes, type AftercommitContext } from '../../lib/koa/index.js';
import { eachDialect } from '../support/databases.js';
import { serve, type Served } from '../support/http.js';

const SOAK_MS = Number(process.env.AFTERCOMMIT_SOAK_MS ?? 300_000);
const SAMPLE_MS = Math.max(1000, Math.min(5000, SOAK_MS / 30));
const gc = (globalThis as { gc?: () => void }).gc;

/**
 * MB of live objects: the heap without V8's code spaces, whose growth is optimised code of paths
 * this run reaches late (on a slow machine, within the measured minutes), not a leak.
 */
function objectHeapMb(): number {
  const code = new Set(['code_space', 'code_large_object_space']);
  const used = getHeapSpaceStatistics()
    .filter((space) => !code.has(space.space_name))
    .reduce((sum, space) => sum + space.space_used_size, 0);
  return used / 1024 / 1024;
}

/** Least-squares slope of y over x. */
function slope(points: [number, number][]): number {
  const n = points.length;
  const mx = points.reduce((s, [x]) => s + x, 0) / n;
  const my = points.reduce((s, [, y]) => s + y, 0) / n;
  const num = points.reduce((s, [x, y]) => s + (x - mx) * (y - my), 0);
  const den = points.reduce((s, [x]) => s + (x - mx) ** 2, 0);
  return num / den;
}

eachDialect(
  'soak',
  (database) => {
    let knex: Knex;
    let server: Served;
    let worker: Worker;
    let prefix: string;
    let orders: string;
    let accounts: string;
    const errors: unknown[] = [];
    let logLines = 0;
    let retries = 0;

    before(async () => {
      knex = database.knex({ pool: { min: 0, max: 16 } });
      prefix = `${database.table('soak')}_`;
      orders = database.table('orders');
      accounts = database.table('accounts');
      await knex.schema.createTable(orders, (t) => {
        t.increments('id');
        t.string('customer', 20).notNullable();
        t.boolean('fulfilled').notNullable().defaultTo(false);
      });
      await knex.schema.createTable(accounts, (t) => {
        t.integer('id').primary();
        t.integer('balance').notNullable();
      });
      await knex(accounts).insert(Array.from({ length: 20 }, (_, id) => ({ id, balance: 1000 })));

      // Counting, not keeping, log lines: a recording logger would itself grow the heap.
      const count = () => void logLines++;
      const tm = new TransactionManager(knex, { logger: { debug: count, info: count, warn: count, error: count }, retries: 10 });
      tm.onRetry(() => retries++);
      const scheduler = new PersistentTransactionalScheduler(tm, { tablePrefix: prefix, entities: { [orders]: 'id' } });
      scheduler.define('fulfil', async (job: JobHandle, order: number) => {
        await job.progress(0.5, 'packing');
        await job.db(orders).where({ id: order }).update({ fulfilled: true });
        return { order };
      });
      await scheduler.migrate();
      worker = scheduler.worker({ concurrency: 4 }).start();

      const router = new Router<Koa.DefaultState, AftercommitContext>();
      router.post('/orders', async (ctx) => {
        const [order] = await ctx.db(orders).insert({ customer: ctx.state.user.id });
        ctx.status = 202;
        ctx.body = { id: ctx.scheduler.schedule('fulfil', order), order };
      });
      router.post('/transfer/:from/:to', async (ctx) => {
        const from = await ctx.db(accounts).where({ id: ctx.params.from }).first();
        if (from.balance < 1) throw new ConflictError('not enough money right now');
        await ctx.db(accounts).where({ id: ctx.params.from }).decrement('balance', 1);
        await ctx.db(accounts).where({ id: ctx.params.to }).increment('balance', 1);
        ctx.body = { ok: true };
      });
      router.get('/health', (ctx) => {
        ctx.body = { ok: true };
      });
      const app = new Koa();
      app.silent = true;
      app.on('error', (err) => errors.push(err));
      app.use(async (ctx, next) => {
        ctx.state.user = { id: ctx.get('X-User') || 'anonymous' };
        await next();
      });
      app.use(aftercommit({ manager: tm, scheduler }, router.routes(), jobRoutes({ prefix: '/jobs' })));
      server = await serve(app);
    });

    after(async () => {
      await server.close();
      await worker.stop({ timeout: 5000 });
      await knex.schema.dropTableIfExists(`${prefix}jobs`);
      await knex.schema.dropTableIfExists(`${prefix}schema`);
    });

    it(`heap does not grow without bound over ${SOAK_MS / 1000} s of mixed requests and jobs`, async () => {
      const started = Date.now();
      const statuses = new Map<number, number>();
      const pollable: { id: string; user: string }[] = [];
      let requests = 0;
      let running = true;
      const once = async (user: string) => {
        const dice = Math.random();
        let response: Response;
        if (dice < 0.4) {
          response = await fetch(`${server.url}/orders`, { method: 'POST', headers: { 'X-User': user } });
          if (response.status === 202) pollable.push({ id: ((await response.json()) as { id: string }).id, user });
          if (pollable.length > 200) pollable.shift(); // the test's own state stays bounded too
        } else if (dice < 0.7 && pollable.length > 0) {
          const { id, user: owner } = pollable.splice(Math.floor(Math.random() * pollable.length), 1)[0]!;
          response = await fetch(`${server.url}/jobs/${id}`, { headers: { 'X-User': owner } });
          if (response.status === 200 && ((await response.clone().json()) as { state: string }).state === 'pending') pollable.push({ id, user: owner });
        } else if (dice < 0.9) {
          const from = Math.floor(Math.random() * 20);
          response = await fetch(`${server.url}/transfer/${from}/${(from + 1 + Math.floor(Math.random() * 19)) % 20}`, { method: 'POST' });
        } else {
          response = await fetch(`${server.url}/health`);
        }
        await response.arrayBuffer().catch(() => undefined);
        statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
        requests++;
      };
      const load = Array.from({ length: 8 }, async (_, i) => {
        while (running) await once(`user-${i}`);
      });

      const samples: [number, number][] = [];
      while (Date.now() - started < SOAK_MS) {
        await new Promise((r) => setTimeout(r, SAMPLE_MS));
        gc?.();
        samples.push([(Date.now() - started) / 60_000, objectHeapMb()]);
      }
      running = false;
      await Promise.all(load);

      const warm = samples.filter(([minute]) => minute >= (SOAK_MS / 60_000) * 0.2); // after the first fifth
      const mbPerMinute = slope(warm);
      const first = warm[0]![1];
      const last = warm[warm.length - 1]![1];
      const total = (await knex(orders).count({ n: '*' }).first())!.n;
      const balance = (await knex(accounts).sum({ s: 'balance' }).first())!.s;
      console.log(
        `# ${(SOAK_MS / 1000).toFixed(0)} s, ${requests} requests (${(requests / (SOAK_MS / 1000)).toFixed(0)}/s), statuses ${JSON.stringify(Object.fromEntries(statuses))}; ` +
          `${total} orders, ${retries} conflict retries, ${logLines} log lines; heap ${first.toFixed(1)} → ${last.toFixed(1)} MB after warm-up, slope ${mbPerMinute.toFixed(3)} MB/min over ${warm.length} samples${gc ? '' : ' (no --expose-gc: noisy)'}`,
      );
      assert.equal(Number(balance), 20 * 1000, 'transfers conserved the money');
      assert.deepEqual([...statuses.keys()].filter((s) => s >= 500), [], 'no 5xx');
      assert.deepEqual(errors, []);
      // A leak of even one small object per request would show as megabytes a minute here.
      assert.ok(mbPerMinute < 1, `heap grows ${mbPerMinute.toFixed(3)} MB/min`);
    });
  },
  ['mysql'],
);
