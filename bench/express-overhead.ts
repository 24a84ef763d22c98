/**
 * Requests/s through Express, measured side by side in one run with autocannon
 * (each server of bench/express-servers.ts in its own process, rounds alternating):
 *   - a handler doing SELECT … FOR UPDATE + UPDATE under aftercommit/express vs
 *     the same handler wrapping knex.transaction by hand (goal >= 0.95);
 *   - a handler that never touches the database under aftercommit/express vs
 *     bare Express (goal >= 0.95), and vs bare Express plus what aftercommit
 *     cannot skip: an AsyncLocalStorage scope and the X-Request-Id echo ("floor").
 *
 *   npx tsup && node --import tsx bench/express-overhead.ts
 *   BENCH_DB=postgres  BENCH_ROUNDS=6  BENCH_ROUND_MS=3000  BENCH_CONNECTIONS=20  BENCH_EXPRESS=4 (express4)
 */
import { compareServers, prepareAccounts } from './http-rounds.js';
import { EXPRESS_BENCH_TABLE } from './support.js';

const server = (variant: string) => ({ name: variant, args: ['bench/express-servers.ts', variant] });
const express = `Express ${process.env.BENCH_EXPRESS === '4' ? 4 : 5}`;

const knex = await prepareAccounts(EXPRESS_BENCH_TABLE);
try {
  await compareServers(`${express}: handler with SELECT … FOR UPDATE + UPDATE`, [server('by-hand-db'), server('aftercommit-db')], 0.95);
  await compareServers(`${express}: handler without database access`, [server('bare-nodb'), server('aftercommit-nodb'), server('floor-nodb')], 0.95);
} finally {
  await knex.schema.dropTableIfExists(EXPRESS_BENCH_TABLE);
  await knex.destroy();
}
