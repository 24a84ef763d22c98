/**
 * Requests/s through Koa, measured side by side in one run with autocannon
 * (each server of bench/koa-servers.ts in its own process, rounds alternating):
 *   - a handler doing SELECT … FOR UPDATE + UPDATE under aftercommit vs the same
 *     handler wrapping knex.transaction by hand (goal >= 0.95);
 *   - a handler that never touches the database under aftercommit vs bare Koa
 *     (goal >= 0.97), and vs bare Koa plus what aftercommit cannot skip: an
 *     AsyncLocalStorage scope and the X-Request-Id echo ("floor").
 *
 *   npx tsup && node --import tsx bench/koa-overhead.ts
 *   BENCH_DB=postgres  BENCH_ROUNDS=6  BENCH_ROUND_MS=3000  BENCH_CONNECTIONS=20
 */
import { compareServers, prepareAccounts } from './http-rounds.js';
import { KOA_BENCH_TABLE } from './support.js';

const server = (variant: string) => ({ name: variant, args: ['bench/koa-servers.ts', variant] });

const knex = await prepareAccounts(KOA_BENCH_TABLE);
try {
  await compareServers('Koa: handler with SELECT … FOR UPDATE + UPDATE', [server('by-hand-db'), server('aftercommit-db')], 0.95);
  await compareServers('Koa: handler without database access', [server('bare-nodb'), server('aftercommit-nodb'), server('floor-nodb')], 0.97);
} finally {
  await knex.schema.dropTableIfExists(KOA_BENCH_TABLE);
  await knex.destroy();
}
