/**
 * The jobs dashboard and the metrics route with many kept jobs: response times
 * (p50 and p90 of BENCH_REQUESTS each, over real HTTP through Koa) of the
 * overview, the metrics route and the job list, with BENCH_FINISHED_ROWS done
 * rows kept beside a few pending ones (goal: overview and metrics under 50 ms),
 * then the worker's whole claim transaction on that table against an empty one
 * (goal: at most 1.2×).
 *
 *   npx tsup && node --import tsx bench/admin-rows.ts        BENCH_DB=postgres  BENCH_FINISHED_ROWS=1000000  BENCH_REQUESTS=50
 */
import Koa from 'koa';
import knexFactory from 'knex';
import type { Server } from 'node:http';
import { PersistentTransactionalScheduler, TransactionManager } from '../dist/index.js';
import { jobsDashboard, metricsRoute } from '../dist/koa.js';
import { benchKnexConfig, fillDoneRows, percentiles } from './support.js';

const FINISHED = Number(process.env.BENCH_FINISHED_ROWS ?? 1_000_000);
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 50);
const database = process.env.BENCH_DB ?? 'mysql';
const knex = knexFactory(benchKnexConfig(8));
const tm = new TransactionManager(knex);

async function tables(prefix: string, finished: number): Promise<PersistentTransactionalScheduler> {
  for (const t of ['jobs', 'schema', 'recurring', 'queues', 'workers']) await knex.schema.dropTableIfExists(`${prefix}${t}`);
  const scheduler = new PersistentTransactionalScheduler(tm, { tablePrefix: prefix });
  scheduler.define('noop', async () => undefined);
  await scheduler.migrate();
  await tm.run(async () => {
    for (let i = 0; i < 20; i++) scheduler.schedule('noop');
  });
  if (finished > 0) {
    const started = performance.now();
    await fillDoneRows(knex, `${prefix}jobs`, finished);
    await knex.raw(database === 'mysql' ? 'ANALYZE TABLE ??' : 'ANALYZE ??', [`${prefix}jobs`]);
    console.log(`  filled ${finished} done rows in ${((performance.now() - started) / 1000).toFixed(0)} s`);
  }
  return scheduler;
}

async function timed(url: string): Promise<{ p50: number; p90: number }> {
  const ms: number[] = [];
  for (let i = 0; i < REQUESTS + 5; i++) {
    const started = performance.now();
    const response = await fetch(url);
    await response.text();
    if (!response.ok) throw new Error(`${url}: ${response.status}`);
    if (i >= 5) ms.push(performance.now() - started); // after a warm-up
  }
  const { 50: p50, 90: p90 } = percentiles(ms, [50, 90]);
  return { p50: p50!, p90: p90! };
}

/** µs per claim transaction of a worker that finds the 20 pending jobs (each rolled back, so they stay). */
async function claimCost(scheduler: PersistentTransactionalScheduler): Promise<number> {
  const worker = scheduler.worker({ concurrency: 4 }) as unknown as { claim(limit: number): Promise<number>; begin(): void };
  worker.begin = () => undefined; // measure the claim only: the claimed jobs are not run
  const ms: number[] = [];
  for (let i = 0; i < REQUESTS * 4; i++) {
    const started = performance.now();
    await worker.claim(4);
    ms.push(performance.now() - started);
    await knex(`${(scheduler as unknown as { store: { tables: { jobs: string } } }).store.tables.jobs}`).where({ state: 'running' }).update({ state: 'pending', lease: null, locked_by: null, locked_until: null });
  }
  return percentiles(ms, [50])[50]! * 1000;
}

const big = await tables('bench_adm_big_', FINISHED);
const empty = await tables('bench_adm_empty_', 0);
const app = new Koa();
app.use(jobsDashboard({ scheduler: big, authorize: () => true }));
app.use(metricsRoute({ scheduler: big, authorize: () => true }));
const server: Server = await new Promise((resolve) => {
  const s = app.listen(0, '127.0.0.1', () => resolve(s));
});
const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
try {
  console.log(`\n${database}: ${FINISHED} done rows and 20 pending ones; ms p50 / p90 over ${REQUESTS} requests`);
  for (const [name, path] of [
    ['overview', '/admin/jobs/api/overview'],
    ['metrics route', '/metrics'],
    ['job list, newest 50', '/admin/jobs/api/jobs'],
    ['job list, pending', '/admin/jobs/api/jobs?state=pending'],
    ['job list, failed (none)', '/admin/jobs/api/jobs?state=failed'],
    ['job list, done, page 2', ''],
  ] as const) {
    let target: string = path;
    if (!target) target = `/admin/jobs/api/jobs?state=done&after=${encodeURIComponent(((await (await fetch(`${url}/admin/jobs/api/jobs?state=done`)).json()) as { next: string }).next)}`;
    const { p50, p90 } = await timed(url + target);
    console.log(`  ${name.padEnd(24)} ${p50.toFixed(1).padStart(7)} / ${p90.toFixed(1)} ms${name === 'overview' || name === 'metrics route' ? '   (goal < 50 ms)' : ''}`);
  }
  await claimCost(empty); // warm-up
  await claimCost(big);
  const [claimEmpty, claimBig] = [await claimCost(empty), await claimCost(big)];
  console.log(`  claim transaction p50: ${claimEmpty.toFixed(0)} µs empty, ${claimBig.toFixed(0)} µs with ${FINISHED} done rows: ×${(claimBig / claimEmpty).toFixed(2)}   (goal <= 1.2)`);
} finally {
  server.close();
  for (const prefix of ['bench_adm_big_', 'bench_adm_empty_']) for (const t of ['jobs', 'schema', 'recurring', 'queues', 'workers']) await knex.schema.dropTableIfExists(`${prefix}${t}`);
  await knex.destroy();
}
