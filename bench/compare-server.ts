/**
 * One system of bench/compare.ts, in a process of its own: a Koa server whose
 * requests write a row and schedule a job, and that system's workers, running
 * the jobs in this same process. Driven by bench/compare.ts over IPC:
 *   node --import tsx bench/compare-server.ts <aftercommit-mariadb | aftercommit-postgres | bullmq | pg-boss | graphile-worker>
 * Not meant to be run by hand. Settings come from the environment bench/compare.ts passes on
 * (BENCH_CONNECTIONS, BENCH_CONCURRENCY, BENCH_PGBOSS_BATCH, BENCH_POLL_MS). BullMQ needs ioredis (its ESM build takes client instances).
 *
 * Routes (POST, no body): /baseline writes the request's row and schedules nothing;
 * /noop and /rw write it and schedule one job of that kind:
 *   noop  the job does nothing;
 *   rw    the job SELECTs the request's row and INSERTs one row into bench_cmp_job_rows,
 *         in the job's own transaction where the system gives it one (aftercommit), else
 *         through the app's knex pool (BullMQ, pg-boss, graphile-worker).
 */
import Koa from 'koa';
import knexFactory, { type Knex } from 'knex';
import { Queue, Worker as BullWorker } from 'bullmq';
import PgBoss from 'pg-boss';
import { Logger as GraphileLogger, run as runGraphile, type Runner } from 'graphile-worker';
import { PersistentTransactionalScheduler, TransactionManager, type JobHandle } from '../dist/index.js';
import { aftercommit } from '../dist/koa.js';
import { Redis } from 'ioredis';
import { benchDatabaseUrl } from './support.js';
import {
  AFTERCOMMIT_PREFIX,
  BULLMQ_PREFIX,
  BULLMQ_QUEUE,
  GRAPHILE_SCHEMA,
  JOB_ROWS_TABLE,
  PGBOSS_QUEUE,
  PGBOSS_SCHEMA,
  REQUESTS_TABLE,
  SYSTEMS,
  type Command,
  type JobKind,
  type Reply,
  type SystemName,
} from './compare-shared.js';

const system = process.argv[2] as SystemName;
if (!SYSTEMS.includes(system)) throw new Error(`unknown system ${process.argv[2]}; one of ${SYSTEMS.join(', ')}`);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 16);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 8);
const PGBOSS_BATCH = Number(process.env.BENCH_PGBOSS_BATCH ?? 100);
const POLL_MS = Number(process.env.BENCH_POLL_MS ?? 20);
/** The app's knex pool: every concurrent request, every running job, and two spare (aftercommit's claim loop, the drain poll). */
const POOL = CONNECTIONS + CONCURRENCY + 2;

const database: 'mysql' | 'postgres' = system === 'aftercommit-mariadb' || system === 'bullmq' ? 'mysql' : 'postgres';
const knex: Knex = knexFactory({
  client: database === 'mysql' ? 'mysql2' : 'pg',
  connection: benchDatabaseUrl(database),
  pool: { min: 0, max: POOL },
});

// ---- what is measured in here ------------------------------------------------

/** performance.now() right after the request's COMMIT returned, by job id (filled in after the commit). */
const commits = new Map<string, { at: number }>();
/** performance.now() when each job function started; `committedAt` when the payload carries it (BullMQ). */
const starts: { id: string; at: number; committedAt?: number }[] = [];
let firstRequestAt = NaN;
let retries = 0;
let failedRequests = 0;
/** aftercommit: claim queries the worker sent (SELECT … FOR UPDATE SKIP LOCKED of a queue), counted through knex's query event. */
let claims = 0;

function jobStarted(id: string, committedAt?: number): void {
  starts.push({ id, at: performance.now(), ...(committedAt === undefined ? {} : { committedAt }) });
}

/** The request's row: its id, for the rw job to read back. */
async function insertRequest(db: Knex | Knex.Transaction): Promise<number> {
  const row = { note: 'a request', created_at: Date.now() };
  if (database === 'mysql') {
    const [id] = (await db(REQUESTS_TABLE).insert(row)) as number[];
    return id!;
  }
  const [inserted] = (await db(REQUESTS_TABLE).insert(row).returning('id')) as { id: number }[];
  return inserted!.id;
}

/** The rw job's work: one SELECT, one INSERT. */
async function readAndWrite(db: Knex | Knex.Transaction, requestId: number): Promise<void> {
  const request = (await db(REQUESTS_TABLE).where({ id: requestId }).first('id', 'created_at')) as { id: number } | undefined;
  if (!request) throw new Error(`request row ${requestId} not found: the job ran before its request's data was visible`);
  await db(JOB_ROWS_TABLE).insert({ request_id: request.id, created_at: Date.now() });
}

function kindOf(path: string): JobKind | 'baseline' {
  const kind = path.slice(1);
  if (kind === 'baseline' || kind === 'noop' || kind === 'rw') return kind;
  throw Object.assign(new Error(`no route ${path}`), { status: 404, expose: true });
}

// ---- the systems ---------------------------------------------------------------

interface System {
  settings: Record<string, string | number | boolean>;
  /** The guarded request handling (Koa middleware). */
  middleware: Koa.Middleware;
  /** Jobs of the current cell finished for good (committed as done), and failed ones. */
  progress(): Promise<{ done: number; failed: number }>;
  /** Empties the system's job storage (between cells). */
  reset(): Promise<void>;
  stop(): Promise<void>;
}

async function aftercommitSystem(): Promise<System> {
  const tm = new TransactionManager(knex);
  tm.onRetry(() => retries++);
  knex.on('query', (query: { sql: string }) => {
    if (/skip locked/i.test(query.sql) && /`?"?queue"?`? = /.test(query.sql)) claims++;
  });
  const scheduler = new PersistentTransactionalScheduler(tm, { tablePrefix: AFTERCOMMIT_PREFIX, concurrency: CONCURRENCY });
  scheduler.define('noop', async (job: JobHandle) => {
    jobStarted(job.id);
    return null;
  });
  scheduler.define('rw', async (job: JobHandle, requestId: number) => {
    jobStarted(job.id);
    await readAndWrite(job.db, requestId);
    return null;
  });
  await scheduler.migrate();
  const worker = scheduler.worker({ concurrency: CONCURRENCY }).start();
  return {
    settings: {
      'worker concurrency': CONCURRENCY,
      'poll ms (min/max)': '50/2000 (default); woken in-process after each commit',
      'knex pool (requests + jobs + claims)': POOL,
    },
    middleware: aftercommit({ manager: tm, scheduler }, async (ctx) => {
      const kind = kindOf(ctx.path);
      const requestId = await insertRequest(ctx.db);
      if (kind === 'baseline') {
        ctx.body = { requestId };
        return;
      }
      const commit = { at: NaN };
      // Registered before schedule(), so it runs before the scheduler's own after-commit hook (the worker's wake-up).
      ctx.transaction.afterCommit((ok: boolean) => {
        if (ok) commit.at = performance.now();
      });
      const id = ctx.scheduler.schedule(kind, requestId);
      commits.set(id, commit);
      ctx.status = 202;
      ctx.body = { id };
    }),
    progress: async () => {
      const stats = await scheduler.stats();
      return { done: stats.done, failed: stats.failed };
    },
    reset: async () => {
      await knex(`${AFTERCOMMIT_PREFIX}jobs`).truncate();
    },
    stop: () => worker.stop(),
  };
}

async function bullmqSystem(): Promise<System> {
  // Client instances: BullMQ's ESM build cannot load ioredis by itself. The worker duplicates its own for the blocking pop.
  const redis = () => new Redis({ host: '127.0.0.1', port: 6379, maxRetriesPerRequest: null });
  const queue = new Queue(BULLMQ_QUEUE, { connection: redis(), prefix: BULLMQ_PREFIX });
  const worker = new BullWorker<{ requestId: number; committedAt: number }>(
    BULLMQ_QUEUE,
    async (job) => {
      jobStarted(job.id!, job.data.committedAt);
      if (job.name === 'rw') await readAndWrite(knex, job.data.requestId);
      return null;
    },
    { connection: redis(), prefix: BULLMQ_PREFIX, concurrency: CONCURRENCY },
  );
  worker.on('error', (err) => console.error(`bullmq worker: ${err.message}`));
  await queue.waitUntilReady();
  await worker.waitUntilReady();
  return {
    settings: {
      'worker concurrency': CONCURRENCY,
      'job options': 'defaults (attempts 1, completed jobs kept)',
      'wake-up': 'blocking BZPOPMIN on the queue marker (default drainDelay 5 s)',
      'knex pool (requests + rw jobs), MariaDB': POOL,
    },
    middleware: async (ctx) => {
      const kind = kindOf(ctx.path);
      const requestId = await knex.transaction((trx) => insertRequest(trx));
      if (kind === 'baseline') {
        ctx.body = { requestId };
        return;
      }
      const committedAt = performance.now(); // right after COMMIT; the push happens after it, as BullMQ users do
      const job = await queue.add(kind, { requestId, committedAt });
      ctx.status = 202;
      ctx.body = { id: job.id };
    },
    progress: async () => {
      const counts = await queue.getJobCounts('completed', 'failed');
      return { done: counts.completed ?? 0, failed: counts.failed ?? 0 };
    },
    reset: async () => {
      await queue.obliterate({ force: true });
    },
    stop: async () => {
      await worker.close();
      await queue.close();
    },
  };
}

/** pg-boss's Db interface over a knex transaction: its $n placeholders become knex's `?` (and a literal `?` is escaped). */
function pgBossDb(trx: Knex.Transaction): PgBoss.Db {
  return {
    async executeSql(text: string, values: unknown[] = []) {
      const bindings: unknown[] = [];
      const sql = text.replace(/\?/g, '\\?').replace(/\$(\d+)/g, (_, n: string) => {
        bindings.push(values[Number(n) - 1] ?? null); // pg sends undefined as NULL; knex refuses it
        return '?';
      });
      const result = (await trx.raw(sql, bindings as Knex.RawBinding[])) as { rows: unknown[] };
      return { rows: result.rows };
    },
  };
}

async function pgBossSystem(): Promise<System> {
  const boss = new PgBoss({ connectionString: benchDatabaseUrl('postgres'), schema: PGBOSS_SCHEMA });
  boss.on('error', (err: Error) => console.error(`pg-boss: ${err.message}`));
  await boss.start();
  await boss.createQueue(PGBOSS_QUEUE);
  // pg-boss 10 has no worker concurrency option: each work() is one loop that fetches up to
  // batchSize jobs, hands them to the handler, and polls again pollingIntervalSeconds after the
  // fetch began. CONCURRENCY loops, each running its batch one job at a time, keep at most
  // CONCURRENCY jobs running, as the other systems do.
  for (let i = 0; i < CONCURRENCY; i++) {
    await boss.work<{ kind: JobKind; requestId: number }>(PGBOSS_QUEUE, { batchSize: PGBOSS_BATCH, pollingIntervalSeconds: 0.5 }, async (jobs) => {
      for (const job of jobs) {
        jobStarted(job.id);
        if (job.data.kind === 'rw') await readAndWrite(knex, job.data.requestId);
      }
    });
  }
  return {
    settings: {
      'work() loops': CONCURRENCY,
      batchSize: PGBOSS_BATCH,
      'pollingIntervalSeconds': '0.5 (the minimum; default 2)',
      'wake-up': 'polling only (pg-boss 10 has no LISTEN/NOTIFY)',
      'pg-boss pool (fetch/complete/maintenance)': '10 (default)',
      'knex pool (requests + rw jobs)': POOL,
    },
    middleware: async (ctx) => {
      const kind = kindOf(ctx.path);
      let jobId: string | null = null;
      const commit = { at: NaN };
      const requestId = await knex.transaction(async (trx) => {
        const id = await insertRequest(trx);
        if (kind !== 'baseline') {
          jobId = await boss.send(PGBOSS_QUEUE, { kind, requestId: id }, { db: pgBossDb(trx) });
          commits.set(jobId!, commit);
        }
        return id;
      });
      commit.at = performance.now();
      ctx.status = kind === 'baseline' ? 200 : 202;
      ctx.body = kind === 'baseline' ? { requestId } : { id: jobId };
    },
    progress: async () => {
      const { rows } = (await knex.raw(`SELECT state, count(*)::int AS n FROM ${PGBOSS_SCHEMA}.job WHERE name = ? GROUP BY state`, [PGBOSS_QUEUE])) as {
        rows: { state: string; n: number }[];
      };
      const count = (state: string) => rows.find((r) => r.state === state)?.n ?? 0;
      return { done: count('completed'), failed: count('failed') };
    },
    reset: async () => {
      await knex.raw(`DELETE FROM ${PGBOSS_SCHEMA}.job WHERE name = ?`, [PGBOSS_QUEUE]);
    },
    stop: async () => {
      await boss.stop({ graceful: true, wait: true, timeout: 10_000 });
    },
  };
}

async function graphileSystem(): Promise<System> {
  let scheduledThisCell = 0;
  // Warnings and errors only: the default logger writes a line per completed job, which the others do not.
  const logger = new GraphileLogger(() => (level, message) => {
    if (level === 'error' || level === 'warning') console.error(`graphile-worker ${level}: ${message}`);
  });
  const runner: Runner = await runGraphile({
    connectionString: benchDatabaseUrl('postgres'),
    schema: GRAPHILE_SCHEMA,
    concurrency: CONCURRENCY,
    noHandleSignals: true,
    logger,
    taskList: {
      noop: async (_payload, helpers) => {
        jobStarted(helpers.job.id);
      },
      rw: async (payload, helpers) => {
        jobStarted(helpers.job.id);
        await readAndWrite(knex, (payload as { requestId: number }).requestId);
      },
    },
  });
  return {
    settings: {
      concurrency: CONCURRENCY,
      pollInterval: '2000 ms (default)',
      'wake-up': 'LISTEN "jobs:insert" (default), NOTIFY sent by add_job at commit',
      'graphile pool (getJob/complete/LISTEN)': '10 (default)',
      'knex pool (requests + rw jobs)': POOL,
      logger: 'warnings and errors only',
    },
    middleware: async (ctx) => {
      const kind = kindOf(ctx.path);
      let jobId = '';
      const commit = { at: NaN };
      const requestId = await knex.transaction(async (trx) => {
        const id = await insertRequest(trx);
        if (kind !== 'baseline') {
          const { rows } = (await trx.raw(`SELECT id FROM ${GRAPHILE_SCHEMA}.add_job(?, json_build_object('requestId', ?::int))`, [kind, id])) as {
            rows: { id: string }[];
          };
          jobId = String(rows[0]!.id);
          commits.set(jobId, commit);
        }
        return id;
      });
      if (kind !== 'baseline') scheduledThisCell++;
      commit.at = performance.now();
      ctx.status = kind === 'baseline' ? 200 : 202;
      ctx.body = kind === 'baseline' ? { requestId } : { id: jobId };
    },
    progress: async () => {
      // A job's row is deleted when it completes; a failed one stays (with last_error set).
      const { rows } = (await knex.raw(
        `SELECT count(*)::int AS n, count(*) FILTER (WHERE last_error IS NOT NULL)::int AS failed FROM ${GRAPHILE_SCHEMA}._private_jobs`,
      )) as { rows: { n: number; failed: number }[] };
      return { done: scheduledThisCell - rows[0]!.n, failed: rows[0]!.failed };
    },
    reset: async () => {
      scheduledThisCell = 0;
      await knex.raw(`DELETE FROM ${GRAPHILE_SCHEMA}._private_jobs`);
    },
    stop: () => runner.stop(),
  };
}

// ---- the server and the protocol -------------------------------------------------

const impl =
  system === 'aftercommit-mariadb' || system === 'aftercommit-postgres'
    ? await aftercommitSystem()
    : system === 'bullmq'
      ? await bullmqSystem()
      : system === 'pg-boss'
        ? await pgBossSystem()
        : await graphileSystem();

const app = new Koa();
app.use(async (ctx, next) => {
  if (Number.isNaN(firstRequestAt)) firstRequestAt = performance.now();
  try {
    await next();
  } catch (err) {
    failedRequests++;
    throw err;
  }
});
app.use(impl.middleware);
app.on('error', (err: Error) => console.error(`${system}: request failed: ${err.message}`));

const send = (reply: Reply, then?: () => void) => process.send!(reply, undefined, {}, () => then?.());

/** Waits until every job of the cell is done; the clock ran from the first request of the cell. */
async function drain(expected: number): Promise<Extract<Reply, { type: 'drained' }>> {
  let last = -1;
  let lastProgress = performance.now();
  for (;;) {
    const { done, failed } = await impl.progress();
    const now = performance.now();
    if (failed > 0) throw new Error(`${failed} jobs failed`);
    if (done >= expected) {
      const ms = now - firstRequestAt;
      const commitToStart: number[] = [];
      let early = 0;
      let missing = 0;
      for (const start of starts) {
        const committedAt = start.committedAt ?? commits.get(start.id)?.at;
        if (committedAt === undefined || Number.isNaN(committedAt)) {
          missing++; // no commit recorded for this job: would mean a job of an aborted request ran
          continue;
        }
        if (start.at < committedAt) early++; // the job began before the request saw its COMMIT return
        commitToStart.push(start.at - committedAt);
      }
      return { type: 'drained', ms, commitToStart, startedBeforeCommitReturned: early, missing, retries, failedRequests, claims };
    }
    if (done > last) [last, lastProgress] = [done, now];
    if (now - lastProgress > 60_000) throw new Error(`no job finished for 60 s (${done} of ${expected} done)`);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

async function reset(): Promise<void> {
  await impl.reset();
  await knex(REQUESTS_TABLE).truncate();
  await knex(JOB_ROWS_TABLE).truncate();
  commits.clear();
  starts.length = 0;
  firstRequestAt = NaN;
  retries = 0;
  failedRequests = 0;
  claims = 0;
}

process.on('message', (message: Command) => {
  const handle = async (): Promise<Reply> => {
    switch (message.cmd) {
      case 'drain':
        return drain(message.expected);
      case 'reset':
        await reset();
        return { type: 'reset' };
      case 'stop':
        server.close();
        await impl.stop();
        await knex.destroy();
        return { type: 'stopped' };
    }
  };
  handle().then(
    // Stopped: exit once the reply is out (a peer's client may keep a timer alive).
    (reply) => send(reply, reply.type === 'stopped' ? () => process.exit(0) : undefined),
    (err: Error) => send({ type: 'error', message: `${system}: ${err.stack ?? err.message}` }),
  );
});

const server = app.listen(0, '127.0.0.1', () => {
  send({ type: 'ready', port: (server.address() as { port: number }).port, settings: impl.settings });
});
