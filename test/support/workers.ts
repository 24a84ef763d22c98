/** Worker processes for the multi-process suites: the real CLI, in child processes. */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { createInterface } from 'node:readline';
import { after, before } from 'node:test';
import type { Knex } from 'knex';
import { PersistentTransactionalScheduler, TransactionManager, type QueueOptions, type WorkerOptions } from '../../lib/index.js';
import type { TestDatabase } from './databases.js';
import { recordingLogger } from './helpers.js';

export interface WorkerProcess {
  child: ChildProcess;
  pid: number;
  /** Every JSON line it printed, parsed. */
  lines: Record<string, unknown>[];
  exited: Promise<number | null>;
}

/** The jobs module worker processes run unless told otherwise. */
const WORKER_JOBS = 'test/fixtures/worker-jobs.ts';

/** Worker options the CLI has no flags for, which the fixtures' workers take from AC_FIXTURE_POLL. */
export type PollOptions = Pick<WorkerOptions, 'minPollInterval' | 'maxPollInterval'>;

/** The environment the fixtures' jobs modules are configured by (see test/fixtures/fixture-setup.ts). */
export function fixtureEnv(
  database: TestDatabase,
  options: {
    prefix: string;
    effects: string;
    lease: number;
    hold?: number;
    maxRuns?: number;
    counter?: string;
    queues?: Record<string, QueueOptions>;
    poll?: PollOptions;
  },
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
    // Queue limits are kept by each process's claims: each process needs them too.
    ...(options.queues === undefined ? {} : { AC_FIXTURE_QUEUES: JSON.stringify(options.queues) }),
    ...(options.poll === undefined ? {} : { AC_FIXTURE_POLL: JSON.stringify(options.poll) }),
  };
}

/** Starts `aftercommit worker` with the jobs module `jobs`, in a child process with `env` added to this one's. */
export function startWorker(env: Record<string, string>, args: string[] = [], jobs = WORKER_JOBS): WorkerProcess {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', 'lib/cli.ts', 'worker', '--jobs', jobs, ...args],
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
  /** The table the fixture's jobs write their rows to (AC_FIXTURE_EFFECTS). */
  effects: string;
  /** The table the fixture's `bump` job counts in (suites declared with `counter: true`): one row, id 1, value 0 at the start. */
  counter?: string;
  prefix: string;
  /** Worker processes started with `spawn`, alive or not; killed when the suite ends. */
  workers: WorkerProcess[];
  /** Starts a worker process (the real CLI with the fixture's jobs), taking `queues` if given. */
  spawn(options?: { lease?: number; hold?: number; work?: number; concurrency?: number; queues?: string[]; groupWindow?: number }): WorkerProcess;
}

/** The effects table of worker-jobs.ts: one row per run, with the run's start and end on the job's clock for those that note them. */
function workerEffects(t: Knex.CreateTableBuilder): void {
  t.string('job_id', 32).notNullable();
  t.integer('n').notNullable();
  t.integer('pid').notNullable();
  t.integer('run').notNullable();
  t.bigInteger('started_at').nullable(); // the job's own clock, for the order and overlap of runs
  t.bigInteger('ended_at').nullable();
}

/**
 * Declares the hooks of a suite whose jobs run in worker processes: an effects
 * table (an `id`, then the columns `effects` adds: by default those of
 * worker-jobs.ts; with `counter: true` a counter table too), scheduler tables
 * under their own prefix, a scheduler that schedules the fixture's jobs by name
 * (with the given lease, maxRuns and queues, which the worker processes get too),
 * and cleanup. The worker processes run the jobs module `fixture` (by default
 * worker-jobs.ts), polling at `poll`'s intervals if given.
 */
export function multiProcessSuite(
  database: TestDatabase,
  options: {
    lease: number;
    jobs: string[];
    maxRuns?: number;
    counter?: boolean;
    queues?: Record<string, QueueOptions>;
    fixture?: string;
    effects?: (table: Knex.CreateTableBuilder) => void;
    poll?: PollOptions;
  },
): MultiProcessSuite {
  const suite = { workers: [] as WorkerProcess[] } as MultiProcessSuite;
  before(async () => {
    suite.knex = database.knex();
    suite.effects = database.table('effects');
    suite.prefix = `${database.table('mp')}_`;
    await suite.knex.schema.createTable(suite.effects, (t) => {
      t.increments('id');
      (options.effects ?? workerEffects)(t);
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
    suite.scheduler = new PersistentTransactionalScheduler(suite.tm, {
      tablePrefix: suite.prefix,
      lease: options.lease,
      maxRuns: options.maxRuns,
      queues: options.queues,
    });
    for (const job of options.jobs) suite.scheduler.define(job, async () => undefined); // run by the workers, scheduled here by name
    await suite.scheduler.migrate();
  });
  after(async () => {
    for (const worker of suite.workers) worker.child.kill('SIGKILL');
    await suite.knex.schema.dropTableIfExists(`${suite.prefix}jobs`);
    await suite.knex.schema.dropTableIfExists(`${suite.prefix}schema`);
    await suite.knex.schema.dropTableIfExists(`${suite.prefix}recurring`);
    await suite.knex.schema.dropTableIfExists(`${suite.prefix}queues`);
    await suite.knex.schema.dropTableIfExists(`${suite.prefix}workers`);
  });
  suite.spawn = ({ lease = options.lease, hold = 0, work, concurrency = 1, queues, groupWindow } = {}) => {
    const { maxRuns, queues: limits, poll } = options;
    const env = {
      ...fixtureEnv(database, { prefix: suite.prefix, effects: suite.effects, lease, hold, maxRuns, counter: suite.counter, queues: limits, poll }),
      ...(work === undefined ? {} : { AC_FIXTURE_WORK: String(work) }),
    };
    const args = [
      ...['--concurrency', String(concurrency)],
      ...(queues === undefined ? [] : ['--queues', queues.join(',')]),
      ...(groupWindow === undefined ? [] : ['--group-window', String(groupWindow)]),
    ];
    const worker = startWorker(env, args, options.fixture);
    suite.workers.push(worker);
    return worker;
  };
  return suite;
}
