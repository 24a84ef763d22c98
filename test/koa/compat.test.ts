/**
 * aftercommit with Koa 2 and Koa 3, @koa/router and koa-router,
 * @koa/bodyparser and koa-bodyparser: in every combination a JSON POST whose
 * handler conflicts once is retried with its parsed body and answers 200.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import Koa3 from 'koa';
import Koa2 from 'koa2';
import KoaRouter from '@koa/router';
import LegacyRouter from 'koa-router';
import { bodyParser as koaBodyParser } from '@koa/bodyparser';
import legacyBodyParser from 'koa-bodyparser';
import knexFactory, { type Knex } from 'knex';
import { ConflictError, TransactionManager } from '../../lib/index.js';
import { aftercommit, jobRoutes, type AftercommitContext } from '../../lib/koa/index.js';
import { TransactionalScheduler } from '../../lib/index.js';
import { recordingLogger } from '../support/helpers.js';
import { request, serve, type Served } from '../support/http.js';

const koas = { 'koa 3': Koa3, 'koa 2': Koa2 };
const routers = { '@koa/router': KoaRouter, 'koa-router': LegacyRouter };
const parsers = { '@koa/bodyparser': () => koaBodyParser(), 'koa-bodyparser': () => legacyBodyParser() };

describe('compatibility', () => {
  let knex: Knex;
  let tm: TransactionManager;

  before(() => {
    knex = knexFactory({ client: 'better-sqlite3', connection: { filename: ':memory:' }, useNullAsDefault: true });
    tm = new TransactionManager(knex, { logger: recordingLogger(), delay: { initial: 1 } });
  });
  after(() => knex.destroy());

  for (const [koaName, Koa] of Object.entries(koas)) {
    for (const [routerName, Router] of Object.entries(routers)) {
      for (const [parserName, parser] of Object.entries(parsers)) {
        describe(`${koaName} + ${routerName} + ${parserName}`, () => {
          let server: Served;
          let runs = 0;
          before(async () => {
            const scheduler = new TransactionalScheduler(tm);
            scheduler.define('echo', (_job, value: unknown) => value);
            const router = new Router<Koa3.DefaultState, AftercommitContext>();
            router.post('/orders/:id', async (ctx) => {
              runs++;
              await ctx.db.raw('select 1');
              if (runs === 1) throw new ConflictError();
              ctx.body = { id: ctx.params.id, received: (ctx.request as { body?: unknown }).body, attempt: ctx.transaction.attempt, job: ctx.scheduler.schedule('echo', 1) };
            });
            const app = new Koa();
            app.silent = true;
            app.use(parser());
            app.use(aftercommit({ manager: tm, scheduler }, router.routes(), router.allowedMethods(), jobRoutes()));
            server = await serve(app);
          });
          after(() => server.close());

          it('retries a JSON POST with its parsed body, then polls its job', async () => {
            const response = await request(`${server.url}/orders/7`, {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify({ quantity: 2 }),
            });
            assert.equal(response.status, 200);
            const body = response.body as { id: string; received: unknown; attempt: number; job: string };
            assert.deepEqual({ ...body, job: undefined }, { id: '7', received: { quantity: 2 }, attempt: 2, job: undefined });
            const polled = await request(`${server.url}/jobs/${body.job}`);
            assert.equal(polled.status, 200);
            assert.equal(runs, 2);
          });
        });
      }
    }
  }
});
