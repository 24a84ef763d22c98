/**
 * The jobs module of bench/wake-latency.ts's worker process (the real CLI):
 *   node --import tsx dist/cli.js worker --jobs bench/wake-latency-jobs.ts
 * Configured by BENCH_DB (as in support.ts) and BENCH_WAKE_PREFIX (table prefix).
 */
import knexFactory from 'knex';
import { PersistentTransactionalScheduler, TransactionManager } from '../dist/index.js';
import { benchKnexConfig } from './support.js';

const knex = knexFactory(benchKnexConfig(4));
export const scheduler = new PersistentTransactionalScheduler(new TransactionManager(knex), { tablePrefix: process.env.BENCH_WAKE_PREFIX ?? 'bench_wake_' });

/** Returns when it started, on the machine's clock in ms with a fraction (the same clock in every process). */
scheduler.define('stamp', async () => performance.timeOrigin + performance.now());
