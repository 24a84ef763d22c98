/**
 * Burn-down: how fast worker processes drain a backlog of pre-inserted no-op jobs,
 * for aftercommit and the usual alternatives, measured in one run (on demand; not part
 * of the test suite). Modelled on graphile-worker's perfTest and `river bench`:
 *
 *   aftercommit/MariaDB     PersistentTransactionalScheduler: the jobs scheduled with scheduler.schedule('noop')
 *                           inside tm.run(), BENCH_INSERT_CHUNK per transaction (one INSERT each); workers:
 *                           scheduler.worker({ concurrency, ...BENCH_WORKER_OPTIONS }).start().
 *   aftercommit/PostgreSQL  the same on PostgreSQL.
 *   pg-boss                 (v10, PostgreSQL) boss.insert() of BENCH_INSERT_CHUNK jobs at a time; workers:
 *                           `concurrency` work() loops per process, each fetching up to BENCH_PGBOSS_BATCH jobs
 *                           per poll (every 0.5 s, its minimum) and running them one at a time (pg-boss 10
 *                           has no concurrency option).
 *   graphile-worker         (0.17, PostgreSQL) SELECT <schema>.add_jobs(...) of BENCH_INSERT_CHUNK jobs at a time
 *                           (as its addJobs does); workers: run({ concurrency }) with default settings.
 *   BullMQ                  (Redis) queue.addBulk() of BENCH_INSERT_CHUNK jobs at a time; workers: a Worker with
 *                           { concurrency }, default options (completed jobs kept).
 *
 * The matrix: for each system, BENCH_PROCESSES worker processes × BENCH_CONCURRENCY jobs at once per
 * process. Each cell empties the system's tables (or Redis keys), pre-inserts BENCH_JOBS no-op jobs, then
 * spawns the worker processes (bench/burn-down-worker.ts), which connect (their pools' connections
 * opened) and report ready; then the clock starts, every process gets "go" over IPC and starts
 * consuming (aftercommit: worker.start(); graphile-worker: run(), which first checks its migrations),
 * and the clock stops at the first poll (every BENCH_POLL_MS) of the system's own bookkeeping that
 * finds all BENCH_JOBS done: stats() for aftercommit, the job table for pg-boss, the (deleted-on-
 * completion) job table for graphile-worker, getJobCounts() for BullMQ. Start-up and inserts are not
 * in the measured time. The workers are stopped after the cell (killed if they do not stop in 20 s).
 *
 * Database connections: each worker process's pool (aftercommit's knex pool, pg-boss's, graphile-worker's
 * pg.Pool) has concurrency + 2 connections, or fewer when the processes would exceed the server's
 * max_connections (PostgreSQL's default 100: 4 processes get about 21 each); "pool" says what was used.
 *
 * What is printed per cell:
 *   jobs/s          BENCH_JOBS ÷ the time from "go" to the poll that found them all done.
 *   commits/s       the physical limit: one-row transactions (BEGIN; UPDATE a row of its own; COMMIT)
 *                   per second from BENCH_COMMIT_CONNECTIONS (24, as in compare.ts) connections of this
 *                   process, measured for each database at the start of the run (BullMQ: none).
 *   ÷commits        jobs/s ÷ commits/s.
 *   commits/job     the database server's own counter delta over the drain ÷ jobs, server-wide:
 *                   MariaDB Com_commit (explicit COMMITs), PostgreSQL transaction ids handed out
 *                   (transactions that wrote). BullMQ: Redis commands per job (total_commands_processed;
 *                   the poll's getJobCounts included).
 *   cores           busy cores during the drain (/proc): the whole machine, the worker processes (summed),
 *                   the database server (BullMQ: Redis), this process (the poll), and the rest (other).
 *
 *   npx tsup && node --import tsx bench/burn-down.ts      (3 minutes with the defaults on 2 cores; 6 while a test suite
 *                                                          runs alongside: 20 cells, the 4-process ones spending 4-12 s
 *                                                          starting their workers)
 *   BENCH_JOBS=4000  BENCH_PROCESSES=1,4  BENCH_CONCURRENCY=8,32  BENCH_SYSTEMS=aftercommit-mariadb,pg-boss,...
 *   BENCH_COMMIT_MS=3000  BENCH_COMMIT_CONNECTIONS=24  BENCH_POLL_MS=20  BENCH_PGBOSS_BATCH=100  BENCH_INSERT_CHUNK=500
 *   BENCH_WORKER_OPTIONS='{"groupSize":1}'   (aftercommit: more options for scheduler.worker(), e.g. groups of short jobs off;
 *                                            run it with BENCH_SYSTEMS=aftercommit-mariadb,aftercommit-postgres to compare settings)
 *   (BENCH_SYSTEMS: aftercommit-mariadb, aftercommit-postgres, pg-boss, graphile-worker, bullmq)
 *
 * Everything the run creates is dropped at the end, and at the start in case an earlier run died:
 * tables bench_burn_* (both databases), schemas bench_burn_pgboss and bench_burn_graphile, Redis keys
 * bench_burn_bull:*. Needs MariaDB, PostgreSQL (as in bench/support.ts) and Redis on 127.0.0.1:6379.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import knexFactory, { type Knex } from 'knex';
import { Redis } from 'ioredis';
import PgBoss from 'pg-boss';
import { runMigrations as graphileMigrations } from 'graphile-worker';
import { Queue } from 'bullmq';
import { PersistentTransactionalScheduler, TransactionManager, type WorkerOptions } from '../dist/index.js';
import { benchDatabaseUrl } from './support.js';
import { commitRate, cpuMeter, deleteRedisKeys, serverCounters, type Cores, type Family } from './compare-shared.js';
import type { BurnDownSystem, WorkerCommand, WorkerConfig, WorkerReply } from './burn-down-worker.js';

const SYSTEMS: readonly BurnDownSystem[] = ['aftercommit-mariadb', 'aftercommit-postgres', 'pg-boss', 'graphile-worker', 'bullmq'];
const numbers = (value: string) => value.split(',').map((n) => Number(n.trim()));
const JOBS = Number(process.env.BENCH_JOBS ?? 4000);
const PROCESSES = numbers(process.env.BENCH_PROCESSES ?? '1,4');
const CONCURRENCY = numbers(process.env.BENCH_CONCURRENCY ?? '8,32');
const COMMIT_MS = Number(process.env.BENCH_COMMIT_MS ?? 3000);
const COMMIT_CONNECTIONS = Number(process.env.BENCH_COMMIT_CONNECTIONS ?? 24);
const POLL_MS = Number(process.env.BENCH_POLL_MS ?? 20);
const PGBOSS_BATCH = Number(process.env.BENCH_PGBOSS_BATCH ?? 100);
const INSERT_CHUNK = Number(process.env.BENCH_INSERT_CHUNK ?? 500);
const WORKER_OPTIONS = JSON.parse(process.env.BENCH_WORKER_OPTIONS ?? '{}') as Partial<WorkerOptions>;
const CHOSEN = (process.env.BENCH_SYSTEMS ?? SYSTEMS.join(',')).split(',') as BurnDownSystem[];
for (const name of CHOSEN) if (!SYSTEMS.includes(name)) throw new Error(`BENCH_SYSTEMS: unknown system ${name}; known: ${SYSTEMS.join(', ')}`);
for (const n of [...PROCESSES, ...CONCURRENCY]) if (!Number.isInteger(n) || n < 1) throw new Error(`BENCH_PROCESSES / BENCH_CONCURRENCY: positive integers, got ${n}`);

const PREFIX = 'bench_burn_'; // aftercommit: bench_burn_jobs, _schema, _recurring, _queues, _workers
const COMMIT_TABLE = 'bench_burn_commit_rate';
const PGBOSS_SCHEMA = 'bench_burn_pgboss';
const GRAPHILE_SCHEMA = 'bench_burn_graphile';
const BULL_PREFIX = 'bench_burn_bull'; // Redis keys bench_burn_bull:*
const QUEUE = 'bench-burn';
/** Connections of the server kept out of the workers' share: this process's pools, and spare. */
const RESERVED_CONNECTIONS = 12;
const STOP_MS = 20_000;

const LABEL: Record<BurnDownSystem, string> = {
  'aftercommit-mariadb': 'aftercommit/MariaDB',
  'aftercommit-postgres': 'aftercommit/PostgreSQL',
  'pg-boss': 'pg-boss (PostgreSQL)',
  'graphile-worker': 'graphile-worker (PG)',
  bullmq: 'BullMQ (Redis)',
};
/** The database a system keeps its jobs in; BullMQ's are in Redis. */
const FAMILY: Record<BurnDownSystem, Family | undefined> = {
  'aftercommit-mariadb': 'mysql',
  'aftercommit-postgres': 'postgres',
  'pg-boss': 'postgres',
  'graphile-worker': 'postgres',
  bullmq: undefined,
};

const databases: Record<Family, Knex> = {
  mysql: knexFactory({ client: 'mysql2', connection: benchDatabaseUrl('mysql'), pool: { min: 0, max: 4 } }),
  postgres: knexFactory({ client: 'pg', connection: benchDatabaseUrl('postgres'), pool: { min: 0, max: 4 } }),
};
const counters: Record<Family, () => Promise<{ commits: number; deadlocks: number }>> = {
  mysql: serverCounters(databases.mysql, 'mysql'),
  postgres: serverCounters(databases.postgres, 'postgres'),
};
const redis = new Redis({ host: '127.0.0.1', port: 6379 });

// ---- setup and cleanup -----------------------------------------------------------

async function cleanUp(): Promise<void> {
  const [mysqlTables] = (await databases.mysql.raw(
    "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name LIKE 'bench\\_burn\\_%'",
  )) as [{ name: string }[]];
  for (const { name } of mysqlTables) await databases.mysql.schema.dropTableIfExists(name);
  const { rows: postgresTables } = (await databases.postgres.raw(
    "SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE 'bench\\_burn\\_%'",
  )) as { rows: { name: string }[] };
  for (const { name } of postgresTables) await databases.postgres.schema.dropTableIfExists(name);
  await databases.postgres.raw(`DROP SCHEMA IF EXISTS ${PGBOSS_SCHEMA} CASCADE`);
  await databases.postgres.raw(`DROP SCHEMA IF EXISTS ${GRAPHILE_SCHEMA} CASCADE`);
  await deleteRedisKeys(`${BULL_PREFIX}:*`);
}

async function maxConnections(family: Family): Promise<number> {
  if (family === 'mysql') {
    const [rows] = (await databases.mysql.raw('SELECT @@max_connections AS n')) as [{ n: number }[]];
    return Number(rows[0]!.n);
  }
  const { rows } = (await databases.postgres.raw('SHOW max_connections')) as { rows: { max_connections: string }[] };
  return Number(rows[0]!.max_connections);
}

// ---- the systems, as seen from here: empty, fill, count ---------------------------------

interface Jobs {
  /** Empties the system's job storage. */
  empty(): Promise<void>;
  /** Inserts `count` no-op jobs, INSERT_CHUNK at a time. */
  insert(count: number): Promise<void>;
  /** Jobs finished for good, and failed ones. */
  progress(): Promise<{ done: number; failed: number }>;
  close(): Promise<void>;
}

const chunks = (count: number) => Array.from({ length: Math.ceil(count / INSERT_CHUNK) }, (_, i) => Math.min(INSERT_CHUNK, count - i * INSERT_CHUNK));

async function aftercommitJobs(family: Family): Promise<Jobs> {
  const knex = databases[family];
  const tm = new TransactionManager(knex);
  const scheduler = new PersistentTransactionalScheduler(tm, { tablePrefix: PREFIX });
  scheduler.define('noop', async () => null);
  await scheduler.migrate();
  return {
    empty: async () => {
      await knex(`${PREFIX}jobs`).truncate();
      await knex(`${PREFIX}workers`).truncate(); // the registry of the cell before's (stopped) workers
    },
    insert: async (count) => {
      for (const size of chunks(count)) {
        await tm.run(async () => {
          for (let i = 0; i < size; i++) scheduler.schedule('noop');
        });
      }
    },
    progress: async () => {
      const stats = await scheduler.stats();
      return { done: stats.done, failed: stats.failed };
    },
    close: async () => {},
  };
}

async function pgBossJobs(): Promise<Jobs> {
  // This process only creates the schema and inserts: no maintenance, no cron.
  const boss = new PgBoss({ connectionString: benchDatabaseUrl('postgres'), schema: PGBOSS_SCHEMA, max: 2, supervise: false, schedule: false });
  boss.on('error', (err: Error) => console.error(`pg-boss: ${err.message}`));
  await boss.start();
  await boss.createQueue(QUEUE);
  const knex = databases.postgres;
  return {
    empty: async () => {
      await knex.raw(`DELETE FROM ${PGBOSS_SCHEMA}.job WHERE name = ?`, [QUEUE]);
    },
    insert: async (count) => {
      for (const size of chunks(count)) await boss.insert(Array.from({ length: size }, () => ({ name: QUEUE, data: {} })));
    },
    progress: async () => {
      const { rows } = (await knex.raw(`SELECT state, count(*)::int AS n FROM ${PGBOSS_SCHEMA}.job WHERE name = ? GROUP BY state`, [QUEUE])) as {
        rows: { state: string; n: number }[];
      };
      const count = (state: string) => rows.find((r) => r.state === state)?.n ?? 0;
      return { done: count('completed'), failed: count('failed') };
    },
    close: () => boss.stop({ graceful: false, wait: true }),
  };
}

async function graphileJobs(): Promise<Jobs> {
  await graphileMigrations({ connectionString: benchDatabaseUrl('postgres'), schema: GRAPHILE_SCHEMA });
  const knex = databases.postgres;
  let inserted = 0;
  return {
    empty: async () => {
      inserted = 0;
      await knex.raw(`DELETE FROM ${GRAPHILE_SCHEMA}._private_jobs`);
    },
    insert: async (count) => {
      for (const size of chunks(count)) {
        // What graphile-worker's addJobs sends: one add_jobs() of a job_spec array, in a transaction of its own.
        const specs = JSON.stringify(Array.from({ length: size }, () => ({ identifier: 'noop', payload: {} })));
        await knex.transaction((trx) =>
          trx.raw(`SELECT id FROM ${GRAPHILE_SCHEMA}.add_jobs(array(SELECT json_populate_recordset(null::${GRAPHILE_SCHEMA}.job_spec, ?::json)), false)`, [specs]),
        );
        inserted += size;
      }
    },
    progress: async () => {
      // A job's row is deleted when it completes; a failed one stays (with last_error set).
      const { rows } = (await knex.raw(
        `SELECT count(*)::int AS n, count(*) FILTER (WHERE last_error IS NOT NULL)::int AS failed FROM ${GRAPHILE_SCHEMA}._private_jobs`,
      )) as { rows: { n: number; failed: number }[] };
      return { done: inserted - rows[0]!.n, failed: rows[0]!.failed };
    },
    close: async () => {},
  };
}

async function bullmqJobs(): Promise<Jobs> {
  // A client instance (BullMQ's ESM build cannot load ioredis by itself); BullMQ leaves closing it to us.
  const connection = new Redis({ host: '127.0.0.1', port: 6379, maxRetriesPerRequest: null });
  const queue = new Queue(QUEUE, { connection, prefix: BULL_PREFIX });
  await queue.waitUntilReady();
  return {
    empty: async () => {
      await queue.obliterate({ force: true });
    },
    insert: async (count) => {
      for (const size of chunks(count)) await queue.addBulk(Array.from({ length: size }, () => ({ name: 'noop', data: {} })));
    },
    progress: async () => {
      const counts = await queue.getJobCounts('completed', 'failed');
      return { done: counts.completed ?? 0, failed: counts.failed ?? 0 };
    },
    close: async () => {
      await queue.close();
      connection.disconnect();
    },
  };
}

const jobsOf: Record<BurnDownSystem, () => Promise<Jobs>> = {
  'aftercommit-mariadb': () => aftercommitJobs('mysql'),
  'aftercommit-postgres': () => aftercommitJobs('postgres'),
  'pg-boss': pgBossJobs,
  'graphile-worker': graphileJobs,
  bullmq: bullmqJobs,
};

// ---- the worker processes --------------------------------------------------------------

const WORKER = fileURLToPath(new URL('./burn-down-worker.ts', import.meta.url));
const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

interface WorkerProcess {
  child: ChildProcess;
  send(command: WorkerCommand): void;
  /** Rejects when the process reports an error or exits before it was told to stop. */
  failed: Promise<never>;
  /** Resolves once the process has exited. */
  exited: Promise<void>;
}

/** Spawns a worker process; resolves once it is connected and ready. */
function spawnWorker(config: WorkerConfig): Promise<WorkerProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', WORKER, JSON.stringify(config)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  children.add(child);
  let stopping = false;
  let fail: (err: Error) => void = () => {};
  const failed = new Promise<never>((_, reject) => (fail = reject));
  failed.catch(() => {}); // observed by whoever races it
  const exited = new Promise<void>((resolve) =>
    child.on('exit', (code, signal) => {
      children.delete(child);
      if (!stopping) fail(new Error(`${config.system}: worker process ${child.pid} exited (${code ?? signal})`));
      resolve();
    }),
  );
  return new Promise((resolve, reject) => {
    failed.catch(reject);
    child.on('message', (reply: WorkerReply) => {
      if (reply.type === 'error') fail(new Error(reply.message));
      else if (reply.type === 'ready')
        resolve({
          child,
          failed,
          exited,
          send: (command) => {
            if (command.cmd === 'stop') stopping = true;
            if (child.connected) child.send(command);
          },
        });
    });
  });
}

/** Stops the worker processes gracefully; kills those still there after STOP_MS. */
async function stopWorkers(workers: WorkerProcess[]): Promise<void> {
  for (const worker of workers) worker.send({ cmd: 'stop' });
  const timer = setTimeout(() => {
    for (const worker of workers) if (worker.child.exitCode === null) worker.child.kill('SIGKILL');
  }, STOP_MS);
  await Promise.all(workers.map((w) => w.exited));
  clearTimeout(timer);
}

// ---- a cell -------------------------------------------------------------------------------

interface Cell {
  system: BurnDownSystem;
  processes: number;
  concurrency: number;
  pool: number;
  ms: number;
  /** Database commits (BullMQ: Redis commands) during the drain. */
  commits: number;
  deadlocks: number;
  cores: Cores | undefined;
  done: number;
  /** Inserting the jobs, and starting the worker processes (not measured). */
  insertMs: number;
  startMs: number;
  error?: string;
}

async function redisCommands(): Promise<number> {
  const info = await redis.info('stats');
  return Number(/total_commands_processed:(\d+)/.exec(info)?.[1] ?? NaN);
}

/** The connections each worker process's pool gets. */
function poolSize(system: BurnDownSystem, processes: number, concurrency: number, limits: Record<Family, number>): number {
  const family = FAMILY[system];
  const wanted = concurrency + 2;
  if (!family) return wanted;
  // One more connection per process outside its pool: aftercommit's LISTEN on PostgreSQL; spare for the others.
  return Math.max(2, Math.min(wanted, Math.floor((limits[family] - RESERVED_CONNECTIONS) / processes) - 1));
}

async function runCell(system: BurnDownSystem, jobs: Jobs, processes: number, concurrency: number, pool: number): Promise<Cell> {
  const family = FAMILY[system];
  const cell: Cell = { system, processes, concurrency, pool, ms: NaN, commits: NaN, deadlocks: NaN, cores: undefined, done: 0, insertMs: NaN, startMs: NaN };
  await jobs.empty();
  let started = performance.now();
  await jobs.insert(JOBS);
  cell.insertMs = performance.now() - started;
  const config: WorkerConfig = {
    system,
    concurrency,
    pool,
    tablePrefix: PREFIX,
    pgbossSchema: PGBOSS_SCHEMA,
    pgbossBatch: PGBOSS_BATCH,
    graphileSchema: GRAPHILE_SCHEMA,
    bullPrefix: BULL_PREFIX,
    queue: QUEUE,
    workerOptions: WORKER_OPTIONS,
  };
  started = performance.now();
  const spawned = Array.from({ length: processes }, () => spawnWorker(config));
  let workers: WorkerProcess[] = [];
  try {
    workers = await Promise.all(spawned);
    cell.startMs = performance.now() - started;
    const before = family ? await counters[family]() : { commits: await redisCommands(), deadlocks: 0 };
    const meter = cpuMeter(
      workers.map((w) => w.child.pid!),
      family ?? 'mysql',
    );
    const clock = performance.now();
    for (const worker of workers) worker.send({ cmd: 'go' });
    const failed = Promise.race(workers.map((w) => w.failed));
    let last = -1;
    let lastProgress = clock;
    for (;;) {
      const { done, failed: failures } = await Promise.race([jobs.progress(), failed]);
      const now = performance.now();
      if (failures > 0) throw new Error(`${failures} jobs failed`);
      if (done >= JOBS) {
        cell.ms = now - clock;
        cell.done = done;
        break;
      }
      if (done > last) [last, lastProgress] = [done, now];
      if (now - lastProgress > 60_000) throw new Error(`no job finished for 60 s (${done} of ${JOBS} done)`);
      await Promise.race([new Promise((resolve) => setTimeout(resolve, POLL_MS)), failed]);
    }
    cell.cores = meter();
    const after = family ? await counters[family]() : { commits: await redisCommands(), deadlocks: 0 };
    cell.commits = after.commits - before.commits;
    cell.deadlocks = after.deadlocks - before.deadlocks;
  } catch (err) {
    cell.error = (err as Error).message.split('\n')[0];
  } finally {
    // Processes that never became ready are killed by stopWorkers' timer too.
    const all = await Promise.all(spawned.map((p) => p.catch(() => undefined)));
    await stopWorkers([...new Set([...workers, ...all.filter((w): w is WorkerProcess => w !== undefined)])]);
    for (const child of children) child.kill('SIGKILL'); // any that failed before ready
  }
  return cell;
}

// ---- printing ---------------------------------------------------------------------------

const fixed = (n: number, digits = 0) => (Number.isFinite(n) ? n.toFixed(digits) : '-');

function cellLine(cell: Cell, commitRates: Record<Family, number>): string {
  const family = FAMILY[cell.system];
  const rate = (JOBS / cell.ms) * 1000;
  const limit = family ? commitRates[family] : NaN;
  const c = cell.cores;
  const core = (n: number | undefined) => fixed(n ?? NaN, 2);
  const other = c ? Math.max(0, c.machine - c.server - c.database - c.redis - c.loadgen) : NaN;
  const head = `  ${LABEL[cell.system].padEnd(24)} ${String(cell.processes).padStart(5)} ${String(cell.concurrency).padStart(5)} ${(FAMILY[cell.system] ? String(cell.pool) : '-').padStart(5)}`;
  if (cell.error) return `${head}  failed: ${cell.error}`;
  return (
    `${head} ${fixed(rate).padStart(7)} ${fixed(cell.ms / 1000, 2).padStart(7)} ${fixed(limit).padStart(9)} ${fixed(rate / limit, 3).padStart(8)} ` +
    `${(fixed(cell.commits / JOBS, 2) + (family ? '' : ' r')).padStart(11)}  ` +
    `${core(c?.machine).padStart(7)} ${core(c?.server).padStart(7)} ${core(family ? c?.database : c?.redis).padStart(6)} ${core(c?.loadgen).padStart(6)} ${fixed(other, 2).padStart(6)}` +
    `  ${fixed(cell.insertMs / 1000, 1).padStart(6)} ${fixed(cell.startMs / 1000, 1).padStart(6)}` +
    `${cell.deadlocks > 0 ? `  ${cell.deadlocks} deadlocks` : ''}${cell.done > JOBS ? `  (${cell.done} done of ${JOBS}: leftovers?)` : ''}`
  );
}

const HEADER =
  `  ${'system'.padEnd(24)} ${'procs'.padStart(5)} ${'conc'.padStart(5)} ${'pool'.padStart(5)} ${'jobs/s'.padStart(7)} ${'drain s'.padStart(7)} ` +
  `${'commits/s'.padStart(9)} ${'÷commits'.padStart(8)} ${'commits/job'.padStart(11)}  ` +
  `${'machine'.padStart(7)} ${'workers'.padStart(7)} ${'db'.padStart(6)} ${'main'.padStart(6)} ${'other'.padStart(6)}  ${'insert'.padStart(6)} ${'start'.padStart(6)}`;

// ---- the run -----------------------------------------------------------------------------

const runStarted = performance.now();
console.log(
  `burn-down: ${JOBS} pre-inserted no-op jobs per cell; worker processes ${PROCESSES.join(', ')} × concurrency ${CONCURRENCY.join(', ')} per process; ` +
    `done polled every ${POLL_MS} ms; ${availableParallelism()} cores` +
    (Object.keys(WORKER_OPTIONS).length ? `; aftercommit worker options ${JSON.stringify(WORKER_OPTIONS)}` : ''),
);
await cleanUp();

const commitRates: Record<Family, number> = { mysql: NaN, postgres: NaN };
const limits: Record<Family, number> = { mysql: NaN, postgres: NaN };
for (const family of ['mysql', 'postgres'] as const) {
  if (!CHOSEN.some((name) => FAMILY[name] === family)) continue;
  limits[family] = await maxConnections(family);
  commitRates[family] = await commitRate(family, COMMIT_CONNECTIONS, { table: COMMIT_TABLE, ms: COMMIT_MS });
}
console.log(
  `physical limit: one-row transactions (BEGIN; UPDATE own row; COMMIT) from ${COMMIT_CONNECTIONS} connections, ${COMMIT_MS / 1000} s: ` +
    `MariaDB ${fixed(commitRates.mysql)} commits/s, PostgreSQL ${fixed(commitRates.postgres)} commits/s ` +
    `(max_connections: MariaDB ${fixed(limits.mysql)}, PostgreSQL ${fixed(limits.postgres)})`,
);
console.log(`\n${HEADER}`);

const cells: Cell[] = [];
try {
  for (const system of CHOSEN) {
    const jobs = await jobsOf[system]();
    try {
      for (const processes of PROCESSES) {
        for (const concurrency of CONCURRENCY) {
          const cell = await runCell(system, jobs, processes, concurrency, poolSize(system, processes, concurrency, limits));
          cells.push(cell);
          console.log(cellLine(cell, commitRates));
        }
      }
    } finally {
      await jobs.close();
    }
  }
} finally {
  await cleanUp();
}

console.log(`\nburn-down of ${JOBS} no-op jobs, all cells${Object.keys(WORKER_OPTIONS).length ? ` (aftercommit worker options ${JSON.stringify(WORKER_OPTIONS)})` : ''}`);
console.log(HEADER);
for (const cell of cells) console.log(cellLine(cell, commitRates));
console.log(
  `\n  procs: worker processes; conc: jobs at once per process; pool: database connections per process (concurrency + 2, fewer to stay under max_connections).\n` +
    `  jobs/s: ${JOBS} jobs ÷ drain s (from "go" to the poll that found all done; inserting and starting the workers — insert, start, s — are not in it).\n` +
    `  commits/s: the physical limit above (${COMMIT_CONNECTIONS} connections); ÷commits: jobs/s ÷ commits/s.\n` +
    `  commits/job: the server's counter delta over the drain ÷ jobs (MariaDB Com_commit; PostgreSQL transaction ids; "r": BullMQ, Redis commands, the poll's included).\n` +
    `  busy cores during the drain: machine (all processes), workers (the worker processes), db (the database server; BullMQ: Redis), main (this process: the poll),\n` +
    `  other (the rest: when it is not ~0, the numbers are noisy). pg-boss: ${PGBOSS_BATCH} jobs per fetch, polls every 0.5 s; graphile-worker, BullMQ: defaults.`,
);
console.log(`\ntotal ${((performance.now() - runStarted) / 1000).toFixed(0)} s`);
redis.disconnect();
await Promise.all(Object.values(databases).map((db) => db.destroy()));
