#!/usr/bin/env node
/**
 * aftercommit's command line:
 *   npx aftercommit migrate [--jobs ./jobs.js]
 *   npx aftercommit worker  [--jobs ./jobs.js] [--concurrency N] [--queues a,b] [--stop-timeout ms] [--grace ms]
 *                           [--group-window ms] [--group-size N]
 *
 * The jobs module exports (as `scheduler` or default) the app's
 * PersistentTransactionalScheduler, with its jobs defined.
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import type { PersistentTransactionalScheduler } from './scheduler/persistent/persistent-scheduler.js';
import { INT_MAX, integerIn } from './support/validate.js';

const usage = `usage:
  aftercommit migrate [--jobs ./jobs.js]
  aftercommit worker  [--jobs ./jobs.js] [--concurrency N] [--queues a,b] [--stop-timeout ms] [--grace ms]
                      [--group-window ms] [--group-size N]

Short jobs share one transaction, each in a savepoint, when they finish within
--group-window ms (default 50; 0: every job has its own), at most --group-size
(default 8) at a time.

On SIGTERM or SIGINT the worker stops claiming and gives running jobs --stop-timeout ms
(default 30000) to finish, then aborts their signal; a job still running --grace ms
(default 5000) later has its transaction ended and goes back to the queue. A second
signal exits at once.

The jobs module exports (as \`scheduler\` or as default) a PersistentTransactionalScheduler
with its jobs defined. TypeScript modules: run with node --import tsx.`;

function fail(message: string): never {
  console.error(`aftercommit: ${message}\n\n${usage}`);
  process.exit(2);
}

async function loadScheduler(path: string): Promise<PersistentTransactionalScheduler> {
  let module: Record<string, unknown>;
  try {
    module = (await import(pathToFileURL(resolve(path)).href)) as Record<string, unknown>;
  } catch (err) {
    fail(`cannot load the jobs module ${path}: ${(err as Error).message}`);
  }
  const scheduler = (module.scheduler ?? module.default) as PersistentTransactionalScheduler | undefined;
  if (!scheduler || typeof scheduler.worker !== 'function' || typeof scheduler.migrate !== 'function') {
    fail(`${path} must export a PersistentTransactionalScheduler as \`scheduler\` or as default`);
  }
  return scheduler;
}

/** The option's value as an integer from 1 up to what a timer takes, or the usage and exit code 2. */
function positiveInteger(value: string | undefined, option: string, min = 1): number | undefined {
  if (value === undefined) return undefined;
  try {
    return integerIn(Number(value), `--${option}`, min);
  } catch {
    // Name the text as typed: `Number('ten')` would show as NaN.
    fail(`--${option} must be a whole number from ${min} to ${INT_MAX}, got ${value}`);
  }
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      jobs: { type: 'string', default: './jobs.js' },
      concurrency: { type: 'string' },
      queues: { type: 'string' },
      'stop-timeout': { type: 'string' },
      grace: { type: 'string' },
      'group-window': { type: 'string' },
      'group-size': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [command] = positionals;
  if (values.help) {
    console.log(usage);
    return;
  }
  if (!command) fail('a command is needed');
  const scheduler = await loadScheduler(values.jobs!);
  const knex = scheduler.manager.knex;

  if (command === 'migrate') {
    await scheduler.migrate();
    console.log('aftercommit: the scheduler tables are up to date');
    await knex.destroy();
    return;
  }
  if (command !== 'worker') fail(`unknown command ${command}`);

  const stopTimeout = positiveInteger(values['stop-timeout'], 'stop-timeout') ?? 30_000; // checked before any job is claimed
  const grace = positiveInteger(values.grace, 'grace') ?? 5000;
  const worker = scheduler.worker({
    grace,
    concurrency: positiveInteger(values.concurrency, 'concurrency'),
    queues: values.queues?.split(',').map((q) => q.trim()).filter(Boolean),
    groupWindow: positiveInteger(values['group-window'], 'group-window', 0),
    groupSize: positiveInteger(values['group-size'], 'group-size'),
  }).start();
  console.log(`aftercommit: worker ${worker.id} started (jobs: ${scheduler.definedJobs().join(', ') || 'none'})`);

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) {
      console.log(`aftercommit: ${signal} again: exiting at once; the jobs still running go back to the queue when their leases expire`);
      process.exit(signal === 'SIGINT' ? 130 : 143);
    }
    stopping = true;
    console.log(`aftercommit: ${signal}: stopping worker ${worker.id} (running jobs get ${stopTimeout} ms, then ${grace} ms before they are ended)`);
    await worker.stop({ timeout: stopTimeout });
    await knex.destroy();
    console.log(`aftercommit: worker ${worker.id} stopped`);
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

main().catch((err: unknown) => {
  console.error('aftercommit:', err);
  process.exit(1);
});
