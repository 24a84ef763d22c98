/**
 * One worker process of bench/burn-down.ts: connects, reports `ready`, and starts
 * consuming only when bench/burn-down.ts sends `go` (so that start-up is not in the
 * measured time); `stop` stops it gracefully and the process exits. Driven over IPC:
 *   node --import tsx bench/burn-down-worker.ts '<WorkerConfig as JSON>'
 * Not meant to be run by hand. Every job is a no-op called `noop`.
 *
 *   aftercommit  PersistentTransactionalScheduler with `scheduler.worker({ concurrency, ...workerOptions })`;
 *                knex pool of `pool` connections, opened before `ready`; `worker.start()` on `go`.
 *   pg-boss      PgBoss started (pool `pool`, connections opened) before `ready`; on `go`, `concurrency`
 *                work() loops, each fetching up to `pgbossBatch` jobs per poll (every 0.5 s, the minimum)
 *                and running them one at a time (pg-boss 10 has no concurrency option).
 *   graphile     a pg.Pool of `pool` connections, opened before `ready`; on `go`, run({ pgPool, concurrency })
 *                (which checks the schema's migrations, then LISTENs and fetches).
 *   bullmq       a Worker with autorun: false, connected before `ready`; worker.run() on `go`.
 */
import knexFactory, { type Knex } from 'knex';
import pg from 'pg';
import PgBoss from 'pg-boss';
import { Logger as GraphileLogger, run as runGraphile, type Runner } from 'graphile-worker';
import { Worker as BullWorker } from 'bullmq';
import { Redis } from 'ioredis';
import { PersistentTransactionalScheduler, TransactionManager, type WorkerOptions } from '../dist/index.js';
import { benchDatabaseUrl } from './support.js';

export type BurnDownSystem = 'aftercommit-mariadb' | 'aftercommit-postgres' | 'pg-boss' | 'graphile-worker' | 'bullmq';

export interface WorkerConfig {
  system: BurnDownSystem;
  /** Jobs this process runs at once. */
  concurrency: number;
  /** Database connections of this process's pool (aftercommit, pg-boss, graphile-worker). */
  pool: number;
  /** aftercommit's table prefix. */
  tablePrefix: string;
  pgbossSchema: string;
  pgbossBatch: number;
  graphileSchema: string;
  bullPrefix: string;
  /** The queue name of pg-boss and BullMQ. */
  queue: string;
  /** aftercommit: more options for scheduler.worker() (BENCH_WORKER_OPTIONS). */
  workerOptions: Partial<WorkerOptions>;
}

/** Messages from bench/burn-down.ts. */
export type WorkerCommand = { cmd: 'go' } | { cmd: 'stop' };
/** Messages to bench/burn-down.ts. */
export type WorkerReply = { type: 'ready' } | { type: 'stopped' } | { type: 'error'; message: string };

interface Consumer {
  /** Starts consuming. */
  go(): Promise<void>;
  stop(): Promise<void>;
}

/** Opens `count` connections of a knex pool at once (then gives them back), so that the drain does not open them. */
async function openKnexPool(knex: Knex, count: number): Promise<void> {
  const client = knex.client as { acquireConnection(): Promise<unknown>; releaseConnection(connection: unknown): Promise<void> };
  const connections = await Promise.all(Array.from({ length: count }, () => client.acquireConnection()));
  await Promise.all(connections.map((connection) => client.releaseConnection(connection)));
}

async function aftercommitConsumer(config: WorkerConfig): Promise<Consumer> {
  const family = config.system === 'aftercommit-mariadb' ? 'mysql' : 'postgres';
  const knex = knexFactory({ client: family === 'mysql' ? 'mysql2' : 'pg', connection: benchDatabaseUrl(family), pool: { min: 0, max: config.pool } });
  const tm = new TransactionManager(knex);
  const scheduler = new PersistentTransactionalScheduler(tm, { tablePrefix: config.tablePrefix, concurrency: config.concurrency });
  scheduler.define('noop', async () => null);
  await openKnexPool(knex, config.pool);
  const worker = scheduler.worker({ concurrency: config.concurrency, ...config.workerOptions });
  return {
    go: async () => {
      worker.start();
    },
    stop: async () => {
      await worker.stop();
      await knex.destroy();
    },
  };
}

async function pgBossConsumer(config: WorkerConfig): Promise<Consumer> {
  const boss = new PgBoss({ connectionString: benchDatabaseUrl('postgres'), schema: config.pgbossSchema, max: config.pool });
  boss.on('error', (err: Error) => console.error(`pg-boss worker: ${err.message}`));
  await boss.start();
  // Opens the pool's connections: `pool` statements at once.
  const db = boss.getDb();
  await Promise.all(Array.from({ length: config.pool }, () => db.executeSql('SELECT pg_sleep(0.05)', [])));
  return {
    go: async () => {
      for (let i = 0; i < config.concurrency; i++) {
        // Each job of the batch would run here, one after the other (no-op); pg-boss completes the batch when this returns.
        await boss.work(config.queue, { batchSize: config.pgbossBatch, pollingIntervalSeconds: 0.5 }, async () => {});
      }
    },
    stop: async () => {
      await boss.stop({ graceful: true, wait: true, timeout: 10_000 });
    },
  };
}

async function graphileConsumer(config: WorkerConfig): Promise<Consumer> {
  const pgPool = new pg.Pool({ connectionString: benchDatabaseUrl('postgres'), max: config.pool });
  // Error handlers on the pool and on each client, as graphile-worker asks of a pool it is given.
  pgPool.on('error', (err) => console.error(`graphile-worker pool: ${err.message}`));
  pgPool.on('connect', (client) => client.on('error', (err) => console.error(`graphile-worker client: ${err.message}`)));
  const clients = await Promise.all(Array.from({ length: config.pool }, () => pgPool.connect()));
  for (const client of clients) client.release();
  // Warnings and errors only: the default logger writes a line per completed job. Not the warning that the
  // pool is smaller than the concurrency: bench/burn-down.ts shrinks pools to stay under max_connections, and says so.
  const logger = new GraphileLogger(() => (level, message) => {
    if ((level === 'error' || level === 'warning') && !/maxPoolSize .* smaller than concurrency/.test(message)) console.error(`graphile-worker ${level}: ${message}`);
  });
  let runner: Runner | undefined;
  return {
    go: async () => {
      runner = await runGraphile({
        pgPool,
        schema: config.graphileSchema,
        concurrency: config.concurrency,
        noHandleSignals: true,
        logger,
        taskList: { noop: async () => {} },
      });
    },
    stop: async () => {
      await runner?.stop();
      await pgPool.end();
    },
  };
}

async function bullmqConsumer(config: WorkerConfig): Promise<Consumer> {
  // A client instance: BullMQ's ESM build cannot load ioredis by itself. The worker duplicates it for the blocking pop.
  const connection = new Redis({ host: '127.0.0.1', port: 6379, maxRetriesPerRequest: null });
  const worker = new BullWorker(config.queue, async () => null, { connection, prefix: config.bullPrefix, concurrency: config.concurrency, autorun: false });
  worker.on('error', (err) => console.error(`bullmq worker: ${err.message}`));
  await worker.waitUntilReady();
  let running: Promise<void> | undefined;
  return {
    go: async () => {
      running = worker.run().catch((err: Error) => console.error(`bullmq worker: ${err.message}`));
    },
    stop: async () => {
      await worker.close();
      await running;
      connection.disconnect();
    },
  };
}

const config = JSON.parse(process.argv[2] ?? '{}') as WorkerConfig;
const send = (reply: WorkerReply, then?: () => void) => process.send!(reply, undefined, {}, () => then?.());
const fail = (err: Error) => send({ type: 'error', message: `${config.system} worker ${process.pid}: ${err.stack ?? err.message}` }, () => process.exit(1));

const make = {
  'aftercommit-mariadb': aftercommitConsumer,
  'aftercommit-postgres': aftercommitConsumer,
  'pg-boss': pgBossConsumer,
  'graphile-worker': graphileConsumer,
  bullmq: bullmqConsumer,
}[config.system];
if (!make) throw new Error(`burn-down-worker: unknown system ${config.system}`);

try {
  const consumer = await make(config);
  process.on('message', (message: WorkerCommand) => {
    if (message.cmd === 'go') consumer.go().catch(fail);
    else if (message.cmd === 'stop') {
      // Stopped: exit once the reply is out (a peer's client may keep a timer alive).
      consumer.stop().then(() => send({ type: 'stopped' }, () => process.exit(0)), fail);
    }
  });
  process.on('disconnect', () => process.exit(1)); // bench/burn-down.ts died
  send({ type: 'ready' });
} catch (err) {
  fail(err as Error);
}
