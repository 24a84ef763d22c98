/**
 * A crowd on two hot rows, through real Koa server processes at the library's
 * defaults (test/fixtures/transfer-server.ts: knex's default pool, default
 * TransactionManager and aftercommit options):
 *
 * 1. Cells (database × N × processes), each on freshly started servers: N
 *    transfers sent at once between rows 1 and 2, half in each lock order, then
 *    the same N one at a time on the same servers. Goal per cell: no answer but 2xx, the money conserved and equal to
 *    what the 2xx answers moved, and wall ≤ 2 × sequential (PostgreSQL:
 *    + deadlock_timeout, which every wave of deadlocks there waits out first).
 * 2. Starvation (per database, one server process): the latency of requests on
 *    unrelated rows for 10 s with 20 loops hammering the hot rows, against 10 s
 *    without them, so escalation (attempts that run alone) is seen to leave the
 *    rest of the traffic going.
 *
 *   npx tsup && node --import tsx bench/contention.ts
 *   BENCH_DB=mysql|postgres|both (both)  BENCH_N=30,60,100  BENCH_PROCESSES=1,2
 *   BENCH_ESCALATE=0 (servers with escalate: false, for the "before" table)
 *   BENCH_STARVE_MS=10000 (0 skips the starvation part)  BENCH_HOT_LOOPS=20  BENCH_TOUCH_LOOPS=4
 *
 * HTTP is Node's global fetch with undici's default agent (keep-alive, no limit on
 * connections per origin): every request of a crowd is in flight at once and
 * connection setup is not what is measured. Everything talks to 127.0.0.1 only.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import knexFactory, { type Knex } from 'knex';
import { benchDatabaseUrl, percentiles } from './support.js';

const TABLE = 'bench_contention_accounts';
const BALANCE = 100_000;
/** Rows of the unrelated stream: one per touch loop, never touched by transfers. */
const TOUCH_BASE = 1000;
const REQUEST_TIMEOUT_MS = 120_000;
/** The starvation part's steady state: requests sent this long after the hot stream started. */
const STEADY_AFTER_MS = 2000;

const list = (value: string) => value.split(',').map((s) => s.trim()).filter(Boolean);
const databases = (process.env.BENCH_DB ?? 'both') === 'both' ? ['mysql', 'postgres'] : list(process.env.BENCH_DB!);
const sizes = list(process.env.BENCH_N ?? '30,60,100').map(Number);
const processCounts = list(process.env.BENCH_PROCESSES ?? '1,2').map(Number);
const escalate = process.env.BENCH_ESCALATE !== '0';
const starveMs = Number(process.env.BENCH_STARVE_MS ?? 10_000);
const hotLoops = Number(process.env.BENCH_HOT_LOOPS ?? 20);
const touchLoops = Number(process.env.BENCH_TOUCH_LOOPS ?? 4);

for (const db of databases) if (db !== 'mysql' && db !== 'postgres') throw new Error(`BENCH_DB must be mysql, postgres or both, got ${db}`);
if (!existsSync('dist/index.js')) throw new Error('dist/ is missing: run `npx tsup` first (benchmarks run the built package)');

// ---- server processes --------------------------------------------------------

const children = new Set<ChildProcess>();
/** Last resort, should the script die between start and stop: no server outlives it. */
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));

interface Server {
  child: ChildProcess;
  url: string;
}

async function startServer(db: 'mysql' | 'postgres'): Promise<Server> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/transfer-server.ts'], {
    env: {
      ...process.env,
      AC_TRANSFER_CLIENT: db === 'mysql' ? 'mysql2' : 'pg',
      AC_TRANSFER_CONNECTION: benchDatabaseUrl(db),
      AC_TRANSFER_TABLE: TABLE,
      AC_TRANSFER_BUILD: 'dist',
      ...(escalate ? {} : { AC_TRANSFER_ESCALATE: '0' }),
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  const port = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const match = /^listening (\d+)$/.exec(line);
      if (match) resolve(match[1]!);
    });
    child.once('exit', (code) => reject(new Error(`transfer server exited before listening (${code})`)));
    setTimeout(() => reject(new Error('transfer server did not start within 30 s')), 30_000).unref();
  });
  return { child, url: `http://127.0.0.1:${port}` };
}

async function stopServers(servers: Server[]): Promise<void> {
  await Promise.all(
    servers.map(({ child }) => {
      if (child.exitCode !== null || child.signalCode !== null) return undefined;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM'); // the server destroys its knex and exits by itself within 3 s
      return exited;
    }),
  );
}

// ---- HTTP --------------------------------------------------------------------

interface Answer {
  /** The HTTP status, or `timeout`/`error` when there was none. */
  status: string;
  ms: number;
  /** When the request was sent (performance.now()). */
  sent: number;
}

async function post(url: string): Promise<Answer> {
  const started = performance.now();
  try {
    const response = await fetch(url, { method: 'POST', signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    await response.arrayBuffer();
    return { status: String(response.status), ms: performance.now() - started, sent: started };
  } catch (err) {
    return { status: (err as Error).name === 'TimeoutError' ? 'timeout' : 'error', ms: performance.now() - started, sent: started };
  }
}

const is2xx = (answer: Answer) => /^2\d\d$/.test(answer.status);

/** e.g. `200:41 503:19` */
function tally(answers: Answer[]): string {
  const counts = new Map<string, number>();
  for (const { status } of answers) counts.set(status, (counts.get(status) ?? 0) + 1);
  return [...counts].sort(([a], [b]) => a.localeCompare(b)).map(([status, n]) => `${status}:${n}`).join(' ');
}

/** GET /stats of the fixture, the fields read here. */
interface Stats {
  attempts: { transfer: number; touch: number };
  retries: number;
  escalatedRetries: number;
  contention: { escalations: number; gateWaits: number; longestGateWaitMs: number; preempted?: number } | null;
}

/** The counters of all servers, summed (longestGateWaitMs: the largest). */
async function readStats(servers: Server[]) {
  const all = await Promise.all(servers.map(async (s) => (await (await fetch(`${s.url}/stats`)).json()) as Stats));
  const total = (pick: (s: Stats) => number | undefined) => all.reduce((sum, s) => sum + (pick(s) ?? 0), 0);
  return {
    transferAttempts: total((s) => s.attempts.transfer),
    retries: total((s) => s.retries),
    escalatedRetries: total((s) => s.escalatedRetries),
    escalations: total((s) => s.contention?.escalations),
    gateWaits: total((s) => s.contention?.gateWaits),
    preempted: total((s) => s.contention?.preempted),
    longestGateWaitMs: Math.max(0, ...all.map((s) => s.contention?.longestGateWaitMs ?? 0)),
    /** False while lib/ has no `tm.contention` (before the escalation change). */
    contention: all.every((s) => s.contention !== null),
  };
}
type StatsReading = Awaited<ReturnType<typeof readStats>>;

function statsDelta(before: StatsReading, after: StatsReading) {
  return {
    transferAttempts: after.transferAttempts - before.transferAttempts,
    retries: after.retries - before.retries,
    escalatedRetries: after.escalatedRetries - before.escalatedRetries,
    escalations: after.escalations - before.escalations,
    gateWaits: after.gateWaits - before.gateWaits,
    preempted: after.preempted - before.preempted,
    /** Not a delta: the longest wait since the servers started. */
    longestGateWaitMs: after.longestGateWaitMs,
    contention: after.contention,
  };
}

// ---- the database ------------------------------------------------------------

async function prepare(admin: Knex): Promise<void> {
  await admin.schema.dropTableIfExists(TABLE);
  await admin.schema.createTable(TABLE, (t) => {
    t.integer('id').primary();
    t.integer('balance').notNullable();
  });
  await admin(TABLE).insert([
    { id: 1, balance: BALANCE },
    { id: 2, balance: BALANCE },
    ...Array.from({ length: Math.max(touchLoops, 1) }, (_, k) => ({ id: TOUCH_BASE + k, balance: 0 })),
  ]);
}

/** Sets both hot rows back; retried, since requests a timed-out client left behind may still hold them (escalate: false). */
async function resetHotRows(admin: Knex): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await admin(TABLE).whereIn('id', [1, 2]).update({ balance: BALANCE });
      return;
    } catch (err) {
      const { code, errno } = err as { code?: string; errno?: number };
      if (attempt === 10 || !(code === '40P01' || errno === 1213)) throw err;
    }
  }
}

async function hotBalances(admin: Knex): Promise<[number, number]> {
  const rows = (await admin(TABLE).whereIn('id', [1, 2]).orderBy('id')) as { balance: number }[];
  return [rows[0]!.balance, rows[1]!.balance];
}

interface Transfer {
  from: number;
  to: number;
  amount: number;
}

/** Money is conserved, and each row moved by exactly what the transfers answered 2xx moved. */
async function moneyChecks(admin: Knex, done: Transfer[]): Promise<{ ok: boolean; note: string }> {
  const [one, two] = await hotBalances(admin);
  const moved = done.reduce((sum, t) => sum + (t.from === 1 ? t.amount : -t.amount), 0);
  if (one + two !== 2 * BALANCE) return { ok: false, note: `money not conserved: ${one} + ${two}` };
  if (one !== BALANCE - moved) return { ok: false, note: `balances ${one}/${two}, the 2xx answers moved ${moved}` };
  return { ok: true, note: '' };
}

/** PostgreSQL's deadlock_timeout, as SHOW prints it and in ms. */
async function deadlockTimeout(admin: Knex): Promise<{ shown: string; ms: number }> {
  const shown = (await admin.raw('SHOW deadlock_timeout')).rows[0].deadlock_timeout as string;
  const { setting, unit } = (await admin.raw("SELECT setting, unit FROM pg_settings WHERE name = 'deadlock_timeout'")).rows[0];
  if (unit !== 'ms') throw new Error(`deadlock_timeout in unexpected unit ${unit}`);
  return { shown, ms: Number(setting) };
}

// ---- 1. the cells ------------------------------------------------------------

/**
 * Transfer i moves i + 1 (amounts distinct), even ones 1→2 and odd ones 2→1.
 * Consecutive pairs go to alternate servers, so every process gets both lock
 * orders (plain i % processes would give each of two processes one direction,
 * and no process would collide with itself).
 */
function plan(n: number, servers: Server[]): { transfer: Transfer; url: string }[] {
  return Array.from({ length: n }, (_, i) => {
    const transfer = { from: i % 2 === 0 ? 1 : 2, to: i % 2 === 0 ? 2 : 1, amount: i + 1 };
    const server = servers[Math.floor(i / 2) % servers.length]!;
    return { transfer, url: `${server.url}/transfer/${transfer.from}/${transfer.to}/${transfer.amount}` };
  });
}

/** Off the hot rows, so nothing collides: JIT, each server's pool connections, the client's sockets. */
async function warmUp(servers: Server[]): Promise<void> {
  const rows = Math.max(touchLoops, 1);
  for (let round = 0; round < 3; round++) {
    await Promise.all(servers.flatMap((s) => Array.from({ length: 20 }, (_, k) => post(`${s.url}/touch/${TOUCH_BASE + (k % rows)}`))));
  }
}

const HEADER =
  '  db        N  proc  answers          attempts  escal.  gate waits  preempt.  wall ms   p50 ms   p99 ms   max ms   seq ms  wall/seq   goal ms  verdict';

async function cell(db: string, admin: Knex, servers: Server[], n: number, slackMs: number): Promise<boolean> {
  const requests = plan(n, servers);

  await resetHotRows(admin);
  const before = await readStats(servers);
  const started = performance.now();
  const answers = await Promise.all(requests.map(({ url }) => post(url)));
  const wall = performance.now() - started;
  const stats = statsDelta(before, await readStats(servers));
  const money = await moneyChecks(admin, requests.filter((_, i) => is2xx(answers[i]!)).map((r) => r.transfer));

  // The same transfers one at a time: what the crowd should not take much longer than.
  await resetHotRows(admin);
  const seqStarted = performance.now();
  const seqAnswers: Answer[] = [];
  for (const { url } of requests) seqAnswers.push(await post(url));
  const seqWall = performance.now() - seqStarted;
  const seqMoney = await moneyChecks(admin, requests.filter((_, i) => is2xx(seqAnswers[i]!)).map((r) => r.transfer));

  const goal = 2 * seqWall + slackMs;
  const failures = [
    ...(answers.every(is2xx) ? [] : ['non-2xx answers']),
    ...(money.ok ? [] : [money.note]),
    ...(wall <= goal ? [] : ['wall > goal']),
    ...(seqAnswers.every(is2xx) && seqMoney.ok ? [] : [`sequential run broken: ${tally(seqAnswers)} ${seqMoney.note}`]),
  ];
  const p = percentiles(
    answers.map((a) => a.ms),
    [50, 99, 100],
  );
  const escalations = stats.contention ? `${stats.escalations}` : `${stats.escalatedRetries}*`;
  const gateWaits = stats.contention ? `${stats.gateWaits}` : '-';
  const preempted = stats.contention ? `${stats.preempted}` : '-';
  console.log(
    `  ${db.padEnd(8)} ${String(n).padStart(3)}  ${String(servers.length).padStart(4)}  ${tally(answers).padEnd(15)}  ${String(stats.transferAttempts).padStart(8)}  ${escalations.padStart(6)}  ${gateWaits.padStart(10)}  ${preempted.padStart(8)}` +
      `  ${wall.toFixed(0).padStart(7)}  ${p[50]!.toFixed(1).padStart(7)}  ${p[99]!.toFixed(1).padStart(7)}  ${p[100]!.toFixed(1).padStart(7)}` +
      `  ${seqWall.toFixed(0).padStart(7)}  ${(wall / seqWall).toFixed(2).padStart(8)}  ${goal.toFixed(0).padStart(8)}  ${failures.length === 0 ? 'PASS' : `FAIL (${failures.join('; ')})`}`,
  );
  return failures.length === 0;
}

// ---- 2. starvation -----------------------------------------------------------

/** Runs `loops` loops of `op(loop)` until `ms` have passed; each loop ends after its request in flight. */
async function loopFor(ms: number, loops: number, op: (loop: number) => Promise<Answer>): Promise<Answer[]> {
  const deadline = performance.now() + ms;
  const answers: Answer[] = [];
  await Promise.all(
    Array.from({ length: loops }, async (_, loop) => {
      while (performance.now() < deadline) answers.push(await op(loop));
    }),
  );
  return answers;
}

const summary = (answers: Answer[]) => {
  const p = percentiles(
    answers.map((a) => a.ms),
    [50, 99, 100],
  );
  return `${String(answers.length).padStart(6)} requests  p50 ${p[50]!.toFixed(1).padStart(6)}  p99 ${p[99]!.toFixed(1).padStart(7)}  max ${p[100]!.toFixed(1).padStart(7)} ms  (${tally(answers)})`;
};

async function starvation(db: 'mysql' | 'postgres', admin: Knex): Promise<void> {
  const server = await startServer(db);
  try {
    const touch = (loop: number) => post(`${server.url}/touch/${TOUCH_BASE + loop}`);
    await warmUp([server]);

    const alone = await loopFor(starveMs, touchLoops, touch);

    await resetHotRows(admin);
    const before = await readStats([server]);
    // Hot loop k sends k + 1 each time, even loops 1→2, odd ones 2→1; what the 2xx moved is summed for the money check.
    const done: Transfer[] = [];
    const hotTransfer = async (loop: number) => {
      const transfer = { from: loop % 2 === 0 ? 1 : 2, to: loop % 2 === 0 ? 2 : 1, amount: loop + 1 };
      const answer = await post(`${server.url}/transfer/${transfer.from}/${transfer.to}/${transfer.amount}`);
      if (is2xx(answer)) done.push(transfer);
      return answer;
    };
    const started = performance.now();
    const [hot, beside] = await Promise.all([loopFor(starveMs, hotLoops, hotTransfer), loopFor(starveMs, touchLoops, touch)]);
    const took = performance.now() - started;
    const stats = statsDelta(before, await readStats([server]));
    const money = await moneyChecks(admin, done);

    const pAlone = percentiles(alone.map((a) => a.ms), [99])[99]!;
    const pBeside = percentiles(beside.map((a) => a.ms), [99])[99]!;
    console.log(`\n  starvation [${db}]: ${touchLoops} loops on unrelated rows, ${hotLoops} loops of transfers on the hot rows, ${starveMs / 1000} s each phase, one server process`);
    console.log(`    unrelated, alone      ${summary(alone)}`);
    console.log(`    unrelated, beside hot ${summary(beside)}   p99 ×${(pBeside / pAlone).toFixed(1)}`);
    // The hot stream's first collision is waited out (PostgreSQL: deadlock_timeout); what follows is the steady state.
    const steady = beside.filter((a) => a.sent >= started + STEADY_AFTER_MS);
    console.log(`      sent after ${STEADY_AFTER_MS / 1000} s  ${summary(steady)}`);
    console.log(`    hot transfers         ${summary(hot)}   (the hot phase took ${(took / 1000).toFixed(1)} s)`);
    console.log(
      `    hot: ${stats.transferAttempts} attempts, ${stats.retries} retries, ${stats.escalatedRetries} escalated` +
        (stats.contention ? `, ${stats.gateWaits} gate waits (longest ${stats.longestGateWaitMs.toFixed(0)} ms), ${stats.preempted} lock waits preempted` : '') +
        `; money ${money.ok ? 'conserved and matches the 2xx answers' : `WRONG: ${money.note}`}`,
    );
  } finally {
    await stopServers([server]);
  }
}

// ---- the run -----------------------------------------------------------------

let failed = 0;
try {
  console.log(`contention bench: escalation ${escalate ? 'at its default' : 'off (escalate: false)'}; N = ${sizes.join(', ')}; processes = ${processCounts.join(', ')}`);
  console.log('  attempts: handler runs; escal., gate waits, preempt.: from tm.contention (escalated attempts, waits for a turn, PostgreSQL lock waits cancelled)');
  console.log('  with escalation off tm.contention is undefined: escal. then counts onRetry events with escalated: true, marked "*"');
  for (const db of databases as ('mysql' | 'postgres')[]) {
    const admin = knexFactory({ client: db === 'mysql' ? 'mysql2' : 'pg', connection: benchDatabaseUrl(db), pool: { min: 0, max: 2 } });
    try {
      await prepare(admin);
      let slackMs = 0;
      if (db === 'postgres') {
        const timeout = await deadlockTimeout(admin);
        slackMs = timeout.ms;
        console.log(`\n${db}: deadlock_timeout = ${timeout.shown}; goal: wall ≤ 2 × sequential + ${timeout.ms} ms`);
      } else {
        console.log(`\n${db}: goal: wall ≤ 2 × sequential`);
      }
      console.log(HEADER);
      for (const processes of processCounts) {
        for (const n of sizes) {
          // Fresh servers for each cell: a manager carries what it learnt from the last crowd (its
          // concurrency limit), so reused servers would measure the previous cell as much as this one.
          const servers: Server[] = [];
          try {
            for (let i = 0; i < processes; i++) servers.push(await startServer(db));
            await warmUp(servers);
            if (!(await cell(db, admin, servers, n, slackMs))) failed++;
          } finally {
            await stopServers(servers);
          }
        }
      }
      if (starveMs > 0) await starvation(db, admin);
      await admin.schema.dropTableIfExists(TABLE);
    } finally {
      await admin.destroy();
    }
  }
  console.log(`\n${failed === 0 ? 'every cell PASSES' : `${failed} cell(s) FAIL`} the goal`);
  process.exitCode = failed === 0 ? 0 : 1;
} finally {
  for (const child of children) child.kill('SIGKILL');
}
