/**
 * 40 concurrent transfer requests over real HTTP between two rows, half in each
 * lock order, through Koa, Express 5 and Express 4: real deadlocks, every
 * request still answers 200, the money is conserved, and the retries are
 * visible in the log and in onRetry.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import Koa from 'koa';
import Router from '@koa/router';
import type { Knex } from 'knex';
import { TransactionManager, type RetryEvent, type Transaction } from '../../lib/index.js';
import * as koa from '../../lib/koa/index.js';
import * as express from '../../lib/express/index.js';
import { eachDialect } from '../support/databases.js';
import { recordingLogger } from '../support/helpers.js';
import { request, serve, type Served } from '../support/http.js';
import { frameworks } from './frameworks.js';

/** One transfer: the first row's lock held a moment, so that the opposite request takes its own meanwhile. */
async function transfer(db: Knex.Transaction, accounts: string, { from, to, amount }: Record<string, string>): Promise<void> {
  await db(accounts).where({ id: from }).decrement('balance', Number(amount));
  await sleep(5);
  await db(accounts).where({ id: to }).increment('balance', Number(amount));
}

const ROUTE = '/transfer/:from/:to/:amount';
type OnRetry = (event: RetryEvent, path: string) => void;
/** An app answering ROUTE with `{ attempt }` after `transfer`, under aftercommit with `retries: 60`. */
type TransferApp = (tm: TransactionManager, accounts: string, onRetry: OnRetry) => Promise<Served>;

const FRAMEWORKS = frameworks<TransferApp>(
  (tm, accounts, onRetry) => {
    const router = new Router<Koa.DefaultState, koa.AftercommitContext>();
    router.post(ROUTE, async (ctx) => {
      await transfer(ctx.db, accounts, ctx.params);
      ctx.body = { attempt: ctx.transaction.attempt };
    });
    const app = new Koa();
    app.silent = true;
    app.use(koa.aftercommit({ manager: tm, retries: 60, onRetry: (event, ctx) => onRetry(event, ctx.path) }, router.routes()));
    return serve(app);
  },
  (version) => (tm, accounts, onRetry) => {
    const router = version.router();
    router.post(ROUTE, (req, res, next) => {
      const { db, transaction } = req as express.AftercommitRequest;
      transfer(db, accounts, req.params)
        .then(() => res.json({ attempt: (transaction as Transaction).attempt }))
        .catch(next); // Express 4's router ignores rejected promises
    });
    const app = version.app();
    app.use(express.aftercommit({ manager: tm, retries: 60, onRetry: (event, req) => onRetry(event, req.path) }, router));
    return serve(app);
  },
);

eachDialect(
  'concurrent transfers',
  (database) => {
    let knex: Knex;
    let accounts: string;
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
    });

    for (const [framework, transferApp] of FRAMEWORKS) {
      describe(framework, () => {
        let server: Served;
        const logger = recordingLogger();
        const retries: string[] = [];
        before(async () => {
          await knex(accounts).delete();
          await knex(accounts).insert([
            { id: 1, balance: 1000 },
            { id: 2, balance: 1000 },
          ]);
          // 20 opposite-order pairs on two rows is contention at its worst. Escalation keeps it to about two
          // attempts a request (test/koa/contention.test.ts holds that at the defaults); this test is about
          // retrying and conserving money, not an attempt budget.
          server = await transferApp(new TransactionManager(knex, { logger }), accounts, (event, path) => retries.push(`${path} after attempt ${event.attempt}`));
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
          const attempts = responses.map((r) => (r.body as { attempt: number }).attempt);
          const retried = attempts.filter((attempt) => attempt > 1).length;
          assert.ok(retried > 0, 'there were deadlocks to retry');
          assert.ok(retries.length >= retried);
          const logged = logger.lines.filter((l) => l.level === 'warn' && /^retrying POST \/transfer\/\d\/\d\/\d+ after /.test(l.msg));
          assert.equal(logged.length, retries.length);
          console.log(`# ${database.name}, ${framework}: ${retries.length} retries over 40 requests, ${retried} requests retried, at most ${Math.max(...attempts)} attempts`);
        });
      });
    }
  },
  ['mysql', 'postgres'],
);
