/**
 * What aftercommit adds to Koa's context, over real HTTP: without a scheduler,
 * `ctx.scheduler`, `ctx.persistentContext()` and jobRoutes fail where they are
 * used, with an error that says what to pass (and the request's writes roll
 * back); a request that never enters aftercommit has none of them, as Koa's
 * context type declares.
 */
import { after, before, beforeEach, it } from 'node:test';
import assert from 'node:assert/strict';
import Koa from 'koa';
import Router from '@koa/router';
import knexFactory, { type Knex } from 'knex';
import { TransactionManager } from '../../lib/index.js';
import { aftercommit, jobRoutes, type AftercommitContext } from '../../lib/koa/index.js';
import { recordingLogger } from '../support/helpers.js';
import { request, serve, type Served } from '../support/http.js';

const noScheduler = (what: string) => `${what}: aftercommit() was given no scheduler; pass one: aftercommit({ manager, scheduler }, ...middleware)`;

let knex: Knex;
let server: Served;
let errors: Error[] = [];

before(async () => {
  knex = knexFactory({ client: 'better-sqlite3', connection: { filename: ':memory:' }, useNullAsDefault: true });
  await knex.schema.createTable('notes', (t) => {
    t.increments('id');
    t.string('text');
  });
  const tm = new TransactionManager(knex, { logger: recordingLogger() });

  const router = new Router<Koa.DefaultState, AftercommitContext>();
  router.post('/schedule', async (ctx) => {
    await ctx.db('notes').insert({ text: 'written before ctx.scheduler' });
    ctx.body = { id: ctx.scheduler.schedule('report') };
  });
  router.post('/context', async (ctx) => {
    await ctx.db('notes').insert({ text: 'written before ctx.persistentContext' });
    ctx.body = { entities: ctx.persistentContext().length };
  });

  const app = new Koa();
  app.silent = true;
  app.on('error', (err: Error) => errors.push(err));
  app.use(async (ctx, next) => {
    if (ctx.path !== '/outside') return next();
    ctx.body = { db: typeof ctx.db, transaction: typeof ctx.transaction, scheduler: typeof ctx.scheduler, persistentContext: typeof ctx.persistentContext };
  });
  app.use(aftercommit({ manager: tm }, router.routes(), jobRoutes()));
  server = await serve(app);
});
after(async () => {
  await server.close();
  await knex.destroy();
});
beforeEach(() => {
  errors = [];
});

const notes = async () => (await knex('notes').select('text')).map((row: { text: string }) => row.text);

it('ctx.scheduler without a scheduler: 500 with an error saying to pass one, nothing committed', async () => {
  const response = await request(`${server.url}/schedule`, { method: 'POST' });
  assert.equal(response.status, 500);
  assert.deepEqual(errors.map((err) => err.message), [noScheduler('ctx.scheduler')]);
  assert.deepEqual(await notes(), []);
});

it('ctx.persistentContext() without a scheduler: the same, naming ctx.persistentContext', async () => {
  const response = await request(`${server.url}/context`, { method: 'POST' });
  assert.equal(response.status, 500);
  assert.deepEqual(errors.map((err) => err.message), [noScheduler('ctx.persistentContext')]);
  assert.deepEqual(await notes(), []);
});

it('jobRoutes without a scheduler: the same, naming ctx.scheduler', async () => {
  const response = await request(`${server.url}/jobs/${'0'.repeat(32)}`);
  assert.equal(response.status, 500);
  assert.deepEqual(errors.map((err) => err.message), [noScheduler('ctx.scheduler')]);
});

it('a request that never enters aftercommit has no ctx.db, ctx.transaction, ctx.scheduler or ctx.persistentContext', async () => {
  await request(`${server.url}/schedule`, { method: 'POST' }); // aftercommit has installed its getters on the app's context
  const response = await request(`${server.url}/outside`);
  assert.equal(response.status, 200);
  assert.deepEqual(response.body, { db: 'undefined', transaction: 'undefined', scheduler: 'undefined', persistentContext: 'undefined' });
});
