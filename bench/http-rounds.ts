/**
 * What the HTTP benchmarks (bench/koa-overhead.ts, bench/express-overhead.ts)
 * share: the accounts table their handlers update, the servers each started in a
 * process of its own (so a server that never uses AsyncLocalStorage does not pay
 * for the others'), and rounds of autocannon load alternating between them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import type { Server } from 'node:http';
import { createInterface } from 'node:readline';
import knexFactory, { type Knex } from 'knex';
import { benchKnexConfig } from './support.js';

const ROWS = 1000;
const rounds = Number(process.env.BENCH_ROUNDS ?? 6);
const roundMs = Number(process.env.BENCH_ROUND_MS ?? 3000);
const connections = Number(process.env.BENCH_CONNECTIONS ?? 20);

/** The handlers' work: SELECT … FOR UPDATE and UPDATE of one row. */
export async function work(db: Knex | Knex.Transaction, table: string, id: number): Promise<void> {
  const row = await db(table).where({ id }).first('balance').forUpdate();
  await db(table).where({ id }).update({ balance: row.balance + 1 });
}

/** The row a request works on: the last segment of its path (`/work/17`). */
export const idOf = (path: string): number => Number(path.slice(path.lastIndexOf('/') + 1));

/** Creates `table` with its rows; returns the connection that drops it again. */
export async function prepareAccounts(table: string): Promise<Knex> {
  const knex = knexFactory(benchKnexConfig(1));
  await knex.schema.dropTableIfExists(table);
  await knex.schema.createTable(table, (t) => {
    t.integer('id').primary();
    t.integer('balance').notNullable();
  });
  for (let i = 0; i < ROWS; i += 250) await knex(table).insert(Array.from({ length: 250 }, (_, j) => ({ id: i + j, balance: 0 })));
  return knex;
}

/** In a server process: listens on a free port and tells the benchmark which. */
export function announce(app: { listen(port: number, host: string, ready: () => void): Server }): void {
  const server = app.listen(0, '127.0.0.1', () => console.log(`listening ${(server.address() as { port: number }).port}`));
}

/** A server to compare: its name, and the arguments of `node --import tsx` that start it. */
export interface BenchServer {
  readonly name: string;
  readonly args: readonly string[];
}

async function start({ name, args }: BenchServer): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! });
  const [line] = (await Promise.race([
    once(lines, 'line'),
    once(child, 'exit').then(([code]) => {
      throw new Error(`server ${name} exited with ${code} before listening`);
    }),
  ])) as [string];
  return { child, url: `http://127.0.0.1:${line.split(' ')[1]}` };
}

async function load(url: string, ms: number): Promise<{ requests: number; seconds: number }> {
  const { default: autocannon } = await import('autocannon');
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

/**
 * Loads each server in turn (after a warm-up each, the order flipped every
 * round) and prints requests/s and the ratios of the second server to the first
 * (the baseline, against `goal`) and to any others.
 */
export async function compareServers(title: string, servers: readonly BenchServer[], goal: number): Promise<void> {
  const started = await Promise.all(servers.map(start));
  try {
    const totals = servers.map(() => ({ requests: 0, seconds: 0 }));
    for (const { url } of started) await load(url, 1000);
    for (let round = 0; round < rounds; round++) {
      const order = servers.map((_, i) => i);
      for (const i of round % 2 === 0 ? order : order.reverse()) {
        const { requests, seconds } = await load(started[i]!.url, roundMs);
        totals[i]!.requests += requests;
        totals[i]!.seconds += seconds;
      }
    }
    const rate = (i: number) => totals[i]!.requests / totals[i]!.seconds;
    console.log(`\n${title}  (database: ${process.env.BENCH_DB ?? 'mysql'}, ${connections} connections, ${rounds}×${roundMs / 1000} s each)`);
    servers.forEach(({ name }, i) => console.log(`  ${name.padEnd(18)} ${rate(i).toFixed(0).padStart(7)} req/s`));
    const candidate = servers[1]!.name;
    servers.forEach(({ name }, i) => {
      if (i === 1) return;
      console.log(`  ratio ${candidate} / ${name}: ${(rate(1) / rate(i)).toFixed(3)}${i === 0 ? `  (goal >= ${goal})` : ''}`);
    });
  } finally {
    for (const { child } of started) child.kill();
  }
}
