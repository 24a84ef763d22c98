/**
 * The jobs module of bench/queue-throughput.ts's worker processes (the real CLI):
 *   node --import tsx dist/cli.js worker --jobs bench/queue-jobs.ts --concurrency 4
 * Configured by environment variables: BENCH_DB (as in support.ts),
 * BENCH_QUEUE_PREFIX (table prefix, default bench_q_), BENCH_WORKER_POOL (connections).
 */
import knexFactory from 'knex';
import { PersistentTransactionalScheduler, TransactionManager } from '../dist/index.js';
import { benchKnexConfig } from './support.js';

const knex = knexFactory(benchKnexConfig(Number(process.env.BENCH_WORKER_POOL ?? 6)));
// The default logger: warnings (retries after deadlocks, failed claims, ...) go to
// stderr, one line each, where the bench counts them.
const tm = new TransactionManager(knex);
export const scheduler = new PersistentTransactionalScheduler(tm, { tablePrefix: process.env.BENCH_QUEUE_PREFIX ?? 'bench_q_' });

scheduler.define('noop', async () => null);
