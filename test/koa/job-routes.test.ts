/**
 * jobRoutes with the in-memory scheduler over real HTTP: the owner polls a job
 * from pending (with progress) to done; anyone else, anonymous callers, unknown
 * and malformed ids get the same 404; a result is consumed by the poll that
 * returns it; a schedule made without a user is readable with its id.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import Koa from 'koa';
import Router from '@koa/router';
import type { Knex } from 'knex';
import { TransactionManager, TransactionalScheduler, ref, type JobHandle, type PersistentContext } from '../../lib/index.js';
import { aftercommit, jobRoutes, type AftercommitContext } from '../../lib/koa/index.js';
import { eachDialect } from '../support/databases.js';
import { deferred, recordingLogger, until } from '../support/helpers.js';
import { request, serve, type Served } from '../support/http.js';

eachDialect('jobRoutes', (database) => {
  let knex: Knex;
  let users: string;
  let server: Served;
  let scheduler: TransactionalScheduler;
  const gates = new Map<string, ReturnType<typeof deferred<void>>>();

  before(async () => {
    knex = database.knex();
    users = database.table('users');
    await knex.schema.createTable(users, (t) => {
      t.string('id').primary();
      t.integer('orders').notNullable();
    });
    await knex(users).insert([
      { id: 'alice', orders: 3 },
      { id: 'bob', orders: 5 },
    ]);
    const tm = new TransactionManager(knex, { logger: recordingLogger() });
    scheduler = new TransactionalScheduler(tm, { entities: { [users]: { id: 'string' } } }); // ids are names
    scheduler.define('report', async (job: JobHandle, context: PersistentContext, label: string) => {
      await job.progress(0.5, 'half way');
      await gates.get(label)!.promise;
      const user = context.length ? await context.get<{ orders: number }>(0) : undefined;
      return { label, orders: user?.orders ?? null, for: job.meta.user ?? null };
    });

    const router = new Router<Koa.DefaultState, AftercommitContext>();
    router.post('/reports/:label', (ctx) => {
      gates.set(ctx.params.label!, deferred());
      const user = ctx.state.user?.id;
      const context = user ? ctx.persistentContext([ref(users, user)]) : ctx.persistentContext();
      ctx.status = 202;
      ctx.body = { id: ctx.scheduler.schedule('report', context, ctx.params.label) };
    });
    const app = new Koa();
    app.silent = true;
    app.use(async (ctx, next) => {
      if (ctx.get('X-User')) ctx.state.user = { id: ctx.get('X-User') };
      await next();
    });
    app.use(aftercommit({ manager: tm, scheduler }, router.routes(), jobRoutes({ prefix: '/jobs' })));
    server = await serve(app);
  });
  after(() => server.close());

  const poll = (id: string, user?: string) => request(`${server.url}/jobs/${id}`, { headers: user ? { 'X-User': user } : {} });
  const schedule = async (label: string, user?: string) => {
    const response = await request(`${server.url}/reports/${label}`, { method: 'POST', headers: user ? { 'X-User': user } : {} });
    assert.equal(response.status, 202);
    return (response.body as { id: string }).id;
  };
  const notFound = { status: 404, body: { error: 'no such job' } };
  /** Whether the job still runs, asked without a poll (which would consume a finished result). */
  const running = async (id: string) => (await scheduler.getResult(id)).state === 'pending';
  const brief = (r: { status: number; body: unknown }) => ({ status: r.status, body: r.body });

  it('the owner polls pending → done; others, anonymous, unknown and malformed ids get 404', async () => {
    const id = await schedule(`a-${database.name}`, 'alice');
    await until(async () => (await poll(id, 'alice')).body.progress !== undefined);
    assert.deepEqual(brief(await poll(id, 'alice')), {
      status: 200,
      body: { id, state: 'pending', progress: { fraction: 0.5, message: 'half way' } },
    });
    assert.deepEqual(brief(await poll(id, 'bob')), notFound);
    assert.deepEqual(brief(await poll(id)), notFound);
    assert.deepEqual(brief(await poll('0123456789abcdef0123456789abcdef', 'alice')), notFound);
    for (const malformed of ['abc', id.toUpperCase(), `${id}0`, '%2e%2e%2fetc', "1' OR '1'='1"]) {
      assert.deepEqual(brief(await poll(encodeURIComponent(malformed), 'alice')), notFound, malformed);
    }

    gates.get(`a-${database.name}`)!.resolve();
    // HEAD (a link preview, a monitor) answers without consuming the result.
    await until(async () => (await running(id)) === false);
    const head = await fetch(`${server.url}/jobs/${id}`, { method: 'HEAD', headers: { 'X-User': 'alice' } });
    assert.equal(head.status, 200);
    let done: Awaited<ReturnType<typeof request>>;
    await until(async () => (done = await poll(id, 'alice')).body.state !== 'pending');
    assert.deepEqual(brief(done!), { status: 200, body: { id, state: 'done', value: { label: `a-${database.name}`, orders: 3, for: 'alice' } } });
    assert.equal(done!.status, 200);
    assert.equal(done!.headers.get('cache-control'), 'no-store');
    assert.deepEqual(brief(await poll(id, 'alice')), notFound, 'the result was consumed by the poll that returned it');
  });

  it('interleaved users polling their own jobs each see only theirs', async () => {
    const owners = ['alice', 'bob', 'alice', 'bob', 'alice', 'bob'];
    const ids = await Promise.all(owners.map((user, i) => schedule(`m-${database.name}-${i}`, user)));
    for (const [i] of owners.entries()) gates.get(`m-${database.name}-${i}`)!.resolve();
    await Promise.all(
      ids.map(async (id, i) => {
        const other = owners[i] === 'alice' ? 'bob' : 'alice';
        assert.deepEqual(brief(await poll(id, other)), notFound);
        let response: { status: number; body: { state?: string; value?: unknown } };
        await until(async () => (response = await poll(id, owners[i])).body.state === 'done');
        assert.deepEqual(response!.body.value, { label: `m-${database.name}-${i}`, orders: owners[i] === 'alice' ? 3 : 5, for: owners[i] });
      }),
    );
  });

  it('a schedule made with no user is readable by whoever holds its id', async () => {
    const id = await schedule(`anon-${database.name}`);
    assert.equal((await poll(id)).status, 200, 'anonymous');
    assert.equal((await poll(id, 'bob')).status, 200, 'any user');
    gates.get(`anon-${database.name}`)!.resolve();
    let response: { status: number; body: { state?: string; value?: unknown } };
    await until(async () => (response = await poll(id, 'bob')).body.state === 'done');
    assert.deepEqual(response!.body.value, { label: `anon-${database.name}`, orders: null, for: null });
  });
});
