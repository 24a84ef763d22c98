/**
 * On a three-node MariaDB Galera cluster (a private one, galera-cluster.ts),
 * every process talking to its own node, as an app spread over hosts would:
 * - migrate() run through all three nodes at once: each step applied once;
 * - the transfer crowd (60 opposite-order transfers on two hot rows) through
 *   three Koa processes, one per node, default options: every answer 2xx;
 * - 2,000 jobs run by worker processes on all three nodes: each exactly once,
 *   the claims that lost certification retried;
 * - a queue limited to one job at a time: never two at once, on any node;
 * - a job scheduled through node 1 and polled through node 2 at once: never
 *   unknown to its owner;
 * - a node killed with SIGKILL while requests and jobs run: the other two go
 *   on, its workers' jobs are taken over after their lease, it rejoins by IST
 *   and serves again, and every job's writes are there exactly once.
 * Counts (retries, recovered runs) are printed, not asserted: they depend on
 * timing. No timing is asserted.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import knexFactory, { type Knex } from 'knex';
import { PersistentTransactionalScheduler, TransactionManager } from '../../../lib/index.js';
import type { TestDatabase } from '../../support/databases.js';
import { recordingLogger, until } from '../../support/helpers.js';
import { request } from '../../support/http.js';
import { balancesAfterTransfers, oppositeTransfers, startServer, stopServer, tally, type ServerProcess, type Transfer } from '../../support/transfer-servers.js';
import { fixtureEnv, startWorker, type WorkerProcess } from '../../support/workers.js';
import { galeraAvailable, galeraCluster, type GaleraCluster } from './galera-cluster.js';

const BALANCE = 100_000;
const is2xx = (status: number) => status >= 200 && status < 300;
const unique = (base: string) => `${base}_${randomBytes(3).toString('hex')}`;
const skip = galeraAvailable() ? false : process.env.CI === 'true' ? false : 'galera-4 and rsync are not installed (apt-get install galera-4 rsync)';

describe('on a three-node Galera cluster', { skip }, () => {
  let cluster: GaleraCluster;
  /** One knex per node, for the test's own reads and writes. */
  let knexes: Knex[];
  const stops: (() => Promise<unknown>)[] = [];

  before(
    async () => {
      assert.ok(galeraAvailable(), 'galera-4 and rsync must be installed (.ci/run installs them)');
      cluster = await galeraCluster();
      knexes = cluster.nodes.map((node) => knexFactory({ client: 'mysql2', connection: node.url, pool: { min: 0, max: 10 }, log: { warn() {}, error() {}, debug() {}, deprecate() {} } }));
    },
    { timeout: 300_000 },
  );
  after(async () => {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    await Promise.all((knexes ?? []).map((k) => k.destroy()));
    await cluster?.destroy();
  });

  /** A database as the fixtures' workers see it: node `i`. */
  const nodeDatabase = (i: number) => ({ config: { client: 'mysql2', connection: cluster.nodes[i]!.url } }) as unknown as TestDatabase;
  /** What every node reads for `sql`, once it has applied every commit made before the read. */
  const everyNodeReads = (sql: string) => Promise.all(knexes.map(async (k) => ((await k.raw(`SET STATEMENT wsrep_sync_wait = 1 FOR ${sql}`)) as [unknown[]])[0]));

  it('migrate() through all three nodes at once succeeds on each, every step applied once', async () => {
    const prefix = `${unique('mig')}_`;
    const schedulers = knexes.map((k) => new PersistentTransactionalScheduler(new TransactionManager(k, { logger: recordingLogger() }), { tablePrefix: prefix }));
    const outcomes = await Promise.allSettled(schedulers.map((s) => s.migrate()));
    assert.deepEqual(
      outcomes.map((o) => (o.status === 'fulfilled' ? 'ok' : String((o.reason as Error).message))),
      ['ok', 'ok', 'ok'],
    );
    const versions = (await everyNodeReads(`SELECT version FROM ${prefix}schema ORDER BY version`)) as { version: number }[][];
    assert.ok(versions[0]!.length > 0);
    for (const seen of versions) assert.deepEqual(seen, versions[0], 'every node has each step once');
    stops.push(async () => {
      for (const table of ['jobs', 'schema', 'recurring', 'queues', 'workers']) await knexes[0]!.schema.dropTableIfExists(`${prefix}${table}`);
    });
  });

  /** Two accounts of BALANCE each, and a transfer server process per node on them. */
  const accountsAndServers = async () => {
    const table = unique('accounts');
    await knexes[0]!.schema.createTable(table, (t) => {
      t.integer('id').primary();
      t.integer('balance').notNullable();
    });
    stops.push(() => knexes[0]!.schema.dropTableIfExists(table));
    await knexes[0]!.table(table).insert([
      { id: 1, balance: BALANCE },
      { id: 2, balance: BALANCE },
    ]);
    const servers: ServerProcess[] = [];
    stops.push(() => Promise.all(servers.map(stopServer)));
    for (const node of cluster.nodes) servers.push(await startServer({ AC_TRANSFER_CLIENT: 'mysql2', AC_TRANSFER_CONNECTION: node.url, AC_TRANSFER_TABLE: table }));
    return { table, servers };
  };

  it('60 opposite-order transfers on two hot rows through three Koa processes, one per node, default options: all 2xx', async () => {
    const { table, servers } = await accountsAndServers();
    const transfers = oppositeTransfers(60);
    const responses = await Promise.all(
      transfers.map(({ from, to, amount }, i) =>
        request(`${servers[Math.floor(i / 2) % servers.length]!.url}/transfer/${from}/${to}/${amount}`, { method: 'POST', signal: AbortSignal.timeout(120_000) }),
      ),
    );
    const statuses = responses.map((r) => r.status);
    const stats = await Promise.all(servers.map(async (s) => (await request(`${s.url}/stats`)).body as { retries: number; escalatedRetries: number }));
    console.log(`# cluster crowd: ${tally(statuses)}, ${stats.reduce((n, s) => n + s.retries, 0)} retries (${stats.reduce((n, s) => n + s.escalatedRetries, 0)} escalated)`);
    assert.ok(statuses.every(is2xx), `answers: ${tally(statuses)}`);
    const expected = balancesAfterTransfers(transfers, BALANCE);
    for (const rows of (await everyNodeReads(`SELECT balance FROM ${table} ORDER BY id`)) as { balance: number }[][]) {
      assert.deepEqual(
        rows.map((r) => r.balance),
        expected,
        'every node has both balances exactly as all the transfers make them',
      );
    }
  });

  /** A scheduler on node `i` for `prefix`'s tables, and worker processes (the real CLI) per node. */
  const jobsOn = async (prefix: string, effects: string, options: { lease: number; queues?: Record<string, { concurrency: number }> }) => {
    const tm = new TransactionManager(knexes[0]!, { logger: recordingLogger() });
    const scheduler = new PersistentTransactionalScheduler(tm, { tablePrefix: prefix, lease: options.lease, queues: options.queues });
    for (const name of ['effect', 'work', 'hold']) scheduler.define(name, async () => undefined); // run by the worker processes
    await scheduler.migrate();
    await knexes[0]!.schema.createTable(effects, (t) => {
      t.increments('id');
      t.string('job_id', 32).notNullable();
      t.integer('n').notNullable();
      t.integer('pid').notNullable();
      t.integer('run').notNullable();
    });
    stops.push(async () => {
      await knexes[0]!.schema.dropTableIfExists(effects);
      for (const table of ['jobs', 'schema', 'recurring', 'queues', 'workers']) await knexes[0]!.schema.dropTableIfExists(`${prefix}${table}`);
    });
    const workers: WorkerProcess[] = [];
    stops.push(async () => {
      for (const w of workers) w.child.kill('SIGKILL');
    });
    const spawnOn = (i: number, args: string[], env: Record<string, string> = {}) => {
      const base = fixtureEnv(nodeDatabase(i), { prefix, effects, lease: options.lease, queues: options.queues, poll: { minPollInterval: 20, maxPollInterval: 200 } });
      const worker = startWorker({ ...base, ...env }, args);
      workers.push(worker);
      return worker;
    };
    return { tm, scheduler, workers, spawnOn };
  };

  /** Schedules `count` jobs `name` through `tm`, 100 to a transaction; returns their ids in order of their argument. */
  const scheduleMany = async (tm: TransactionManager, scheduler: Pick<PersistentTransactionalScheduler, 'schedule'>, name: string, count: number, first = 0) => {
    const ids: string[] = [];
    for (let start = 0; start < count; start += 100) {
      ids.push(...(await tm.run(async () => Array.from({ length: Math.min(100, count - start) }, (_, j) => scheduler.schedule(name, first + start + j)))));
    }
    return ids;
  };

  /** Effect rows per job id, read through node 0 once it has applied every commit. */
  const rowsPerJob = async (effects: string) => {
    const [rows] = (await knexes[0]!.raw(`SET STATEMENT wsrep_sync_wait = 1 FOR SELECT job_id, COUNT(*) AS n, MAX(run) AS run FROM ${effects} GROUP BY job_id`)) as [
      { job_id: string; n: number; run: number }[],
    ];
    return new Map(rows.map((r) => [r.job_id, { rows: Number(r.n), run: Number(r.run) }]));
  };

  const claimRetries = (workers: WorkerProcess[]) => workers.flatMap((w) => w.lines).filter((l) => String(l.msg).startsWith('retrying claim jobs'));

  it('2,000 jobs, worker processes on all three nodes: each done exactly once; claims that lost certification were retried', async () => {
    const prefix = `${unique('many')}_`;
    const effects = unique('effects');
    const { tm, scheduler, workers, spawnOn } = await jobsOn(prefix, effects, { lease: 30_000 });
    for (const i of [0, 1, 2]) spawnOn(i, ['--concurrency', '8']);
    const ids = await scheduleMany(tm, scheduler, 'effect', 2000);
    await until(async () => {
      const { done, failed } = await scheduler.stats();
      return done + failed === ids.length;
    }, 240_000, '2,000 jobs to finish');
    const { oldestDueMs: _, ...counts } = await scheduler.stats();
    assert.deepEqual(counts, { waiting: 0, pending: 0, running: 0, done: 2000, failed: 0 });
    const perJob = await rowsPerJob(effects);
    assert.equal(perJob.size, 2000, 'every job wrote its row');
    assert.deepEqual(
      ids.filter((id) => perJob.get(id)?.rows !== 1),
      [],
      'no job wrote its row twice',
    );
    const retries = claimRetries(workers);
    const ranOn = new Set((await knexes[0]!.table(effects).distinct('pid')).map((r: { pid: number }) => r.pid));
    console.log(`# cluster, 2,000 jobs: ${retries.length} claim retries (certification), jobs ran in ${ranOn.size} worker processes`);
    assert.equal(ranOn.size, 3, 'the workers of every node ran jobs');
    for (const line of retries) assert.match(String(line.msg), /deadlock|conflict|certification/i, 'a claim was retried for a conflict, nothing else');
  });

  it('a queue limited to one job at a time, workers on all three nodes: never two of its jobs at once', async () => {
    const prefix = `${unique('one')}_`;
    const effects = unique('effects');
    const queues = { single: { concurrency: 1 } };
    const { tm, scheduler, workers, spawnOn } = await jobsOn(prefix, effects, { lease: 30_000, queues });
    for (const i of [0, 1, 2]) spawnOn(i, ['--concurrency', '4', '--queues', 'single'], { AC_FIXTURE_HOLD: '30' });
    const ids = await scheduleMany(tm, scheduler.with({ queue: 'single' }), 'hold', 45);
    await until(async () => (await scheduler.stats()).done === ids.length, 120_000, '45 jobs to finish');
    // Each job's first run logs when it starts holding and when it returns, inside its transaction.
    const at = (msg: string) => new Map(workers.flatMap((w) => w.lines).filter((l) => l.msg === msg).map((l) => [l.id as string, l.at as number]));
    const started = at('hold started');
    const returned = at('hold returns');
    const spans = ids.map((id) => [started.get(id)!, returned.get(id)!] as const).sort((a, b) => a[0] - b[0]);
    assert.ok(spans.every(([from, to]) => from !== undefined && to !== undefined), 'every job logged its run');
    for (let i = 1; i < spans.length; i++) assert.ok(spans[i]![0] >= spans[i - 1]![1], `two jobs of the queue ran at once: ${JSON.stringify(spans.slice(i - 1, i + 1))}`);
  });

  it('a job scheduled through node 1 and polled through node 2 at once (in a transaction, one connection) is never unknown to its owner, and unknown to others', async () => {
    const prefix = `${unique('poll')}_`;
    // Node 2's process has one connection, and polls inside a transaction, as a request does: a poll must not need a second one.
    const single = knexFactory({ client: 'mysql2', connection: cluster.nodes[1]!.url, pool: { min: 0, max: 1 }, acquireConnectionTimeout: 5000 });
    stops.push(() => single.destroy());
    const [near, far] = [knexes[0]!, single].map((knex) => {
      const scheduler = new PersistentTransactionalScheduler(new TransactionManager(knex, { logger: recordingLogger() }), { tablePrefix: prefix });
      scheduler.define('effect', async () => undefined);
      return scheduler;
    });
    await near!.migrate();
    stops.push(async () => {
      for (const table of ['jobs', 'schema', 'recurring', 'queues', 'workers']) await knexes[0]!.schema.dropTableIfExists(`${prefix}${table}`);
    });
    // Writes through node 1 meanwhile, so that node 2 applies what node 1 commits a little later.
    const filler = unique('filler');
    await knexes[0]!.schema.createTable(filler, (t) => {
      t.increments('id');
      t.string('pad', 1000);
    });
    stops.push(() => knexes[0]!.schema.dropTableIfExists(filler));
    let writing = true;
    const load = Promise.all(
      [1, 2, 3].map(async () => {
        while (writing) await knexes[0]!.table(filler).insert(Array.from({ length: 50 }, () => ({ pad: 'x'.repeat(1000) })));
      }),
    );
    const tm = near!.manager;
    const answers: string[] = [];
    const others: string[] = [];
    try {
      for (let i = 0; i < 200; i++) {
        const id = await tm.run(async () => near!.schedule('effect', i), { metadata: { user: 'alice' } });
        // As a poll route does (inside the request's transaction), and outside any transaction.
        const poll = () => far!.getResult(id, { visibleTo: 'alice' });
        answers.push((i % 2 === 0 ? await far!.manager.run(poll) : await poll()).state);
        if (i % 20 === 0) others.push((await far!.getResult(id, { visibleTo: 'mallory' })).state);
      }
    } finally {
      writing = false;
      await load;
    }
    assert.deepEqual(answers.filter((state) => state !== 'pending'), [], 'every poll by its owner found the job pending');
    assert.deepEqual(new Set(others), new Set(['unknown']), 'another user never sees it');
  });

  it('a node killed with SIGKILL mid-run: the others go on, its jobs are taken over, it rejoins by IST and serves; every job once', async () => {
    const prefix = `${unique('kill')}_`;
    const effects = unique('effects');
    const { tm, scheduler, workers, spawnOn } = await jobsOn(prefix, effects, { lease: 4000 });
    for (const i of [0, 1, 2]) spawnOn(i, ['--concurrency', '4'], { AC_FIXTURE_WORK: '150' });
    const { table: accounts, servers } = await accountsAndServers();
    const ids = await scheduleMany(tm, scheduler, 'work', 600);

    // Transfers through nodes 1 and 2 all along, four at a time.
    const sent: { transfer: Transfer; status: number }[] = [];
    let sending = true;
    const transfer = async (server: ServerProcess, t: Transfer) => {
      const response = await request(`${server.url}/transfer/${t.from}/${t.to}/${t.amount}`, { method: 'POST', signal: AbortSignal.timeout(120_000) });
      sent.push({ transfer: t, status: response.status });
      return response.status;
    };
    const senders = Promise.all(
      [0, 1, 2, 3].map(async (k) => {
        for (let i = k; sending; i += 4) await transfer(servers[k % 2]!, oppositeTransfers(i + 1)[i]!);
      }),
    );
    const doneCount = async () => (await scheduler.stats()).done;
    const killedPid = workers[2]!.pid;
    try {
      // Killed while its worker runs jobs (as node 1 sees it).
      const started = workers[2]!.lines.map((l) => /^aftercommit: worker (\S+) started/.exec(String(l.msg))).find(Boolean);
      const runningOnNode3 = async () => started && (await knexes[0]!.table(`${prefix}jobs`).where({ state: 'running', locked_by: started[1] }).count({ n: '*' }).first())!.n;
      await until(async () => (await doneCount()) >= 100 && Number(await runningOnNode3()) >= 2, 120_000, 'node 3’s worker to be running jobs');
      await cluster.kill(2);
      const doneAtKill = await doneCount();
      await until(async () => (await doneCount()) >= doneAtKill + 100, 120_000, 'jobs to go on through nodes 1 and 2');
      const rejoined = await cluster.restart(2);
      assert.equal(rejoined, 'IST', 'node 3 rejoined by incremental state transfer');
      await until(async () => (await doneCount()) === ids.length, 240_000, 'every job to finish');
    } finally {
      sending = false;
      await senders;
    }

    // Node 3 serves again: requests through it, and jobs run by its worker alone.
    const lateStatuses: number[] = [];
    for (let i = 0; i < 10; i++) lateStatuses.push(await transfer(servers[2]!, { from: 1, to: 2, amount: 1 }));
    for (const w of workers.slice(0, 2)) w.child.kill('SIGTERM');
    await Promise.all(workers.slice(0, 2).map((w) => w.exited));
    const late = await scheduleMany(tm, scheduler, 'work', 20, 600);
    await until(async () => (await doneCount()) === ids.length + late.length, 120_000, 'node 3’s worker to run the late jobs').catch((err: Error) => {
      const { exitCode, signalCode } = workers[2]!.child;
      throw new Error(`${err.message}; its process: exit ${exitCode ?? signalCode}; its last lines: ${JSON.stringify(workers[2]!.lines.slice(-4))}`);
    });

    const statuses = sent.map((s) => s.status);
    const perJob = await rowsPerJob(effects);
    const recovered = [...perJob.values()].filter((j) => j.run > 1).length;
    console.log(`# cluster, node killed: transfers ${tally(statuses)}, ${recovered} job(s) taken over after the lease, rejoined by ${'IST'}`);
    assert.ok(
      statuses.every((status) => is2xx(status) || status === 503),
      `transfers answer 2xx, or 503 when they failed: ${tally(statuses)}`,
    );
    assert.ok(lateStatuses.slice(-5).every(is2xx), `transfers through the node that rejoined succeed: ${lateStatuses.join(', ')}`);
    const expected = balancesAfterTransfers(
      sent.filter((s) => is2xx(s.status)).map((s) => s.transfer),
      BALANCE,
    );
    for (const rows of (await everyNodeReads(`SELECT balance FROM ${accounts} ORDER BY id`)) as { balance: number }[][]) {
      assert.deepEqual(
        rows.map((r) => r.balance),
        expected,
        'every node has exactly the transfers that answered 2xx: a 503 wrote nothing',
      );
    }
    const { oldestDueMs: _, ...counts } = await scheduler.stats();
    assert.deepEqual(counts, { waiting: 0, pending: 0, running: 0, done: 620, failed: 0 });
    assert.deepEqual(
      [...ids, ...late].filter((id) => perJob.get(id)?.rows !== 1),
      [],
      'every job wrote its row exactly once',
    );
    assert.ok(recovered > 0, 'the killed node’s worker had jobs in flight, which others took over after their lease');
    const lateRunners = (await knexes[0]!.table(effects).whereIn('job_id', late).distinct('pid')) as { pid: number }[];
    assert.deepEqual(
      lateRunners.map((r) => r.pid),
      [killedPid],
      'the late jobs ran on node 3’s worker',
    );
  });
});
