/**
 * 40 concurrent transfer requests over real HTTP between two rows, half in each
 * lock order: real deadlocks, every request still answers 200, the money is
 * conserved, and the retries are visible in the log and in onRetry.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import Koa from 'koa';
import Router from '@koa/router';
import type { Knex } from 'knex';
import { TransactionManager } from '../../lib/index.js';
import { aftercommit, type AftercommitContext } from '../../lib/koa/index.js';
import { eachDialect } from '../support/databases.js';
import { recordingLogger } from '../support/helpers.js';
import { request, serve, type Served } from '../support/http.js';

eachDialect(
  'concurrent transfers through Koa',
  (database) => {
    let knex: Knex;
    let accounts: string;
    let server: Served;
    const logger = recordingLogger();
    const retries: string[] = [];

    before(async () => {
      // PostgreSQL looks for deadlocks after deadlock_timeout (1 s by default); shorten it for the test.
      const pool =
        database.name === 'postgres'
          ? { min: 0, max: 45, afterCreate: (conn: { query(sql: string, cb: (err: unknown) => void): void }, done: (err: unknown, conn: unknown) => void) => conn.query("SET deadlock_timeout = '50ms'", (err) => done(err, conn)) }
          : { min: 0, max: 45 };
      knex = database.knex({ pool });
      accounts = database.table('accounts');
      await knex.schema.createTable(accounts, (t) => {
        t.integer('id').primary();
        t.integer('balance').notNullable();
      });
      await knex(accounts).insert([
        { id: 1, balance: 1000 },
        { id: 2, balance: 1000 },
      ]);
      const tm = new TransactionManager(knex, { logger });
      const router = new Router<Koa.DefaultState, AftercommitContext>();
      router.post('/transfer/:from/:to/:amount', async (ctx) => {
        const { from, to } = ctx.params;
        const amount = Number(ctx.params.amount);
        await ctx.db(accounts).where({ id: from }).decrement('balance', amount);
        await sleep(5); // hold the first lock while the opposite request takes its own
        await ctx.db(accounts).where({ id: to }).increment('balance', amount);
        ctx.body = { attempt: ctx.transaction.attempt };
      });
      const app = new Koa();
      app.silent = true;
      // 20 opposite-order pairs on two rows is contention at its worst. Escalation keeps it to about two
      // attempts a request (test/koa/contention.test.ts holds that at the defaults); this test is about
      // retrying and conserving money, not an attempt budget.
      app.use(aftercommit({ manager: tm, retries: 60, onRetry: (event, ctx) => retries.push(`${ctx.path} after attempt ${event.attempt}`) }, router.routes()));
      server = await serve(app);
    });
    after(() => server.close());

    it('all 40 answer 200 and the money is conserved; the retries are logged', async () => {
      const transfers = Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? `/transfer/1/2/${i + 1}` : `/transfer/2/1/${i + 1}`));
      const responses = await Promise.all(transfers.map((path) => request(server.url + path, { method: 'POST' })));
      assert.deepEqual(
        responses.map((r) => r.status),
        transfers.map(() => 200),
      );
      const moved = transfers.reduce((sum, path, i) => sum + (path.startsWith('/transfer/1/2') ? -(i + 1) : i + 1), 0);
      const rows = (await knex(accounts).orderBy('id')) as { balance: number }[];
      assert.deepEqual(
        rows.map((r) => r.balance),
        [1000 + moved, 1000 - moved],
      );
      const retried = responses.filter((r) => (r.body as { attempt: number }).attempt > 1).length;
      assert.ok(retried > 0, 'there were deadlocks to retry');
      assert.ok(retries.length >= retried);
      const logged = logger.lines.filter((l) => l.level === 'warn' && /^retrying POST \/transfer\/\d\/\d\/\d+ after /.test(l.msg));
      assert.equal(logged.length, retries.length);
      const most = Math.max(...responses.map((r) => (r.body as { attempt: number }).attempt));
      console.log(`# ${database.name}: ${retries.length} retries over 40 requests, ${retried} requests retried, at most ${most} attempts`);
    });
  },
  ['mysql', 'postgres'],
);
