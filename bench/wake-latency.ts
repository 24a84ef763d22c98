/**
 * Commit→start with the worker in ANOTHER process than the one that commits, on an idle queue:
 * the wake-up across processes (MariaDB: a datagram after the commit; PostgreSQL: NOTIFY sent by
 * the committing transaction), then the worker's claim, then the job. This process schedules a
 * no-op job per transaction, one at a time with a pause between them (so the worker is asleep in
 * its poll, whose wait grows to 2 s while idle); the clock starts when the COMMIT has returned (an
 * after-commit hook registered before schedule()) and stops when the job function is called in the
 * worker process (the real CLI), both on the machine's clock.
 *
 *   npx tsup && node --import tsx bench/wake-latency.ts
 *   BENCH_DBS=mysql,postgres  BENCH_REQUESTS=200  BENCH_GAP_MS=100-300
 */
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import knexFactory from 'knex';
import { PersistentTransactionalScheduler, TransactionManager } from '../dist/index.js';
import { benchDatabaseUrl, percentiles } from './support.js';

const DATABASES = (process.env.BENCH_DBS ?? 'mysql,postgres').split(',') as ('mysql' | 'postgres')[];
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 200);
const [GAP_MIN, GAP_MAX] = (process.env.BENCH_GAP_MS ?? '100-300').split('-').map(Number) as [number, number];
const PREFIX = 'bench_wake_';
const now = () => performance.timeOrigin + performance.now();

console.log(`wake-latency: ${REQUESTS} transactions per database, one at a time, ${GAP_MIN}-${GAP_MAX} ms apart; the worker in a process of its own`);
for (const db of DATABASES) {
  const knex = knexFactory({ client: db === 'mysql' ? 'mysql2' : 'pg', connection: benchDatabaseUrl(db), pool: { min: 1, max: 4 } });
  for (const table of ['jobs', 'schema', 'recurring', 'queues', 'workers']) await knex.schema.dropTableIfExists(`${PREFIX}${table}`);
  const tm = new TransactionManager(knex);
  const scheduler = new PersistentTransactionalScheduler(tm, { tablePrefix: PREFIX });
  scheduler.define('stamp', async () => 0); // run by the worker process; scheduled here by name
  await scheduler.migrate();
  const worker = spawn(process.execPath, ['--import', 'tsx', 'dist/cli.js', 'worker', '--jobs', 'bench/wake-latency-jobs.ts', '--concurrency', '4'], {
    env: { ...process.env, BENCH_DB: db, BENCH_WAKE_PREFIX: PREFIX },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  try {
    const deadline = Date.now() + 30_000;
    while (!(await knex(`${PREFIX}workers`).first('id'))) {
      if (Date.now() > deadline) throw new Error('the worker process did not register within 30 s');
      await sleep(50);
    }
    await sleep(2500); // idle: its poll wait has grown
    const latencies: number[] = [];
    for (let i = 0; i < REQUESTS; i++) {
      let committedAt = 0;
      const id = await tm.run(async (tx) => {
        tx.afterCommit(() => (committedAt = now()));
        return scheduler.schedule('stamp');
      });
      let result = await scheduler.getResult(id);
      const waitUntil = Date.now() + 10_000;
      while (result.state === 'pending' && Date.now() < waitUntil) {
        await sleep(1);
        result = await scheduler.getResult(id);
      }
      if (result.state !== 'done') throw new Error(`job ${id} did not finish within 10 s: ${JSON.stringify(result)}`);
      latencies.push((result.value as number) - committedAt);
      await sleep(GAP_MIN + Math.random() * (GAP_MAX - GAP_MIN));
    }
    const p = percentiles(latencies, [50, 90, 99]);
    const name = db === 'mysql' ? 'aftercommit/MariaDB (datagram)' : 'aftercommit/PostgreSQL (NOTIFY)';
    console.log(`  ${name.padEnd(34)} commit→start p50 ${p[50]!.toFixed(2)} ms, p90 ${p[90]!.toFixed(2)} ms, p99 ${p[99]!.toFixed(2)} ms`);
  } finally {
    worker.kill('SIGKILL');
    for (const table of ['jobs', 'schema', 'recurring', 'queues', 'workers']) await knex.schema.dropTableIfExists(`${PREFIX}${table}`);
    await knex.destroy();
  }
}
