/**
 * What aftercommit adds to Koa's context, over real HTTP: without a scheduler,
 * `ctx.scheduler`, `ctx.persistentContext()` and jobRoutes fail where they are
 * used with NoSchedulerError, which says what to pass (and the request's writes
 * roll back); jobRoutes mounted outside aftercommit says where it belongs; a
 * request that never enters aftercommit has none of them, as Koa's context type
 * declares; middleware around aftercommit sees the request's transaction ended.
 */
import { after, before, beforeEach, it } from 'node:test';
import assert from 'node:assert/strict';
import Koa from 'koa';
import Router from '@koa/router';
import knexFactory, { type Knex } from 'knex';
import { AftercommitError, TransactionManager } from '../../lib/index.js';
import { NoSchedulerError, aftercommit, jobRoutes, type AftercommitContext } from '../../lib/koa/index.js';
import { recordingLogger } from '../support/helpers.js';
import { request, serve, type Served } from '../support/http.js';

const noScheduler = (what: string) => `${what}: aftercommit() was given no scheduler; pass one: aftercommit({ manager, scheduler }, ...middleware)`;

let knex: Knex;
let server: Served;
let errors: Error[] = [];
/** What middleware before and after aftercommit saw of ctx.transaction, by request. */
let around: Record<string, unknown> = {};

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
  router.post('/around', async (ctx) => {
    await ctx.db('notes').insert({ text: 'written inside, seen around' });
    if (ctx.query.rollback) ctx.transaction.setRollbackOnly();
    ctx.status = 204;
  });

  const app = new Koa();
  app.silent = true;
  app.on('error', (err: Error) => errors.push(err));
  app.use(async (ctx, next) => {
    if (ctx.path !== '/outside') return next();
    ctx.body = { db: typeof ctx.db, transaction: typeof ctx.transaction, scheduler: typeof ctx.scheduler, persistentContext: typeof ctx.persistentContext };
  });
  app.use(jobRoutes({ prefix: '/unguarded-jobs' })); // mounted outside aftercommit by mistake
  app.use(async (ctx, next) => {
    if (ctx.path !== '/around') return next();
    around.before = typeof ctx.transaction;
    await next();
    around.afterNext = { isOpen: ctx.transaction?.isOpen, rollbackOnly: ctx.transaction?.rollbackOnly };
  });
  app.use(aftercommit({ manager: tm }, router.routes(), jobRoutes()));
  app.use(async (ctx) => {
    if (ctx.path !== '/around') return;
    around.after = { isOpen: ctx.transaction?.isOpen, rollbackOnly: ctx.transaction?.rollbackOnly };
    try {
      void ctx.db;
    } catch (err) {
      around.db = (err as Error).name;
    }
  });
  server = await serve(app);
});
after(async () => {
  await server.close();
  await knex.destroy();
});
beforeEach(async () => {
  errors = [];
  around = {};
  await knex('notes').delete();
});

const notes = async () => (await knex('notes').select('text')).map((row: { text: string }) => row.text);

/** The one error the app reported: a NoSchedulerError naming `what`. */
function assertNoSchedulerError(what: string) {
  assert.equal(errors.length, 1);
  const [err] = errors;
  assert.ok(err instanceof NoSchedulerError && err instanceof AftercommitError);
  assert.equal(err.name, 'NoSchedulerError');
  assert.equal(err.code, 'AFTERCOMMIT_NO_SCHEDULER');
  assert.equal(err.message, noScheduler(what));
}

it('ctx.scheduler without a scheduler: 500 with an error saying to pass one, nothing committed', async () => {
  const response = await request(`${server.url}/schedule`, { method: 'POST' });
  assert.equal(response.status, 500);
  assertNoSchedulerError('ctx.scheduler');
  assert.deepEqual(await notes(), []);
});

it('ctx.persistentContext() without a scheduler: the same, naming ctx.persistentContext', async () => {
  const response = await request(`${server.url}/context`, { method: 'POST' });
  assert.equal(response.status, 500);
  assertNoSchedulerError('ctx.persistentContext');
  assert.deepEqual(await notes(), []);
});

it('jobRoutes without a scheduler: the same, naming ctx.scheduler', async () => {
  const response = await request(`${server.url}/jobs/${'0'.repeat(32)}`);
  assert.equal(response.status, 500);
  assertNoSchedulerError('ctx.scheduler');
});

it('jobRoutes mounted outside aftercommit: 500 with a TypeError saying where it belongs', async () => {
  const response = await request(`${server.url}/unguarded-jobs/${'0'.repeat(32)}`);
  assert.equal(response.status, 500);
  assert.equal(errors.length, 1);
  assert.ok(errors[0] instanceof TypeError);
  assert.match(errors[0].message, /^jobRoutes\(\) must be mounted inside aftercommit\(\{ manager, scheduler \}, \.\.\.\)/);
});

it('a request that never enters aftercommit has no ctx.db, ctx.transaction, ctx.scheduler or ctx.persistentContext', async () => {
  await request(`${server.url}/schedule`, { method: 'POST' }); // aftercommit has installed its getters on the app's context
  const response = await request(`${server.url}/outside`);
  assert.equal(response.status, 200);
  assert.deepEqual(response.body, { db: 'undefined', transaction: 'undefined', scheduler: 'undefined', persistentContext: 'undefined' });
});

it('middleware before aftercommit sees no transaction until next() returns; then, and after aftercommit, it has ended', async () => {
  const response = await request(`${server.url}/around`, { method: 'POST' });
  assert.equal(response.status, 204);
  assert.deepEqual(around, {
    before: 'undefined',
    after: { isOpen: false, rollbackOnly: false },
    db: 'TransactionEndedError',
    afterNext: { isOpen: false, rollbackOnly: false },
  });
  assert.deepEqual(await notes(), ['written inside, seen around']);
});

it('a request that rolled back without throwing reaches the middleware after aftercommit: rollbackOnly tells it', async () => {
  const response = await request(`${server.url}/around?rollback=1`, { method: 'POST' });
  assert.equal(response.status, 204);
  assert.deepEqual(around.after, { isOpen: false, rollbackOnly: true });
  assert.deepEqual(around.afterNext, { isOpen: false, rollbackOnly: true });
  assert.deepEqual(await notes(), []);
});
