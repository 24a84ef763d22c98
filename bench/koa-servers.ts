/**
 * One of the servers bench/koa-overhead.ts compares, in a process of its own
 * (so an app that never uses AsyncLocalStorage does not pay for the others'):
 *   node --import tsx bench/koa-servers.ts <aftercommit-db | by-hand-db | aftercommit-nodb | bare-nodb | floor-nodb>
 * Prints "listening <port>" when ready.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import Koa from 'koa';
import knexFactory from 'knex';
import { TransactionManager } from '../dist/index.js';
import { aftercommit } from '../dist/koa.js';
import { announce, idOf, work } from './http-rounds.js';
import { KOA_BENCH_TABLE as TABLE, benchKnexConfig } from './support.js';

const variant = process.argv[2];
const app = new Koa();

switch (variant) {
  case 'aftercommit-db': {
    const knex = knexFactory(benchKnexConfig(10));
    const tm = new TransactionManager(knex);
    app.use(
      aftercommit({ manager: tm }, async (ctx) => {
        await work(ctx.db, TABLE, idOf(ctx.path));
        ctx.body = 'ok';
      }),
    );
    break;
  }
  case 'by-hand-db': {
    const knex = knexFactory(benchKnexConfig(10));
    app.use(async (ctx) => {
      await knex.transaction((trx) => work(trx, TABLE, idOf(ctx.path)));
      ctx.body = 'ok';
    });
    break;
  }
  case 'aftercommit-nodb': {
    const knex = knexFactory(benchKnexConfig(10));
    app.use(
      aftercommit({ manager: new TransactionManager(knex) }, async (ctx) => {
        ctx.body = 'hello';
      }),
    );
    break;
  }
  case 'bare-nodb':
    app.use(async (ctx) => {
      ctx.body = 'hello';
    });
    break;
  case 'floor-nodb': {
    // What any app pays for the two things aftercommit must do on every request:
    // an AsyncLocalStorage scope, and the X-Request-Id echo.
    const storage = new AsyncLocalStorage();
    app.use((ctx, next) => {
      ctx.set('X-Request-Id', randomUUID());
      return storage.run({}, next);
    });
    app.use(async (ctx) => {
      ctx.body = 'hello';
    });
    break;
  }
  default:
    throw new Error(`unknown variant ${variant}`);
}

announce(app);
