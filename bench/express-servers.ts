/**
 * One of the servers bench/express-overhead.ts compares, in a process of its own:
 *   node --import tsx bench/express-servers.ts <aftercommit-db | by-hand-db | aftercommit-nodb | bare-nodb | floor-nodb>
 * on Express 5, or Express 4 with BENCH_EXPRESS=4. Prints "listening <port>" when ready.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import type { Express, NextFunction, Request, Response } from 'express';
import knexFactory from 'knex';
import { TransactionManager } from '../dist/index.js';
import { aftercommit, type AftercommitRequest } from '../dist/express.js';
import { announce, idOf, work } from './http-rounds.js';
import { EXPRESS_BENCH_TABLE as TABLE, benchKnexConfig } from './support.js';

// Express 4 and 5 have the same default export; the types are @types/express (5).
const express = ((await import(process.env.BENCH_EXPRESS === '4' ? 'express4' : 'express')) as { default: () => Express }).default;
const variant = process.argv[2];
const app = express();
app.disable('x-powered-by');

switch (variant) {
  case 'aftercommit-db': {
    const tm = new TransactionManager(knexFactory(benchKnexConfig(10)));
    app.use(
      aftercommit({ manager: tm }, async (req: AftercommitRequest, res: Response) => {
        await work(req.db, TABLE, idOf(req.path));
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
        await knex.transaction((trx) => work(trx, TABLE, idOf(req.path)));
        res.send('ok');
      } catch (err) {
        next(err);
      }
    });
    break;
  }
  case 'aftercommit-nodb': {
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

announce(app);
