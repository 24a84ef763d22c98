/** Worker processes for the multi-process suites: the real CLI, in child processes. */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { createInterface } from 'node:readline';
import { after, before } from 'node:test';
import type { Knex } from 'knex';
import { PersistentTransactionalScheduler, TransactionManager } from '../../lib/index.js';
import type { TestDatabase } from './databases.js';
import { recordingLogger } from './helpers.js';

export interface WorkerProcess {
  child: ChildProcess;
  pid: number;
  /** Every JSON line it printed, parsed. */
  lines: Record<string, unknown>[];
  exited: Promise<number | null>;
}

export function fixtureEnv(
  database: TestDatabase,
  options: { prefix: string; effects: string; lease: number; hold?: number; maxRuns?: number; counter?: string },
) {
  const connection = database.config.connection as string | { filename: string };
  return {
    AC_FIXTURE_CLIENT: database.config.client as string,
    AC_FIXTURE_CONNECTION: typeof connection === 'string' ? connection : connection.filename,
    AC_FIXTURE_PREFIX: options.prefix,
    AC_FIXTURE_EFFECTS: options.effects,
    AC_FIXTURE_LEASE: String(options.lease),
    AC_FIXTURE_HOLD: String(options.hold ?? 0),
    // maxRuns is read by the worker that claims a job, not stored with it: each process needs it.
    ...(options.maxRuns === undefined ? {} : { AC_FIXTURE_MAX_RUNS: String(options.maxRuns) }),
    ...(options.counter === undefined ? {} : { AC_FIXTURE_COUNTER: options.counter }),
  };
}

export function startWorker(env: Record<string, string>, args: string[] = []): WorkerProcess {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', 'lib/cli.ts', 'worker', '--jobs', 'test/fixtures/worker-jobs.ts', ...args],
    { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const lines: Record<string, unknown>[] = [];
  createInterface({ input: child.stdout! }).on('line', (text) => {
    try {
      lines.push(JSON.parse(text) as Record<string, unknown>);
    } catch {
      lines.push({ msg: text });
    }
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, pid: child.pid!, lines, exited };
}

/** Runs the CLI to its end; resolves to what it printed. */
export async function runCli(env: Record<string, string>, args: string[]): Promise<string> {
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'lib/cli.ts', ...args], { env: { ...process.env, ...env } });
  return stdout;
}

/** What a multi-process suite shares: the effects table, the scheduling side, the worker processes it started. */
export interface MultiProcessSuite {
  knex: Knex;
  tm: TransactionManager;
  scheduler: PersistentTransactionalScheduler;
  /** The table the fixture's jobs write their rows to. */
  effects: string;
  /** The table the fixture's `bump` job counts in (suites declared with `counter: true`): one row, id 1, value 0 at the start. */
  counter?: string;
  prefix: string;
  /** Worker processes started with `spawn`, alive or not; killed when the suite ends. */
  workers: WorkerProcess[];
  /** Starts a worker process (the real CLI with the fixture's jobs). */
  spawn(options?: { lease?: number; hold?: number; work?: number; concurrency?: number }): WorkerProcess;
}

/**
 * Declares the hooks of a suite whose jobs run in worker processes: an effects
 * table (and with `counter: true` a counter table), scheduler tables under their
 * own prefix, a scheduler that schedules the fixture's jobs by name (with the
 * given lease), and cleanup.
 */
export function multiProcessSuite(
  database: TestDatabase,
  options: { lease: number; jobs: string[]; maxRuns?: number; counter?: boolean },
): MultiProcessSuite {
  const suite = { workers: [] as WorkerProcess[] } as MultiProcessSuite;
  before(async () => {
    suite.knex = database.knex();
    suite.effects = database.table('effects');
    suite.prefix = `${database.table('mp')}_`;
    await suite.knex.schema.createTable(suite.effects, (t) => {
      t.increments('id');
      t.string('job_id', 32).notNullable();
      t.integer('n').notNullable();
      t.integer('pid').notNullable();
      t.integer('run').notNullable();
      t.bigInteger('started_at').nullable(); // the job's own clock, for the order and overlap of runs
      t.bigInteger('ended_at').nullable();
    });
    if (options.counter) {
      suite.counter = database.table('counter');
      await suite.knex.schema.createTable(suite.counter, (t) => {
        t.integer('id').primary();
        t.integer('value').notNullable();
      });
      await suite.knex(suite.counter).insert({ id: 1, value: 0 });
    }
    suite.tm = new TransactionManager(suite.knex, { logger: recordingLogger() });
    // The lease is a job option, stored with the job when it is scheduled.
    suite.scheduler = new PersistentTransactionalScheduler(suite.tm, { tablePrefix: suite.prefix, lease: options.lease, maxRuns: options.maxRuns });
    for (const job of options.jobs) suite.scheduler.define(job, async () => undefined); // run by the workers, scheduled here by name
    await suite.scheduler.migrate();
  });
  after(async () => {
    for (const worker of suite.workers) worker.child.kill('SIGKILL');
    await suite.knex.schema.dropTableIfExists(`${suite.prefix}jobs`);
    await suite.knex.schema.dropTableIfExists(`${suite.prefix}schema`);
    await suite.knex.schema.dropTableIfExists(`${suite.prefix}recurring`);
  });
  suite.spawn = ({ lease = options.lease, hold = 0, work, concurrency = 1 } = {}) => {
    const env = {
      ...fixtureEnv(database, { prefix: suite.prefix, effects: suite.effects, lease, hold, maxRuns: options.maxRuns, counter: suite.counter }),
      ...(work === undefined ? {} : { AC_FIXTURE_WORK: String(work) }),
    };
    const worker = startWorker(env, ['--concurrency', String(concurrency)]);
    suite.workers.push(worker);
    return worker;
  };
  return suite;
}
