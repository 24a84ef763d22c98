/**
 * aftercommit against the usual alternatives, the same workload through a real
 * Koa server, measured in one run (on demand; not part of the test suite):
 *
 *   aftercommit/MariaDB     aftercommit middleware: the request's transaction writes its row and
 *                           schedules the job (the job row is inserted by that transaction before
 *                           COMMIT); PersistentTransactionalScheduler worker in the server process.
 *   aftercommit/PostgreSQL  the same on PostgreSQL.
 *   BullMQ                  knex.transaction on MariaDB writes the row; queue.add() on the local Redis
 *                           AFTER the commit, as BullMQ users do; a BullMQ Worker in the server process.
 *   pg-boss                 (v10) knex.transaction on PostgreSQL writes the row and boss.send(...,
 *                           { db }) inserts the job in that transaction (a Db adapter over the knex
 *                           transaction); boss.work() loops in the server process.
 *   graphile-worker         (0.17) knex.transaction on PostgreSQL writes the row and
 *                           SELECT <schema>.add_job(...) inserts the job in it; run() in the server process.
 *
 * Each system runs in a server process of its own (bench/compare-server.ts), started for its cells
 * and stopped after them, so no system's idle workers or AsyncLocalStorage hooks weigh on another;
 * only one server process exists at a time. This process is the load generator: BENCH_CONNECTIONS
 * keep-alive HTTP connections (node:http), each sending POSTs back to back until BENCH_REQUESTS are
 * sent. Workers run BENCH_CONCURRENCY jobs at once in every system. Each request writes one row in
 * its own transaction, then (except in the baseline) schedules one job. Two workloads:
 *   (a) noop  the job does nothing;
 *   (b) rw    the job SELECTs the request's row and INSERTs one row: in the job's own transaction
 *             (aftercommit's job.db), or through the app's knex pool (the peers give no transaction).
 *
 * What is printed per system × workload:
 *   jobs/s          BENCH_REQUESTS jobs ÷ time from the server receiving the cell's first request to the
 *                   first poll (every BENCH_POLL_MS) of the system's own bookkeeping finding all of them
 *                   done: stats() for aftercommit, getJobCounts() for BullMQ, the job table for pg-boss,
 *                   the (deleted-on-completion) job table for graphile-worker. Summed over the rounds.
 *   ÷commits        jobs/s ÷ the physical limit: the commit rate of one-row transactions (BEGIN; UPDATE a
 *                   row of its own; COMMIT) from BENCH_CONNECTIONS + BENCH_CONCURRENCY connections of this
 *                   process, measured for each database before the systems run (MariaDB for aftercommit/
 *                   MariaDB and BullMQ, PostgreSQL for the others).
 *   request p50/p99 the HTTP latency (client side) of the requests that schedule, while the workers run
 *                   the jobs; "baseline" is the same request without scheduling (same server, same
 *                   connections, BENCH_REQUESTS requests, no jobs running), measured just before;
 *                   "added" is the difference of the percentiles: what scheduling costs the request,
 *                   including sharing the CPU and the database with the jobs it starts.
 *   commit→start    from right after the request's COMMIT returned (an after-commit hook registered
 *                   before schedule() for aftercommit; the line after `await knex.transaction(...)` for
 *                   the peers) to the job function starting, in the server process: a map by job id,
 *                   or (BullMQ, whose push comes after the commit) the timestamp in the payload.
 *                   With a fixed number of requests sent faster than the jobs run, this is mostly the
 *                   backlog's queueing time; hence also:
 *   commit→start without a backlog: BENCH_SERIAL no-op requests from ONE connection, the same clock:
 *                   the cost of the wake-up path itself (in-process wake + claim transaction, BZPOPMIN,
 *                   LISTEN/NOTIFY + get_job, polling).
 *   ratios          each system against aftercommit on the same database (MariaDB for BullMQ, PostgreSQL
 *                   for pg-boss and graphile-worker), then against aftercommit/MariaDB for all.
 *   cores           where the 2 cores went during the scheduling run (/proc): the server process, the
 *                   database server, Redis, this load generator, the whole machine, and the rest (other
 *                   processes: noise). Also the database's commits per job (server-wide counters),
 *                   aftercommit's claim queries per job, deadlocks, retries, and jobs that started before
 *                   their request saw its COMMIT return.
 *
 * Every cell starts from empty tables; before a system's cells, BENCH_WARMUP baseline and no-op
 * requests warm it up. pg-boss 10 has no concurrency option and no LISTEN/NOTIFY: it runs
 * BENCH_CONCURRENCY work() loops, each fetching up to BENCH_PGBOSS_BATCH jobs per poll (every 0.5 s,
 * its minimum) and running them one at a time, so that polling does not cap its throughput.
 * BENCH_ROUNDS rounds, the system order reversed in every other round; latencies are pooled over
 * the rounds. Everything the run creates is dropped at the end (tables bench_cmp_*,
 * schemas bench_pgboss and bench_graphile_worker, Redis keys bench_cmp_bull:*), and at the start
 * in case an earlier run died.
 *
 *   npx tsup && node --import tsx bench/compare.ts        (1.5 minutes with the defaults on 2 idle cores; 2 under load)
 *   BENCH_REQUESTS=2000  BENCH_CONNECTIONS=16  BENCH_CONCURRENCY=8  BENCH_ROUNDS=2  BENCH_WARMUP=300  BENCH_SERIAL=300
 *   BENCH_COMMIT_MS=3000  BENCH_POLL_MS=20  BENCH_PGBOSS_BATCH=100  BENCH_SYSTEMS=aftercommit-mariadb,bullmq,...
 *   BENCH_PROFILE=<dir>   (each server process writes a --cpu-prof profile into <dir>)
 *   (BENCH_SYSTEMS: aftercommit-mariadb, aftercommit-postgres, bullmq, pg-boss, graphile-worker)
 *
 * Needs MariaDB, PostgreSQL (as in bench/support.ts) and Redis on 127.0.0.1:6379, and ioredis for BullMQ.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { Agent, request as httpRequest } from 'node:http';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import knexFactory, { type Knex } from 'knex';
import { benchDatabaseUrl, percentiles } from './support.js';
import {
  AFTERCOMMIT_PREFIX,
  BULLMQ_PREFIX,
  commitRate,
  cpuMeter,
  deleteRedisKeys,
  serverCounters,
  type Cores,
  type Family,
  GRAPHILE_SCHEMA,
  JOB_ROWS_TABLE,
  PGBOSS_SCHEMA,
  REQUESTS_TABLE,
  SYSTEMS,
  type Command,
  type JobKind,
  type Reply,
  type SystemName,
} from './compare-shared.js';

const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 2000);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 16);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 8);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 300);
const SERIAL = Number(process.env.BENCH_SERIAL ?? 300);
const COMMIT_MS = Number(process.env.BENCH_COMMIT_MS ?? 3000);
const POLL_MS = Number(process.env.BENCH_POLL_MS ?? 20);
const PGBOSS_BATCH = Number(process.env.BENCH_PGBOSS_BATCH ?? 100);
const CHOSEN = (process.env.BENCH_SYSTEMS ?? SYSTEMS.join(',')).split(',') as SystemName[];
for (const name of CHOSEN) if (!SYSTEMS.includes(name)) throw new Error(`BENCH_SYSTEMS: unknown system ${name}; known: ${SYSTEMS.join(', ')}`);
const WORKLOADS: JobKind[] = ['noop', 'rw'];
const COMMIT_TABLE = 'bench_cmp_commit_rate';

const LABEL: Record<SystemName, string> = {
  'aftercommit-mariadb': 'aftercommit/MariaDB',
  'aftercommit-postgres': 'aftercommit/PostgreSQL',
  bullmq: 'BullMQ (MariaDB+Redis)',
  'pg-boss': 'pg-boss (PostgreSQL)',
  'graphile-worker': 'graphile-worker (PG)',
};
const FAMILY: Record<SystemName, Family> = {
  'aftercommit-mariadb': 'mysql',
  'aftercommit-postgres': 'postgres',
  bullmq: 'mysql',
  'pg-boss': 'postgres',
  'graphile-worker': 'postgres',
};
/** The aftercommit system each system is compared with: the one on the same database. */
const REFERENCE: Record<Family, SystemName> = { mysql: 'aftercommit-mariadb', postgres: 'aftercommit-postgres' };
const WORKLOAD_TITLE: Record<JobKind, string> = { noop: '(a) no-op jobs', rw: '(b) 1 SELECT + 1 INSERT jobs' };

const databases: Record<Family, Knex> = {
  mysql: knexFactory({ client: 'mysql2', connection: benchDatabaseUrl('mysql'), pool: { min: 0, max: 2 } }),
  postgres: knexFactory({ client: 'pg', connection: benchDatabaseUrl('postgres'), pool: { min: 0, max: 2 } }),
};

// ---- setup and cleanup -----------------------------------------------------------

async function cleanUp(): Promise<void> {
  for (const db of Object.values(databases)) {
    for (const table of [REQUESTS_TABLE, JOB_ROWS_TABLE, `${AFTERCOMMIT_PREFIX}jobs`, `${AFTERCOMMIT_PREFIX}schema`, COMMIT_TABLE]) {
      await db.schema.dropTableIfExists(table);
    }
  }
  await databases.postgres.raw(`DROP SCHEMA IF EXISTS ${PGBOSS_SCHEMA} CASCADE`);
  await databases.postgres.raw(`DROP SCHEMA IF EXISTS ${GRAPHILE_SCHEMA} CASCADE`);
  await deleteRedisKeys(`${BULLMQ_PREFIX}:*`);
}

async function createTables(): Promise<void> {
  for (const db of Object.values(databases)) {
    await db.schema.createTable(REQUESTS_TABLE, (t) => {
      t.increments('id');
      t.string('note', 50).notNullable();
      t.bigInteger('created_at').notNullable();
    });
    await db.schema.createTable(JOB_ROWS_TABLE, (t) => {
      t.increments('id');
      t.integer('request_id').notNullable();
      t.bigInteger('created_at').notNullable();
    });
  }
}

// ---- the database's counters (commits, deadlocks), server-wide -----------------------

const counters: Record<Family, () => Promise<{ commits: number; deadlocks: number }>> = {
  mysql: serverCounters(databases.mysql, 'mysql'),
  postgres: serverCounters(databases.postgres, 'postgres'),
};

// ---- a server process ----------------------------------------------------------------

const SERVER = fileURLToPath(new URL('./compare-server.ts', import.meta.url));
const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

interface Server {
  name: SystemName;
  child: ChildProcess;
  port: number;
  agent: Agent;
  settings: Record<string, string | number | boolean>;
  call(command: Command): Promise<Reply>;
}

async function startServer(name: SystemName): Promise<Server> {
  // BENCH_PROFILE=<dir>: each server process writes a V8 CPU profile there (where the server's core went).
  const profile = process.env.BENCH_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE}`] : [];
  const child = spawn(process.execPath, [...profile, '--import', 'tsx', SERVER, name], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: {
      ...process.env,
      BENCH_CONNECTIONS: String(CONNECTIONS),
      BENCH_CONCURRENCY: String(CONCURRENCY),
      BENCH_PGBOSS_BATCH: String(PGBOSS_BATCH),
      BENCH_POLL_MS: String(POLL_MS),
    },
  });
  children.add(child);
  const replies: Reply[] = [];
  let waiting: ((reply: Reply) => void) | undefined;
  let exited: Error | undefined;
  const deliver = (reply: Reply) => {
    if (waiting) {
      const resolve = waiting;
      waiting = undefined;
      resolve(reply);
    } else replies.push(reply);
  };
  child.on('message', (reply: Reply) => deliver(reply));
  child.on('exit', (code, signal) => {
    children.delete(child);
    exited = new Error(`${name}: server process exited (${code ?? signal})`);
    deliver({ type: 'error', message: exited.message });
  });
  const next = () => new Promise<Reply>((resolve) => (replies.length ? resolve(replies.shift()!) : (waiting = resolve)));
  const expect = async <T extends Reply['type']>(type: T): Promise<Extract<Reply, { type: T }>> => {
    const reply = await next();
    if (reply.type === 'error') throw new Error(reply.message);
    if (reply.type !== type) throw new Error(`${name}: expected ${type}, got ${reply.type}`);
    return reply as Extract<Reply, { type: T }>;
  };
  const ready = await expect('ready');
  return {
    name,
    child,
    port: ready.port,
    agent: new Agent({ keepAlive: true, maxSockets: CONNECTIONS }),
    settings: ready.settings,
    call: async (command) => {
      if (exited) throw exited;
      child.send(command);
      const type = command.cmd === 'drain' ? 'drained' : command.cmd === 'reset' ? 'reset' : 'stopped';
      return expect(type);
    },
  };
}

async function stopServer(server: Server): Promise<void> {
  server.agent.destroy();
  const gone = new Promise<void>((resolve) => server.child.once('exit', () => resolve()));
  await server.call({ cmd: 'stop' });
  await gone;
}

// ---- the load ------------------------------------------------------------------------

function post(server: Server, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port: server.port, method: 'POST', path, agent: server.agent, headers: { 'content-length': '0' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** `count` POSTs from `connections` loops; the latency of each (ms). */
async function load(server: Server, path: string, count: number, connections = CONNECTIONS): Promise<{ latencies: number[]; ms: number }> {
  const latencies: number[] = [];
  let issued = 0;
  let failed = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (issued < count) {
        issued++;
        const sent = performance.now();
        const status = await post(server, path);
        latencies.push(performance.now() - sent);
        if (status < 200 || status >= 300) failed++;
      }
    }),
  );
  if (failed > 0) throw new Error(`${server.name} ${path}: ${failed} of ${count} requests failed`);
  return { latencies, ms: performance.now() - started };
}

// ---- a system's cells ------------------------------------------------------------------

interface Cell {
  jobs: number;
  ms: number;
  perRound: number[]; // jobs/s of each round
  requestMs: number; // time to send the scheduling requests (summed)
  baselineMs: number;
  request: number[];
  baseline: number[];
  commitToStart: number[];
  early: number;
  missing: number;
  retries: number;
  deadlocks: number;
  serverCommits: number;
  claims: number;
  cores: Cores[];
  /** commit→start with one connection (noop jobs), no backlog to speak of. */
  serial: number[];
}

const cells = new Map<string, Cell>();
const cellOf = (name: SystemName, workload: JobKind): Cell => {
  const key = `${name} ${workload}`;
  let cell = cells.get(key);
  if (!cell) {
    cell = {
      jobs: 0,
      ms: 0,
      perRound: [],
      requestMs: 0,
      baselineMs: 0,
      request: [],
      baseline: [],
      commitToStart: [],
      early: 0,
      missing: 0,
      retries: 0,
      deadlocks: 0,
      serverCommits: 0,
      claims: 0,
      cores: [],
      serial: [],
    };
    cells.set(key, cell);
  }
  return cell;
};
const settingsOf = new Map<SystemName, Record<string, string | number | boolean>>();

async function drained(server: Server, expected: number): Promise<Extract<Reply, { type: 'drained' }>> {
  return (await server.call({ cmd: 'drain', expected })) as Extract<Reply, { type: 'drained' }>;
}

async function runSystem(name: SystemName): Promise<void> {
  const family = FAMILY[name];
  const startedAt = performance.now();
  const server = await startServer(name);
  settingsOf.set(name, server.settings);
  try {
    await server.call({ cmd: 'reset' });
    await load(server, '/baseline', WARMUP);
    await load(server, '/noop', WARMUP);
    await drained(server, WARMUP);
    await server.call({ cmd: 'reset' });
    // commit→start without a backlog: one connection, no-op jobs.
    await load(server, '/noop', SERIAL, 1);
    cellOf(name, 'noop').serial.push(...(await drained(server, SERIAL)).commitToStart);
    await server.call({ cmd: 'reset' });
    const line: string[] = [];
    for (const workload of WORKLOADS) {
      const cell = cellOf(name, workload);
      const baseline = await load(server, '/baseline', REQUESTS);
      await server.call({ cmd: 'reset' });
      const countersBefore = await counters[family]();
      const meter = cpuMeter([server.child.pid!], family);
      const scheduled = await load(server, `/${workload}`, REQUESTS);
      const result = await drained(server, REQUESTS);
      const cores = meter();
      const countersAfter = await counters[family]();
      cell.deadlocks += countersAfter.deadlocks - countersBefore.deadlocks;
      cell.serverCommits += countersAfter.commits - countersBefore.commits;
      cell.claims += result.claims;
      await server.call({ cmd: 'reset' });
      cell.jobs += REQUESTS;
      cell.ms += result.ms;
      cell.perRound.push((REQUESTS / result.ms) * 1000);
      cell.requestMs += scheduled.ms;
      cell.baselineMs += baseline.ms;
      cell.request.push(...scheduled.latencies);
      cell.baseline.push(...baseline.latencies);
      cell.commitToStart.push(...result.commitToStart);
      cell.early += result.startedBeforeCommitReturned;
      cell.missing += result.missing;
      cell.retries += result.retries;
      if (cores) cell.cores.push(cores);
      line.push(`${workload} ${fixed((REQUESTS / result.ms) * 1000)} jobs/s`);
    }
    console.log(`  ${LABEL[name].padEnd(24)} ${line.join(', ')}  (${((performance.now() - startedAt) / 1000).toFixed(1)} s with start and warm-up)`);
  } finally {
    await stopServer(server);
  }
}

// ---- printing ---------------------------------------------------------------------------

const fixed = (n: number, digits = 0) => (Number.isFinite(n) ? n.toFixed(digits) : '-');
/** Milliseconds, with the digits that matter. */
const ms = (n: number) => (!Number.isFinite(n) ? '-' : Math.abs(n) < 1 ? n.toFixed(3) : Math.abs(n) < 10 ? n.toFixed(2) : Math.abs(n) < 100 ? n.toFixed(1) : n.toFixed(0));
const signed = (n: number) => (n >= 0 ? `+${ms(n)}` : ms(n));
const ratio = (a: number, b: number) => (Number.isFinite(a / b) ? (a / b).toFixed(2) : '-');
const p = (values: number[]) => (values.length ? percentiles(values, [50, 99]) : { 50: NaN, 99: NaN });
const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;

interface Summary {
  jobsPerSecond: number;
  request: { 50: number; 99: number };
  baseline: { 50: number; 99: number };
  commitToStart: { 50: number; 99: number };
}

function summary(cell: Cell): Summary {
  return {
    jobsPerSecond: (cell.jobs / cell.ms) * 1000,
    request: p(cell.request) as Summary['request'],
    baseline: p(cell.baseline) as Summary['baseline'],
    commitToStart: p(cell.commitToStart) as Summary['commitToStart'],
  };
}

function printWorkload(workload: JobKind, commitRates: Record<Family, number>): void {
  const ran = CHOSEN.filter((name) => cells.has(`${name} ${workload}`));
  const s = Object.fromEntries(ran.map((name) => [name, summary(cellOf(name, workload))])) as Record<SystemName, Summary>;
  console.log(`\n${WORKLOAD_TITLE[workload]}`);
  console.log(
    `  ${'system'.padEnd(24)} ${'jobs/s'.padStart(7)} ${'(per round)'.padEnd(14)} ${'÷commits'.padStart(8)}  ${'request p50/p99 ms'.padStart(19)}  ${'baseline p50/p99'.padStart(17)}  ${'added p50/p99'.padStart(15)}  ${'commit→start p50/p99 ms'.padStart(24)}`,
  );
  for (const name of ran) {
    const x = s[name];
    const cell = cellOf(name, workload);
    console.log(
      `  ${LABEL[name].padEnd(24)} ${fixed(x.jobsPerSecond).padStart(7)} ${`(${cell.perRound.map((r) => fixed(r)).join(', ')})`.padEnd(14)} ${(x.jobsPerSecond / commitRates[FAMILY[name]]).toFixed(3).padStart(8)}  ` +
        `${`${ms(x.request[50])} / ${ms(x.request[99])}`.padStart(19)}  ${`${ms(x.baseline[50])} / ${ms(x.baseline[99])}`.padStart(17)}  ` +
        `${`${signed(x.request[50] - x.baseline[50])} / ${signed(x.request[99] - x.baseline[99])}`.padStart(15)}  ${`${ms(x.commitToStart[50])} / ${ms(x.commitToStart[99])}`.padStart(24)}`,
    );
  }
  const ratios = (name: SystemName, reference: SystemName) => {
    const x = s[name];
    const r = s[reference];
    if (!x || !r) return '-'.padStart(34);
    return [
      ratio(x.jobsPerSecond, r.jobsPerSecond).padStart(6),
      ratio(x.request[50], r.request[50]).padStart(6),
      ratio(x.request[99], r.request[99]).padStart(6),
      ratio(x.commitToStart[50], r.commitToStart[50]).padStart(7),
      ratio(x.commitToStart[99], r.commitToStart[99]).padStart(7),
    ].join(' ');
  };
  console.log(`  ratios: system ÷ aftercommit on the same database  |  system ÷ aftercommit/MariaDB`);
  const head = `${'jobs/s'.padStart(6)} ${'req50'.padStart(6)} ${'req99'.padStart(6)} ${'c→s50'.padStart(7)} ${'c→s99'.padStart(7)}`;
  console.log(`  ${''.padEnd(24)} ${head}  |  ${head}`);
  for (const name of ran) console.log(`  ${LABEL[name].padEnd(24)} ${ratios(name, REFERENCE[FAMILY[name]])}  |  ${ratios(name, 'aftercommit-mariadb')}`);
}

function printSerial(): void {
  const ran = CHOSEN.filter((name) => cells.get(`${name} noop`)?.serial.length);
  if (!ran.length) return;
  const s = Object.fromEntries(ran.map((name) => [name, percentiles(cellOf(name, 'noop').serial, [50, 90, 99])])) as Record<SystemName, Record<number, number>>;
  console.log(`\ncommit→start without a backlog: ${SERIAL} no-op requests from 1 connection (ms; ratios ÷ aftercommit on the same database | ÷ aftercommit/MariaDB)`);
  console.log(`  ${'system'.padEnd(24)} ${'p50'.padStart(7)} ${'p90'.padStart(7)} ${'p99'.padStart(7)}   ${'p50'.padStart(6)} ${'p99'.padStart(6)}  | ${'p50'.padStart(6)} ${'p99'.padStart(6)}`);
  for (const name of ran) {
    const x = s[name];
    const family = s[REFERENCE[FAMILY[name]]];
    const mariadb = s['aftercommit-mariadb'];
    const r = (ref: Record<number, number> | undefined, q: number) => (ref ? ratio(x[q]!, ref[q]!) : '-').padStart(6);
    console.log(
      `  ${LABEL[name].padEnd(24)} ${ms(x[50]!).padStart(7)} ${ms(x[90]!).padStart(7)} ${ms(x[99]!).padStart(7)}   ${r(family, 50)} ${r(family, 99)}  | ${r(mariadb, 50)} ${r(mariadb, 99)}`,
    );
  }
}

function printCores(): void {
  console.log('\nwhere the cores went while scheduling and draining (mean over rounds), and what else happened');
  console.log(
    `  ${'system'.padEnd(24)} ${'workload'.padEnd(8)} ${'machine'.padStart(7)} ${'server'.padStart(7)} ${'db'.padStart(6)} ${'redis'.padStart(6)} ${'loadgen'.padStart(7)} ${'other'.padStart(6)}  ` +
      `${'req/s sched'.padStart(11)} ${'req/s base'.padStart(10)}  ${'db commits/job'.padStart(14)} ${'claims/job'.padStart(10)} ${'deadlocks'.padStart(9)} ${'retries'.padStart(7)} ${'early'.padStart(6)}`,
  );
  for (const name of CHOSEN) {
    for (const workload of WORKLOADS) {
      const cell = cells.get(`${name} ${workload}`);
      if (!cell) continue;
      const c = (key: keyof Cores) => (cell.cores.length ? mean(cell.cores.map((x) => x[key])).toFixed(2) : '-');
      const other = cell.cores.length ? mean(cell.cores.map((x) => Math.max(0, x.machine - x.server - x.database - x.redis - x.loadgen))).toFixed(2) : '-';
      const aftercommitSystem = name.startsWith('aftercommit');
      console.log(
        `  ${LABEL[name].padEnd(24)} ${workload.padEnd(8)} ${c('machine').padStart(7)} ${c('server').padStart(7)} ${c('database').padStart(6)} ${c('redis').padStart(6)} ${c('loadgen').padStart(7)} ${other.padStart(6)}  ` +
          `${fixed((cell.jobs / cell.requestMs) * 1000).padStart(11)} ${fixed((cell.jobs / cell.baselineMs) * 1000).padStart(10)}  ` +
          `${(cell.serverCommits / cell.jobs).toFixed(2).padStart(14)} ${(aftercommitSystem ? (cell.claims / cell.jobs).toFixed(2) : '-').padStart(10)} ` +
          `${String(cell.deadlocks).padStart(9)} ${String(cell.retries).padStart(7)} ${String(cell.early).padStart(6)}${cell.missing ? ` (${cell.missing} jobs without a recorded commit)` : ''}`,
      );
    }
  }
  console.log(
    '  machine: busy cores, all processes; server: the system\'s server process (Koa + workers); loadgen: this process; other: the rest\n' +
      '  (other processes on the machine: when it is not ~0, the numbers are noisy).\n' +
      '  db commits/job: server-wide counter delta ÷ jobs, other clients included (MariaDB: Com_commit, explicit COMMITs only; PostgreSQL:\n' +
      '  transaction ids handed out, i.e. transactions that wrote, autocommit statements included). claims/job: aftercommit claim queries ÷ jobs.\n' +
      '  deadlocks: server-wide (PostgreSQL\'s counter lags). retries: transactions aftercommit retried. early: jobs started before their request saw COMMIT return.',
  );
}

// ---- the run -----------------------------------------------------------------------------

const runStarted = performance.now();
console.log(
  `compare: ${REQUESTS} requests per cell × ${ROUNDS} rounds, ${CONNECTIONS} HTTP connections, worker concurrency ${CONCURRENCY}, ` +
    `warm-up ${WARMUP}, done polled every ${POLL_MS} ms; ${availableParallelism()} cores`,
);
await cleanUp();
await createTables();

const N = CONNECTIONS + CONCURRENCY;
const commitRates: Record<Family, number> = { mysql: NaN, postgres: NaN };
for (const family of ['mysql', 'postgres'] as const) {
  if (CHOSEN.some((name) => FAMILY[name] === family)) commitRates[family] = await commitRate(family, N, { table: COMMIT_TABLE, ms: COMMIT_MS });
}
console.log(
  `physical limit: one-row transactions (BEGIN; UPDATE own row; COMMIT) from ${N} connections, ${COMMIT_MS / 1000} s: ` +
    `MariaDB ${fixed(commitRates.mysql)} commits/s, PostgreSQL ${fixed(commitRates.postgres)} commits/s`,
);

try {
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? CHOSEN : [...CHOSEN].reverse();
    console.log(`\nround ${round + 1} of ${ROUNDS}`);
    for (const name of order) await runSystem(name);
  }
} finally {
  await cleanUp();
}

console.log('\nsettings');
for (const name of CHOSEN) {
  const settings = settingsOf.get(name);
  if (settings) console.log(`  ${LABEL[name].padEnd(24)} ${Object.entries(settings).map(([k, v]) => `${k}: ${v}`).join('; ')}`);
}
for (const workload of WORKLOADS) printWorkload(workload, commitRates);
printSerial();
printCores();
console.log(
  `\n  request/baseline: client-side HTTP latency with scheduling (jobs running meanwhile) / without (same request, no job);` +
    ` added = the difference of the percentiles. commit→start: COMMIT returned → job function called, in the server process.` +
    `\n  ÷commits: jobs/s ÷ the commit rate of the system's database (MariaDB for aftercommit/MariaDB and BullMQ, PostgreSQL for the others).`,
);
console.log(`\ntotal ${((performance.now() - runStarted) / 1000).toFixed(0)} s`);
await Promise.all(Object.values(databases).map((db) => db.destroy()));
