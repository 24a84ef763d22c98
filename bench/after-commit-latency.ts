/**
 * Time from COMMIT to job start with TransactionalScheduler (jobs in this
 * process): each request inserts a row and schedules a no-op job; the clock
 * starts when the request's COMMIT has returned (its first after-commit hook)
 * and stops when the job function is called.
 *
 *   node --import tsx bench/after-commit-latency.ts
 *   BENCH_DB=postgres|sqlite  BENCH_REQUESTS=3000  BENCH_CONCURRENCY=16
 */
import knexFactory from 'knex';
import { TransactionManager, TransactionalScheduler, type JobHandle } from '../dist/index.js';
import { benchKnexConfig, percentiles } from './support.js';

const requests = Number(process.env.BENCH_REQUESTS ?? 3000);
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 16);
const knex = knexFactory(benchKnexConfig(concurrency + 4));
const table = 'bench_after_commit';
await knex.schema.dropTableIfExists(table);
await knex.schema.createTable(table, (t) => {
  t.increments('id');
  t.integer('request').notNullable();
});

const tm = new TransactionManager(knex);
const scheduler = new TransactionalScheduler(tm, { concurrency: 8 });
const committedAt = new Map<string, { at: number }>();
const latencies: number[] = [];
let pending = 0;
let allStarted: () => void = () => {};
scheduler.define('noop', (job: JobHandle) => {
  latencies.push(performance.now() - committedAt.get(job.id)!.at);
  committedAt.delete(job.id);
  if (--pending === 0) allStarted();
});

async function request(n: number) {
  await tm.run(async (tx) => {
    await tx.db(table).insert({ request: n });
    const mark = { at: 0 };
    tx.afterCommit(() => (mark.at = performance.now())); // registered first: runs first after COMMIT
    committedAt.set(scheduler.schedule('noop'), mark);
  });
}

async function measure(label: string, parallel: number) {
  latencies.length = 0;
  pending = requests;
  const done = new Promise<void>((resolve) => (allStarted = resolve));
  let next = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < requests) await request(next++);
    }),
  );
  await done;
  const p = percentiles(latencies, [50, 90, 99]);
  console.log(
    `  ${label.padEnd(28)} p50 ${p[50]!.toFixed(3)} ms   p90 ${p[90]!.toFixed(3)} ms   p99 ${p[99]!.toFixed(3)} ms   (${latencies.length} jobs)`,
  );
}

console.log(`\nCOMMIT -> job start, TransactionalScheduler  (database: ${process.env.BENCH_DB ?? 'mysql'})`);
await measure('warm-up', concurrency);
await measure('1 request at a time', 1);
await measure(`${concurrency} concurrent requests`, concurrency);
console.log('  goal: p50 under 2 ms (graphile-worker publishes 4.2 ms average add-to-start)');
await scheduler.stop();
await knex.schema.dropTableIfExists(table);
await knex.destroy();
