/**
 * Requests/s through Express, measured side by side in one run with autocannon
 * (each server in its own process, rounds alternating), like bench/koa-overhead.ts:
 *   - a handler doing SELECT … FOR UPDATE + UPDATE under aftercommit/express vs
 *     the same handler wrapping knex.transaction by hand (goal >= 0.95);
 *   - a handler that never touches the database under aftercommit/express vs
 *     bare Express (goal >= 0.95), and vs bare Express plus what aftercommit
 *     cannot skip: an AsyncLocalStorage scope and the X-Request-Id echo ("floor").
 *
 *   npx tsup && node --import tsx bench/express-overhead.ts
 *   BENCH_DB=postgres  BENCH_ROUNDS=6  BENCH_ROUND_MS=3000  BENCH_CONNECTIONS=20  BENCH_EXPRESS=4 (express4)
 *
 * The servers are this same file, started as
 *   node --import tsx bench/express-overhead.ts server <aftercommit-db | by-hand-db | aftercommit-nodb | bare-nodb | floor-nodb>
 * one per process (so a server that never uses AsyncLocalStorage does not pay for
 * the others'); each prints "listening <port>" when ready.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Express, NextFunction, Request, Response } from 'express';
import knexFactory, { type Knex } from 'knex';
import type { AftercommitRequest } from '../dist/express.js';
import { benchKnexConfig } from './support.js';

/** Its own table: the Koa bench may run against the same database. */
const TABLE = 'bench_express_accounts';
const ROWS = 1000;
const rounds = Number(process.env.BENCH_ROUNDS ?? 6);
const roundMs = Number(process.env.BENCH_ROUND_MS ?? 3000);
const connections = Number(process.env.BENCH_CONNECTIONS ?? 20);
const expressMajor = process.env.BENCH_EXPRESS === '4' ? 4 : 5;

// ---------------------------------------------------------------- the servers

async function work(db: Knex | Knex.Transaction, id: number) {
  const row = await db(TABLE).where({ id }).first('balance').forUpdate();
  await db(TABLE).where({ id }).update({ balance: row.balance + 1 });
}
const idOf = (path: string) => Number(path.slice(path.lastIndexOf('/') + 1));

async function serve(variant: string) {
  // Express 4 and 5 have the same default export; the types are @types/express (5).
  const express = ((await import(expressMajor === 4 ? 'express4' : 'express')) as { default: () => Express }).default;
  const app = express();
  app.disable('x-powered-by');

  switch (variant) {
    case 'aftercommit-db': {
      const { TransactionManager } = await import('../dist/index.js');
      const { aftercommit } = await import('../dist/express.js');
      const tm = new TransactionManager(knexFactory(benchKnexConfig(10)));
      app.use(
        aftercommit({ manager: tm }, async (req: AftercommitRequest, res: Response) => {
          await work(req.db, idOf(req.path));
          res.send('ok');
        }),
      );
      break;
    }
    case 'by-hand-db': {
      const knex = knexFactory(benchKnexConfig(10));
      // try/catch so that Express 4, which ignores a rejected promise, answers too.
      app.use(async (req: Request, res: Response, next: NextFunction) => {
        try {
          await knex.transaction((trx) => work(trx, idOf(req.path)));
          res.send('ok');
        } catch (err) {
          next(err);
        }
      });
      break;
    }
    case 'aftercommit-nodb': {
      const { TransactionManager } = await import('../dist/index.js');
      const { aftercommit } = await import('../dist/express.js');
      const tm = new TransactionManager(knexFactory(benchKnexConfig(10)));
      app.use(
        aftercommit({ manager: tm }, (_req: AftercommitRequest, res: Response) => {
          res.send('hello');
        }),
      );
      break;
    }
    case 'bare-nodb':
      app.use((_req: Request, res: Response) => {
        res.send('hello');
      });
      break;
    case 'floor-nodb': {
      // What any app pays for the two things aftercommit must do on every request:
      // an AsyncLocalStorage scope, and the X-Request-Id echo.
      const storage = new AsyncLocalStorage();
      app.use((_req: Request, res: Response, next: NextFunction) => {
        res.set('X-Request-Id', randomUUID());
        storage.run({}, next);
      });
      app.use((_req: Request, res: Response) => {
        res.send('hello');
      });
      break;
    }
    default:
      throw new Error(`unknown variant ${variant}`);
  }

  // The same quiet error handler everywhere: autocannon cuts off the requests in flight when a round
  // ends (aftercommit rolls those back with ClientGoneError), and Express's default handler would
  // print each one.
  app.use((err: { status?: number }, _req: Request, res: Response, _next: NextFunction) => {
    if (!res.headersSent) res.status(err.status ?? 500).end();
  });

  const server = app.listen(0, '127.0.0.1', () => {
    const address = server.address() as { port: number };
    console.log(`listening ${address.port}`);
  });
}

// ---------------------------------------------------------------- the load

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
  const self = fileURLToPath(import.meta.url);
  const child = spawn(process.execPath, ['--import', 'tsx', self, 'server', variant], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! });
  const [line] = (await Promise.race([
    once(lines, 'line'),
    once(child, 'exit').then(([code]) => {
      throw new Error(`server ${variant} exited with ${code} before listening`);
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

async function compare(title: string, baseline: string, candidates: string[], goal: number) {
  const names = [baseline, ...candidates];
  const servers = Object.fromEntries(await Promise.all(names.map(async (name) => [name, await start(name)] as const)));
  try {
    const totals = Object.fromEntries(names.map((name) => [name, { requests: 0, seconds: 0 }]));
    for (const name of names) await load(servers[name]!.url, 1000); // warm-up
    for (let round = 0; round < rounds; round++) {
      for (const name of round % 2 === 0 ? names : [...names].reverse()) {
        const { requests, seconds } = await load(servers[name]!.url, roundMs);
        totals[name]!.requests += requests;
        totals[name]!.seconds += seconds;
      }
    }
    const rate = (name: string) => totals[name]!.requests / totals[name]!.seconds;
    console.log(
      `\n${title}  (Express ${expressMajor}, database: ${process.env.BENCH_DB ?? 'mysql'}, ${connections} connections, ${rounds}×${roundMs / 1000} s each)`,
    );
    for (const name of names) console.log(`  ${name.padEnd(18)} ${rate(name).toFixed(0).padStart(7)} req/s`);
    const candidate = candidates[0]!;
    for (const other of [baseline, ...candidates.slice(1)]) {
      const against = other === baseline ? `  (goal >= ${goal})` : '';
      console.log(`  ratio ${candidate} / ${other}: ${(rate(candidate) / rate(other)).toFixed(3)}${against}`);
    }
  } finally {
    for (const { child } of Object.values(servers)) child.kill();
  }
}

if (process.argv[2] === 'server') {
  await serve(process.argv[3] ?? '');
} else {
  const knex = await prepare();
  try {
    await compare('handler with SELECT … FOR UPDATE + UPDATE', 'by-hand-db', ['aftercommit-db'], 0.95);
    await compare('handler without database access', 'bare-nodb', ['aftercommit-nodb', 'floor-nodb'], 0.95);
  } finally {
    await knex.schema.dropTableIfExists(TABLE);
    await knex.destroy();
  }
}
