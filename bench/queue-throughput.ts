/**
 * The persistent scheduler's throughput, measured in one run:
 *
 * 1. End to end: BENCH_JOBS no-op jobs, each scheduled by a request-like
 *    transaction of its own (`tm.run(() => scheduler.schedule('noop'))`) from
 *    BENCH_PRODUCERS concurrent loops in this process, run by 1, 2 and 4 worker
 *    processes (the real CLI, `--concurrency BENCH_WORKER_CONCURRENCY` each)
 *    started beforehand. The clock runs from the first schedule until stats()
 *    counts every job done (its result committed). The jobs table is emptied
 *    between configurations.
 *
 * 2. The physical limit next to each configuration: how many one-row
 *    transactions (BEGIN; UPDATE a row of its own; COMMIT) the database commits
 *    per second from N = workers × concurrency + producers connections of this
 *    process, i.e. as many transactions as the configuration can have doing
 *    work at once (each worker's claim loop is one more, not counted). It is
 *    measured right before the workers start, with the cores it kept busy, and
 *    printed with the ratio jobs/s ÷ commits/s. That ratio cannot approach 1:
 *    a job takes three transactions end to end (the one that schedules it, the
 *    claim that marks it running, and its own, which records its result), so
 *    about 1/3 is the ceiling. Strictly, a claim may take several jobs at once
 *    (up to the worker's free slots), so the floor is 2 + 1/concurrency commits
 *    per job, and claims that find nothing add to it: the commits per job the
 *    server counted are printed too (see serverCounters).
 *
 * 3. The claim query (SELECT … FOR UPDATE SKIP LOCKED LIMIT 4, as the worker
 *    sends it) on a jobs table holding 10 pending rows and nothing else, and on
 *    one holding the same plus BENCH_FINISHED_ROWS finished rows (state done):
 *    BENCH_CLAIMS claim transactions on each, alternating in rounds, each
 *    rolled back so the pending rows stay; µs per claim (p50, mean), and
 *    EXPLAIN on the big table to show the claim index is used.
 *
 * It also reports where the two cores went (database server, workers, this
 * process), deadlocks the server counted, and warnings the workers logged.
 *
 *   npx tsup && node --import tsx bench/queue-throughput.ts      (under a minute on 2 cores)
 *   BENCH_DB=postgres  BENCH_JOBS=5000  BENCH_PRODUCERS=8  BENCH_WORKERS=1,2,4
 *   BENCH_WORKER_CONCURRENCY=4  BENCH_COMMIT_MS=3000  BENCH_FINISHED_ROWS=1000000  BENCH_CLAIMS=2000
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import knexFactory, { type Knex } from 'knex';
import { PersistentTransactionalScheduler, TransactionManager } from '../dist/index.js';
import { TICKS_PER_SECOND, machineTicks, processTicks, ticksOf } from './proc-cpu.js';
import { benchKnexConfig, fillDoneRows, measureCommitRate, percentiles } from './support.js';

const database = process.env.BENCH_DB ?? 'mysql';
if (database !== 'mysql' && database !== 'postgres') throw new Error('bench/queue-throughput.ts needs BENCH_DB=mysql or postgres (workers in several processes, SKIP LOCKED)');
const JOBS = Number(process.env.BENCH_JOBS ?? 5000);
const PRODUCERS = Number(process.env.BENCH_PRODUCERS ?? 8);
const WORKER_COUNTS = (process.env.BENCH_WORKERS ?? '1,2,4').split(',').map(Number);
const WORKER_CONCURRENCY = Number(process.env.BENCH_WORKER_CONCURRENCY ?? 4);
const COMMIT_MS = Number(process.env.BENCH_COMMIT_MS ?? 3000);
const FINISHED_ROWS = Number(process.env.BENCH_FINISHED_ROWS ?? 1_000_000);
const CLAIMS = Number(process.env.BENCH_CLAIMS ?? 2000);
const PENDING_ROWS = 10;
const CLAIM_LIMIT = 4;

const PREFIX = 'bench_q_'; // part 1 (and queue-jobs.ts's default)
const EMPTY_PREFIX = 'bench_qe_'; // part 3: pending rows only
const BIG_PREFIX = 'bench_qb_'; // part 3: pending rows + finished rows
const COMMIT_TABLE = 'bench_q_commit_rate';

// Producers, plus one connection for the stats() poll and one spare.
const knex: Knex = knexFactory(benchKnexConfig(PRODUCERS + 2));
const tm = new TransactionManager(knex);
const scheduler = new PersistentTransactionalScheduler(tm, { tablePrefix: PREFIX });
scheduler.define('noop', async () => null); // workers run it; here it only makes the name schedulable
let producerRetries = 0;
tm.onRetry(() => producerRetries++);

// ---- what the server counts -------------------------------------------------

let ownXids = 0; // PostgreSQL: transaction ids serverCounters took itself

/**
 * Transactions committed and deadlocks, server-wide. MariaDB/MySQL: Com_commit,
 * explicit COMMITs only. PostgreSQL: transaction ids handed out (its commit
 * counter lags by seconds), i.e. transactions that wrote: claims that found
 * nothing are not counted; its deadlock counter lags too.
 */
async function serverCounters(): Promise<{ commits: number; deadlocks: number }> {
  if (database === 'mysql') {
    const [rows] = (await knex.raw("SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_commit', 'Innodb_deadlocks')")) as [{ Variable_name: string; Value: string }[]];
    const value = (name: string) => Number(rows.find((r) => r.Variable_name === name)?.Value ?? NaN);
    return { commits: value('Com_commit'), deadlocks: value('Innodb_deadlocks') };
  }
  const { rows } = (await knex.raw('SELECT txid_current() AS xid, deadlocks FROM pg_stat_database WHERE datname = current_database()')) as {
    rows: { xid: string; deadlocks: string }[];
  };
  ownXids++; // this query took one itself
  return { commits: Number(rows[0]!.xid) - ownXids, deadlocks: Number(rows[0]!.deadlocks) };
}

// ---- where the CPU went (Linux /proc; '-' elsewhere) ------------------------

/** Cores used over an interval: the machine, the database server, the workers, this process. */
interface CpuUse {
  machine: number;
  server: number;
  workers?: number; // when there are worker processes
  bench: number;
}

function cpuMeter(workerPids: () => number[]): () => CpuUse | undefined {
  try {
    const start = { machine: machineTicks(), server: ticksOf(/^(mariadbd|mysqld|postgres)$/), workers: workerPids().map(processTicks), bench: process.cpuUsage(), at: performance.now() };
    return () => {
      const seconds = (performance.now() - start.at) / 1000;
      const machine = machineTicks();
      const cores = (ticks: number) => ticks / TICKS_PER_SECOND / seconds;
      const workerTicks = workerPids().reduce((sum, pid, i) => sum + processTicks(pid) - start.workers[i]!, 0);
      const bench = process.cpuUsage(start.bench);
      return {
        machine: ((machine.busy - start.machine.busy) / (machine.total - start.machine.total)) * availableParallelism(),
        server: cores(ticksOf(/^(mariadbd|mysqld|postgres)$/) - start.server),
        ...(start.workers.length ? { workers: cores(workerTicks) } : {}),
        bench: (bench.user + bench.system) / 1e6 / seconds,
      };
    };
  } catch {
    return () => undefined; // no /proc
  }
}

const fmtCpu = (cpu: CpuUse | undefined) =>
  cpu
    ? `${cpu.machine.toFixed(2)} cores busy: server ${cpu.server.toFixed(2)}${cpu.workers === undefined ? '' : `, workers ${cpu.workers.toFixed(2)}`}, bench ${cpu.bench.toFixed(2)}`
    : 'cpu: -';

// ---- worker processes -------------------------------------------------------

const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const JOBS_MODULE = fileURLToPath(new URL('./queue-jobs.ts', import.meta.url));

interface WorkerProcess {
  child: ChildProcess;
  /** What it wrote to stderr: the library's warnings and errors, one line each. */
  stderr: string[];
  exited: Promise<number | null>;
}

/** Workers not yet stopped: killed if this process exits early (an error), so none outlives the bench. */
const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** Starts a worker with the real CLI; resolves once it printed its "started" line. */
function startWorker(): Promise<WorkerProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, 'worker', '--jobs', JOBS_MODULE, '--concurrency', String(WORKER_CONCURRENCY)], {
    env: { ...process.env, BENCH_QUEUE_PREFIX: PREFIX, BENCH_WORKER_POOL: String(WORKER_CONCURRENCY + 2) }, // jobs + claim loop + heartbeat/sweep
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code))).finally(() => running.delete(child));
  const worker: WorkerProcess = { child, stderr: [], exited };
  createInterface({ input: child.stderr! }).on('line', (line) => worker.stderr.push(line));
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (/^aftercommit: worker .* started/.test(line)) resolve(worker);
    });
    void worker.exited.then((code) => reject(new Error(`worker exited (${code}) before it started:\n${worker.stderr.join('\n')}`)));
  });
}

async function stopWorker(worker: WorkerProcess): Promise<void> {
  worker.child.kill('SIGTERM'); // graceful: the CLI stops claiming, lets running jobs end, closes its pool
  const code = await worker.exited;
  if (code !== 0) throw new Error(`worker ${worker.child.pid} exited with ${code}:\n${worker.stderr.join('\n')}`);
}

// ---- part 2: the commit rate ------------------------------------------------

/** One-row transactions per second from `connections` connections (see measureCommitRate), with the CPU it took. */
async function commitRate(connections: number): Promise<{ rate: number; cpu: CpuUse | undefined }> {
  const db = knexFactory(benchKnexConfig(connections));
  try {
    const { rate, meter } = await measureCommitRate(db, { table: COMMIT_TABLE, connections, ms: COMMIT_MS, startMeter: () => cpuMeter(() => []) });
    return { rate, cpu: meter };
  } finally {
    await db.destroy();
  }
}

// ---- part 1: end to end -----------------------------------------------------

interface Configuration {
  workers: number;
  connections: number;
  jobsPerSecond: number;
  seconds: number;
  schedulesPerSecond: number;
  firstDoneMs: number;
  commitsPerSecond: number;
  commitCpu: CpuUse | undefined;
  commitsPerJob: number;
  deadlocks: number;
  producerRetries: number;
  warnings: string[];
  cpu: CpuUse | undefined;
}

/** Schedules JOBS jobs from PRODUCERS loops, one per transaction; resolves to the time it took (ms). */
async function produce(started: number): Promise<number> {
  let issued = 0;
  await Promise.all(
    Array.from({ length: PRODUCERS }, async () => {
      while (issued < JOBS) {
        issued++;
        await tm.run(async () => scheduler.schedule('noop'), { name: 'schedule a noop job' });
      }
    }),
  );
  return performance.now() - started;
}

async function runConfiguration(workerCount: number): Promise<Configuration> {
  const connections = workerCount * WORKER_CONCURRENCY + PRODUCERS;
  const { rate: commitsPerSecond, cpu: commitCpu } = await commitRate(connections);

  await knex(`${PREFIX}jobs`).truncate();
  const workers = await Promise.all(Array.from({ length: workerCount }, startWorker));
  const before = await serverCounters();
  const retriesBefore = producerRetries;
  const meter = cpuMeter(() => workers.map((w) => w.child.pid!));

  const started = performance.now();
  let producing: number | Error | undefined; // ms it took, or what went wrong
  void produce(started).then(
    (ms) => (producing = ms),
    (err: Error) => (producing = err),
  );
  // Poll until every job is done: stats() is what an operator would look at.
  let firstDone = NaN;
  let lastDone = 0;
  let lastProgress = started;
  for (;;) {
    if (producing instanceof Error) throw producing;
    const stats = await scheduler.stats();
    const now = performance.now();
    if (stats.failed > 0) throw new Error(`${stats.failed} jobs failed:\n${workers.flatMap((w) => w.stderr).join('\n')}`);
    if (stats.done > 0 && Number.isNaN(firstDone)) firstDone = now - started;
    if (stats.done >= JOBS) break;
    if (stats.done > lastDone) [lastDone, lastProgress] = [stats.done, now];
    if (now - lastProgress > 30_000) throw new Error(`no job finished for 30 s (${JSON.stringify(stats)}):\n${workers.flatMap((w) => w.stderr).join('\n')}`);
    await sleep(50);
  }
  const elapsed = performance.now() - started;
  const cpu = meter();
  const after = await serverCounters();
  await Promise.all(workers.map(stopWorker));

  return {
    workers: workerCount,
    connections,
    jobsPerSecond: (JOBS / elapsed) * 1000,
    seconds: elapsed / 1000,
    schedulesPerSecond: (JOBS / (producing as number)) * 1000,
    firstDoneMs: firstDone,
    commitsPerSecond,
    commitCpu,
    // The stats() polls commit nothing (autocommit SELECTs), so this is the jobs' own cost.
    commitsPerJob: (after.commits - before.commits) / JOBS,
    deadlocks: after.deadlocks - before.deadlocks,
    producerRetries: producerRetries - retriesBefore,
    warnings: workers.flatMap((w) => w.stderr),
    cpu,
  };
}

// ---- part 3: the claim query with many finished rows -------------------------

/** The worker's claim query (JobStore.duePending), written out with the same builder calls. */
const claimQuery = (db: Knex | Knex.Transaction, table: string) =>
  db(table)
    .select('*')
    .where({ state: 'pending', queue: 'default' })
    .andWhere('run_at', '<=', Date.now())
    .orderBy([{ column: 'priority' }, { column: 'run_at' }, { column: 'seq' }])
    .limit(CLAIM_LIMIT)
    .forUpdate()
    .skipLocked();

/** Makes a jobs table with PENDING_ROWS due jobs (scheduled for real) and `finished` done rows. */
async function claimTable(tableScheduler: PersistentTransactionalScheduler, prefix: string, finished: number): Promise<string> {
  await dropTables(prefix);
  await tableScheduler.migrate();
  await tm.run(async () => {
    for (let i = 0; i < PENDING_ROWS; i++) tableScheduler.schedule('noop');
  });
  const table = `${prefix}jobs`;
  if (finished === 0) return table;
  await fillDoneRows(knex, table, finished);
  if (database === 'mysql') await knex.raw('ANALYZE TABLE ??', [table]); // fresh index statistics, as a long-lived table would have
  else await knex.raw('ANALYZE ??', [table]);
  return table;
}

interface ClaimTimes {
  transaction: number[];
  select: number[];
}

/** One claim transaction as a worker runs it, rolled back so the pending rows stay for the next one. */
async function timeClaim(table: string, times: ClaimTimes): Promise<void> {
  const started = performance.now();
  await tm.run(async (tx) => {
    const selectStarted = performance.now();
    const rows = await claimQuery(tx.db, table);
    times.select.push((performance.now() - selectStarted) * 1000);
    if (rows.length !== CLAIM_LIMIT) throw new Error(`the claim on ${table} found ${rows.length} rows, not ${CLAIM_LIMIT}`);
    tx.setRollbackOnly();
  });
  times.transaction.push((performance.now() - started) * 1000);
}

async function explain(table: string): Promise<string[]> {
  const { sql, bindings } = claimQuery(knex, table).toSQL();
  const result = await knex.raw(`EXPLAIN ${sql}`, bindings);
  const rows = (database === 'mysql' ? result[0] : result.rows) as Record<string, unknown>[];
  if (database !== 'mysql') return rows.map((r) => String(r['QUERY PLAN']));
  const columns = ['type', 'key', 'key_len', 'ref', 'rows', 'Extra'];
  return [columns.join(' | '), ...rows.map((r) => columns.map((c) => String(r[c])).join(' | '))];
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const started = performance.now();
  const value = await fn();
  return [value, performance.now() - started];
}

async function dropTables(prefix: string): Promise<void> {
  await knex.schema.dropTableIfExists(`${prefix}jobs`);
  await knex.schema.dropTableIfExists(`${prefix}schema`);
}

// ---- the run ----------------------------------------------------------------

const summary = (us: number[]) => ({ p50: percentiles(us, [50])[50]!, mean: us.reduce((a, b) => a + b, 0) / us.length });
const fixed = (n: number, digits = 0) => (Number.isFinite(n) ? n.toFixed(digits) : '-');

console.log(
  `queue throughput  (database: ${database}, ${JOBS} no-op jobs, ${PRODUCERS} producers, workers ×${WORKER_CONCURRENCY} concurrency; ` +
    `commit rate from N = workers × ${WORKER_CONCURRENCY} + ${PRODUCERS} connections, ${COMMIT_MS / 1000} s)`,
);
await dropTables(PREFIX);
await scheduler.migrate();

const configurations: Configuration[] = [];
for (const workerCount of WORKER_COUNTS) {
  const c = await runConfiguration(workerCount);
  configurations.push(c);
  console.log(
    `\n  ${c.workers} worker process(es): ${fixed(c.jobsPerSecond)} jobs/s (${JOBS} in ${c.seconds.toFixed(1)} s; scheduled at ${fixed(c.schedulesPerSecond)}/s; ` +
      `first done after ${fixed(c.firstDoneMs)} ms)`,
  );
  console.log(`    ${fmtCpu(c.cpu)}`);
  console.log(`    commit rate, N = ${c.connections}: ${fixed(c.commitsPerSecond)} commits/s   ratio jobs/s ÷ commits/s: ${(c.jobsPerSecond / c.commitsPerSecond).toFixed(3)}`);
  console.log(`      while measuring it: ${fmtCpu(c.commitCpu)}`);
  console.log(`    commits counted by the server per job: ${c.commitsPerJob.toFixed(2)}   deadlocks: ${c.deadlocks}   producer retries: ${c.producerRetries}`);
  console.log(`    worker warnings/errors: ${c.warnings.length}${c.warnings.length ? `, e.g.\n      ${[...new Set(c.warnings)].slice(0, 3).join('\n      ')}` : ''}`);
}
await dropTables(PREFIX);

console.log(`\nclaim query: ${PENDING_ROWS} pending rows, alone vs with ${FINISHED_ROWS} done rows`);
const emptyScheduler = new PersistentTransactionalScheduler(tm, { tablePrefix: EMPTY_PREFIX }).define('noop', async () => null);
const bigScheduler = new PersistentTransactionalScheduler(tm, { tablePrefix: BIG_PREFIX }).define('noop', async () => null);
const emptyTable = await claimTable(emptyScheduler, EMPTY_PREFIX, 0);
const [bigTable, fillMs] = await timed(() => claimTable(bigScheduler, BIG_PREFIX, FINISHED_ROWS));
console.log(`  filled ${bigTable} in ${(fillMs / 1000).toFixed(1)} s`);
console.log(`  EXPLAIN on ${bigTable}:`);
for (const line of await explain(bigTable)) console.log(`    ${line}`);

const claimTimes: Record<string, ClaimTimes> = { [emptyTable]: { transaction: [], select: [] }, [bigTable]: { transaction: [], select: [] } };
for (const table of [emptyTable, bigTable]) for (let i = 0; i < 100; i++) await timeClaim(table, { transaction: [], select: [] }); // warm-up
const rounds = 10;
for (let round = 0; round < rounds; round++) {
  // Alternating in rounds (order flipped each time) so drift affects both alike.
  for (const table of round % 2 === 0 ? [emptyTable, bigTable] : [bigTable, emptyTable]) {
    for (let i = 0; i < CLAIMS / rounds; i++) await timeClaim(table, claimTimes[table]!);
  }
}
const claim = { empty: summary(claimTimes[emptyTable]!.transaction), big: summary(claimTimes[bigTable]!.transaction) };
const select = { empty: summary(claimTimes[emptyTable]!.select), big: summary(claimTimes[bigTable]!.select) };
for (const [label, table, tx, sel] of [
  ['pending rows only', emptyTable, claim.empty, select.empty],
  [`+ ${FINISHED_ROWS} done rows`, bigTable, claim.big, select.big],
] as const) {
  console.log(
    `  ${label.padEnd(22)} claim transaction p50 ${fixed(tx.p50)} µs, mean ${fixed(tx.mean)} µs   (the SELECT alone: p50 ${fixed(sel.p50)} µs, mean ${fixed(sel.mean)} µs)  [${claimTimes[table]!.transaction.length} claims]`,
  );
}
console.log(`  ratio big / empty: claim p50 ${(claim.big.p50 / claim.empty.p50).toFixed(2)}, mean ${(claim.big.mean / claim.empty.mean).toFixed(2)}`);
// Not the claim, but what an operator's dashboard pays for the same rows: stats() counts every row.
const [, statsEmptyMs] = await timed(() => emptyScheduler.stats());
const [, statsBigMs] = await timed(() => bigScheduler.stats());
console.log(`  stats() for comparison: ${statsEmptyMs.toFixed(1)} ms on ${emptyTable}, ${statsBigMs.toFixed(1)} ms on ${bigTable}`);
await dropTables(EMPTY_PREFIX);
await dropTables(BIG_PREFIX);

// "used" = ratio × commits per job: the share of the measured commit rate the queue's transactions took.
console.log(`\nsummary  (database: ${database}; commit rate: BEGIN + UPDATE own row + COMMIT from N connections in this process)`);
console.log('  workers   N   jobs/s  commits/s  ratio  commits/job  used  deadlocks  cores busy');
for (const c of configurations) {
  const ratio = c.jobsPerSecond / c.commitsPerSecond;
  console.log(
    `  ${String(c.workers).padStart(7)} ${String(c.connections).padStart(3)} ${fixed(c.jobsPerSecond).padStart(8)} ${fixed(c.commitsPerSecond).padStart(10)} ` +
      `${ratio.toFixed(3).padStart(6)} ${c.commitsPerJob.toFixed(2).padStart(12)} ${(ratio * c.commitsPerJob).toFixed(2).padStart(5)} ` +
      `${String(c.deadlocks).padStart(10)} ${c.cpu ? c.cpu.machine.toFixed(2).padStart(11) : '-'.padStart(11)}`,
  );
}
console.log(
  `  claim (LIMIT ${CLAIM_LIMIT}, µs p50/mean): ${fixed(claim.empty.p50)}/${fixed(claim.empty.mean)} empty, ` +
    `${fixed(claim.big.p50)}/${fixed(claim.big.mean)} with ${FINISHED_ROWS} done rows: ×${(claim.big.p50 / claim.empty.p50).toFixed(2)} (p50)`,
);
await knex.destroy();
