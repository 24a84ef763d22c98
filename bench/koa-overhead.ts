/**
 * Requests/s through Koa, measured side by side in one run with autocannon
 * (each server in its own process, rounds alternating):
 *   - a handler doing SELECT … FOR UPDATE + UPDATE under aftercommit vs the same
 *     handler wrapping knex.transaction by hand (goal >= 0.95);
 *   - a handler that never touches the database under aftercommit vs bare Koa
 *     (goal >= 0.97), and vs bare Koa plus what aftercommit cannot skip: an
 *     AsyncLocalStorage scope and the X-Request-Id echo ("floor").
 *
 *   node --import tsx bench/koa-overhead.ts
 *   BENCH_DB=postgres  BENCH_ROUNDS=6  BENCH_ROUND_MS=3000  BENCH_CONNECTIONS=20
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import autocannon from 'autocannon';
import knexFactory from 'knex';
import { KOA_BENCH_TABLE as TABLE, benchKnexConfig } from './support.js';

const ROWS = 1000;
const rounds = Number(process.env.BENCH_ROUNDS ?? 6);
const roundMs = Number(process.env.BENCH_ROUND_MS ?? 3000);
const connections = Number(process.env.BENCH_CONNECTIONS ?? 20);

async function prepare() {
  const knex = knexFactory(benchKnexConfig(1));
  await knex.schema.dropTableIfExists(TABLE);
  await knex.schema.createTable(TABLE, (t) => {
    t.integer('id').primary();
    t.integer('balance').notNullable();
  });
  for (let i = 0; i < ROWS; i += 250) await knex(TABLE).insert(Array.from({ length: 250 }, (_, j) => ({ id: i + j, balance: 0 })));
  return knex;
}

async function start(variant: string): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bench/koa-servers.ts', variant], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! });
  const [line] = (await once(lines, 'line')) as [string];
  return { child, url: `http://127.0.0.1:${line.split(' ')[1]}` };
}

async function load(url: string, ms: number): Promise<{ requests: number; seconds: number }> {
  const result = await autocannon({
    url,
    connections,
    duration: ms / 1000,
    requests: [{ setupRequest: (req) => ({ ...req, path: `/work/${Math.floor(Math.random() * ROWS)}` }) }],
  });
  const failed = result.non2xx + result.errors + result.timeouts;
  if (failed > 0) throw new Error(`${url}: ${failed} failed requests`);
  return { requests: result.requests.total, seconds: result.duration };
}

async function compare(title: string, baseline: string, candidates: string[], goal: number) {
  const names = [baseline, ...candidates];
  const servers = Object.fromEntries(await Promise.all(names.map(async (name) => [name, await start(name)] as const)));
  const totals = Object.fromEntries(names.map((name) => [name, { requests: 0, seconds: 0 }]));
  for (const name of names) await load(servers[name]!.url, 1000); // warm-up
  for (let round = 0; round < rounds; round++) {
    for (const name of round % 2 === 0 ? names : [...names].reverse()) {
      const { requests, seconds } = await load(servers[name]!.url, roundMs);
      totals[name]!.requests += requests;
      totals[name]!.seconds += seconds;
    }
  }
  for (const { child } of Object.values(servers)) child.kill();
  const rate = (name: string) => totals[name]!.requests / totals[name]!.seconds;
  console.log(`\n${title}  (database: ${process.env.BENCH_DB ?? 'mysql'}, ${connections} connections, ${rounds}×${roundMs / 1000} s each)`);
  for (const name of names) console.log(`  ${name.padEnd(18)} ${rate(name).toFixed(0).padStart(7)} req/s`);
  const candidate = candidates[0]!;
  for (const other of [baseline, ...candidates.slice(1)]) {
    const against = other === baseline ? `  (goal >= ${goal})` : '';
    console.log(`  ratio ${candidate} / ${other}: ${(rate(candidate) / rate(other)).toFixed(3)}${against}`);
  }
}

const knex = await prepare();
await compare('handler with SELECT … FOR UPDATE + UPDATE', 'by-hand-db', ['aftercommit-db'], 0.95);
await compare('handler without database access', 'bare-nodb', ['aftercommit-nodb', 'floor-nodb'], 0.97);
await knex.schema.dropTableIfExists(TABLE);
await knex.destroy();
