/**
 * aftercommit over real HTTP: one transaction per request, committed before the
 * response, rolled back on errors, 5xx and setRollbackOnly(), the whole handler
 * re-run on conflict with a clean response, no transaction for requests that do
 * not touch the database, and interleaved requests that never see each other's
 * transaction or metadata.
 */
import { after, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import Koa from 'koa';
import Router from '@koa/router';
import type { Knex } from 'knex';
import { ConflictError, TransactionManager } from '../../lib/index.js';
import { aftercommit, type AftercommitContext } from '../../lib/koa/index.js';
import { eachDialect } from '../support/databases.js';
import { recordingLogger } from '../support/helpers.js';
import { request, serve, type Served } from '../support/http.js';

eachDialect('aftercommit: one transaction per request', (database) => {
  let knex: Knex;
  let notes: string;
  let tm: TransactionManager;
  let server: Served;
  let sent: string[] = [];

  before(async () => {
    knex = database.knex();
    notes = database.table('notes');
    await knex.schema.createTable(notes, (t) => {
      t.increments('id');
      t.string('text').notNullable();
      t.string('user');
    });
    knex.on('query', (q: { sql: string }) => sent.push(q.sql));
    tm = new TransactionManager(knex, { logger: recordingLogger(), delay: { initial: 1 } });

    const router = new Router<Koa.DefaultState, AftercommitContext>();
    const attempts = new Map<string, number>();
    const attempt = (ctx: Koa.Context) => {
      const key = ctx.get('X-Test-Key') || ctx.path;
      attempts.set(key, (attempts.get(key) ?? 0) + 1);
      return attempts.get(key)!;
    };
    router.get('/untouched', (ctx) => {
      ctx.body = { touched: false, began: ctx.transaction.began };
    });
    router.post('/write', async (ctx) => {
      await ctx.db(notes).insert({ text: 'committed' });
      ctx.body = { ok: true };
    });
    router.post('/write-then-throw', async (ctx) => {
      await ctx.db(notes).insert({ text: 'write-then-throw' });
      throw new Error('handler failure');
    });
    router.post('/set-500', async (ctx) => {
      await ctx.db(notes).insert({ text: 'set-500' });
      ctx.status = 502;
      ctx.body = { upstream: 'down' };
    });
    router.post('/rollback-only', async (ctx) => {
      await ctx.db(notes).insert({ text: 'rollback-only' });
      ctx.transaction.setRollbackOnly();
      ctx.body = { ok: false, reason: 'validation failed' };
    });
    router.post('/conflict-once', async (ctx) => {
      const n = attempt(ctx);
      (ctx.state.trail as number[]).push(n);
      await ctx.db(notes).insert({ text: `conflict-once attempt ${n}` });
      if (n === 1) {
        ctx.status = 201;
        ctx.set('X-First-Attempt', 'yes');
        ctx.body = { attempt: n };
        throw new ConflictError('stale version');
      }
      ctx.body = { attempt: n, trail: ctx.state.trail };
    });
    router.post('/null-body-then-conflict', async (ctx) => {
      const n = attempt(ctx);
      if (n === 1) {
        ctx.body = null; // 204, and Koa marks status and null body as explicit
        throw new ConflictError();
      }
      ctx.body = 'second attempt';
    });
    router.get('/whoami', async (ctx) => {
      const seen = [];
      for (let i = 0; i < 3; i++) {
        await sleep(Math.random() * 5);
        seen.push(tm.current === ctx.transaction);
      }
      const viaService = await recordNote(`seen by ${ctx.state.user.id}`);
      ctx.body = {
        user: ctx.transaction.meta.user,
        note: ctx.transaction.meta.note,
        requestId: ctx.transaction.meta.extension?.requestId,
        sameTransactionEverywhere: seen.every(Boolean) && viaService === ctx.transaction,
      };
    });
    /** A service deep in the call chain: finds the request's transaction without being passed it. */
    const recordNote = tm.wrap(async function recordNote(text: string) {
      await tm.current!.db(notes).insert({ text, user: String(tm.current!.meta.user) });
      return tm.current;
    });

    const app = new Koa();
    app.silent = true;
    app.use(async (ctx, next) => {
      ctx.state.trail = [0];
      const user = ctx.get('X-User');
      if (user) ctx.state.user = { id: user };
      await next();
    });
    app.use(aftercommit({ manager: tm }, router.routes(), router.allowedMethods()));
    app.use((ctx) => {
      // After the commit: what middleware behind aftercommit gets from ctx.db.
      if (ctx.path !== '/db-after-commit') return;
      try {
        ctx.body = { db: typeof ctx.db };
      } catch (err) {
        ctx.body = { name: (err as Error).name, message: (err as Error).message };
      }
    });
    server = await serve(app);
  });

  after(() => server.close());
  beforeEach(async () => {
    await knex(notes).delete();
    sent = [];
  });

  const texts = async () => (await knex(notes).orderBy('id')).map((r: { text: string }) => r.text);

  it('commits a request that succeeds, before the response is sent', async () => {
    const response = await request(`${server.url}/write`, { method: 'POST' });
    assert.equal(response.status, 200);
    assert.deepEqual(await texts(), ['committed']); // visible as soon as the response arrived
    assert.match(response.headers.get('x-request-id')!, /^[0-9a-f]{12}-[0-9a-z]+$/);
  });

  it('ctx.db in middleware after aftercommit (after the commit) throws TransactionEndedError', async () => {
    const response = await request(`${server.url}/db-after-commit`);
    assert.deepEqual(response.body, {
      name: 'TransactionEndedError',
      message:
        'ctx.db after the request’s commit: this transaction has already ended. Use tm.current (or ctx.transaction) inside tm.run() instead of keeping a transaction past its end.',
    });
  });

  it('takes no connection and sends no BEGIN for a request that never touches ctx.db', async () => {
    const response = await request(`${server.url}/untouched`);
    assert.deepEqual(response.body, { touched: false, began: false });
    assert.deepEqual(sent, []);
  });

  describe('rolls back', () => {
    it('when the handler throws: 500, nothing committed', async () => {
      const response = await request(`${server.url}/write-then-throw`, { method: 'POST' });
      assert.equal(response.status, 500);
      assert.deepEqual(await texts(), []);
    });

    it('when the handler sets a 5xx status without throwing: the response as set, nothing committed', async () => {
      const response = await request(`${server.url}/set-500`, { method: 'POST' });
      assert.equal(response.status, 502);
      assert.deepEqual(response.body, { upstream: 'down' });
      assert.deepEqual(await texts(), []);
    });

    it('after setRollbackOnly(): the response as the handler set it, nothing committed', async () => {
      const response = await request(`${server.url}/rollback-only`, { method: 'POST' });
      assert.equal(response.status, 200);
      assert.deepEqual(response.body, { ok: false, reason: 'validation failed' });
      assert.deepEqual(await texts(), []);
    });
  });

  describe('a conflict re-runs the whole handler', () => {
    it('the retried response carries only what the second attempt set; ctx.state is as before the first', async () => {
      const response = await request(`${server.url}/conflict-once`, {
        method: 'POST',
        headers: { 'X-Test-Key': `c-${database.name}`, 'X-Request-Id': 'req-42' },
      });
      assert.equal(response.status, 200, 'not the 201 of the first attempt');
      assert.equal(response.headers.get('x-first-attempt'), null);
      assert.equal(response.headers.get('x-request-id'), 'req-42');
      assert.deepEqual(response.body, { attempt: 2, trail: [0, 2] });
      assert.deepEqual(await texts(), ['conflict-once attempt 2']);
    });

    it('Koa’s explicit-status flags do not leak into the next attempt', async () => {
      const response = await request(`${server.url}/null-body-then-conflict`, {
        method: 'POST',
        headers: { 'X-Test-Key': `n-${database.name}` },
      });
      assert.equal(response.status, 200, 'not the 204 the first attempt made explicit');
      assert.equal(response.body, 'second attempt');
      assert.match(response.headers.get('content-type')!, /^text\/plain/);
    });
  });

  it('interleaved requests never see each other’s transaction or metadata', async () => {
    const users = Array.from({ length: 30 }, (_, i) => `user-${i}`);
    const responses = await Promise.all(
      users.map((user, i) =>
        request(`${server.url}/whoami`, { headers: { 'X-User': user, 'X-Request-Id': `rid-${i}` } }),
      ),
    );
    for (const [i, response] of responses.entries()) {
      assert.equal(response.status, 200);
      assert.deepEqual(response.body, {
        user: users[i],
        note: 'GET /whoami',
        requestId: `rid-${i}`,
        sameTransactionEverywhere: true,
      });
    }
    const rows = (await knex(notes)) as { text: string; user: string }[];
    assert.equal(rows.length, 30);
    for (const row of rows) assert.equal(row.text, `seen by ${row.user}`);
  });
});
