/**
 * When a request cannot be run again safely, a conflict surfaces as a clear
 * error instead of a silent second execution; when it can (a body parser before
 * aftercommit), it is retried; when retries run out, 503 with Retry-After.
 */
import { after, before, beforeEach, it } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import Koa from 'koa';
import Router from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import type { Knex } from 'knex';
import { ConflictError, TransactionManager } from '../../lib/index.js';
import { aftercommit, type AftercommitContext } from '../../lib/koa/index.js';
import { eachDialect } from '../support/databases.js';
import { recordingLogger, until } from '../support/helpers.js';
import { request, serve, type Served } from '../support/http.js';

eachDialect(
  'retrying a request only when it is safe',
  (database) => {
    let knex: Knex;
    let notes: string;
    let server: Served;
    let runs: Map<string, number>;
    let errors: Error[];
    const logger = recordingLogger();

    before(async () => {
      knex = database.knex();
      notes = database.table('notes');
      await knex.schema.createTable(notes, (t) => {
        t.increments('id');
        t.string('text').notNullable();
      });
      const tm = new TransactionManager(knex, { logger, delay: { initial: 1 } });
      const router = new Router<Koa.DefaultState, AftercommitContext>();
      /** Counts the runs of a handler, writes a row, and conflicts on the first run. */
      const conflicting = (path: string, before: (ctx: Koa.Context) => unknown | Promise<unknown>) =>
        router.all(path, async (ctx) => {
          runs.set(path, (runs.get(path) ?? 0) + 1);
          await ctx.db(notes).insert({ text: `${path} run ${runs.get(path)}` });
          await before(ctx);
          if (runs.get(path) === 1) throw new ConflictError('stale');
        });
      conflicting('/headers-sent', (ctx) => {
        ctx.status = 200;
        ctx.res.flushHeaders();
      });
      conflicting('/respond-false', (ctx) => {
        ctx.respond = false;
        ctx.res.end('written by hand');
      });
      conflicting('/stream-body', (ctx) => {
        ctx.body = Readable.from(['a', 'b']);
      });
      conflicting('/raw-body', async (ctx) => {
        for await (const chunk of ctx.req) void chunk; // read, not kept
        ctx.body = 'read it';
      });
      conflicting('/raw-body-partly', async (ctx) => {
        await new Promise((resolve) => ctx.req.once('data', resolve)); // one chunk of many, not kept
        ctx.req.pause();
        setTimeout(() => ctx.req.resume(), 200); // later, so that the connection can serve the next request
        ctx.body = 'read a part';
      });
      conflicting('/parsed-body', (ctx) => {
        ctx.body = { received: (ctx.request as { body?: unknown }).body };
      });
      router.post('/always-conflicts', async (ctx) => {
        runs.set('/always-conflicts', (runs.get('/always-conflicts') ?? 0) + 1);
        await ctx.db(notes).insert({ text: 'never kept' });
        throw new ConflictError('every time');
      });

      const app = new Koa();
      app.silent = true;
      app.on('error', (err: Error) => errors.push(err));
      app.use(bodyParser());
      app.use(aftercommit({ manager: tm, retries: 2, retryAfter: 3 }, router.routes()));
      server = await serve(app);
    });
    after(() => server.close());
    beforeEach(async () => {
      runs = new Map();
      errors = [];
      await knex(notes).delete();
    });

    const texts = async () => (await knex(notes).orderBy('id')).map((r: { text: string }) => r.text);

    async function expectNotRetried(path: string, reason: RegExp, init?: RequestInit) {
      await fetch(server.url + path, { method: 'POST', ...init })
        .then((r) => r.text())
        .catch(() => undefined); // the connection is cut when the response had already begun
      // A response written by hand reaches the client before the server is done with the request.
      await until(() => errors.length > 0, 5000, 'the error to surface');
      assert.equal(runs.get(path), 1, 'the handler ran once: no silent second execution');
      assert.deepEqual(errors.map((e) => e.name), ['RetryNotSafeError']);
      assert.equal(errors[0]!.name, 'RetryNotSafeError');
      assert.match(errors[0]!.message, /^the request hit a transient error \(AFTERCOMMIT_CONFLICT: stale\) but is not run again: /);
      assert.match(errors[0]!.message, reason);
      assert.match(errors[0]!.message, /Its transaction was rolled back; nothing of it is committed\.$/);
      assert.deepEqual(await texts(), []);
      assert.ok(logger.lines.some((l) => l.level === 'error' && l.msg.includes(`POST ${path}: the request hit a transient error`)));
    }

    it('headers already sent', () => expectNotRetried('/headers-sent', /the response headers were already sent/));
    it('a response written by hand (ctx.respond = false)', () =>
      expectNotRetried('/respond-false', /the handler wrote the response itself \(ctx.respond = false\)/));
    it('a streaming body', () => expectNotRetried('/stream-body', /the response body is a stream, which cannot be replayed/));
    it('a request body read inside the guarded handlers and not kept', () =>
      expectNotRetried('/raw-body', /the request body was read inside the guarded handlers without being kept/, {
        headers: { 'content-type': 'application/octet-stream' },
        body: 'raw bytes',
      }));

    it('a request body read in part inside the guarded handlers', () =>
      expectNotRetried('/raw-body-partly', /the request body was read inside the guarded handlers without being kept/, {
        headers: { 'content-type': 'application/octet-stream' },
        body: 'x'.repeat(1 << 20),
      }));

    it('a body parsed before aftercommit is safe: the request is retried with the same body', async () => {
      const response = await request(`${server.url}/parsed-body`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ amount: 5 }),
      });
      assert.equal(response.status, 200);
      assert.deepEqual(response.body, { received: { amount: 5 } });
      assert.equal(runs.get('/parsed-body'), 2);
      assert.deepEqual(await texts(), ['/parsed-body run 2']);
    });

    it('retries exhausted: 503 with Retry-After, the original error as cause, logged', async () => {
      const response = await request(`${server.url}/always-conflicts`, { method: 'POST' });
      assert.equal(response.status, 503);
      assert.equal(response.headers.get('retry-after'), '3');
      assert.equal(response.body, 'the database stayed busy (conflicts on 3 attempts); please try again shortly');
      assert.equal(runs.get('/always-conflicts'), 3);
      assert.equal(errors[0]!.name, 'RetriesExhaustedError');
      assert.equal((errors[0]!.cause as Error).name, 'ConflictError');
      assert.ok(logger.lines.some((l) => l.level === 'error' && l.msg === 'POST /always-conflicts: giving up after 3 attempts'));
      assert.deepEqual(await texts(), []);
    });
  },
  ['sqlite', 'mysql'],
);
