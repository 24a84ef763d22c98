/**
 * A request that hangs while it holds a row lock is ended from outside, under
 * Koa, Express 5 and Express 4: at its deadline (aftercommit's `timeout`) the
 * client gets 503 and the transaction is rolled back; when the client goes away
 * before the commit, the transaction is rolled back at once (unless
 * `commitWhenClientGone`). The handler learns it through the transaction's
 * signal, the app's error handler gets the error. Real HTTP, real locks.
 *
 * All three databases (the Koa suite once skipped SQLite; nothing here needs a
 * server): on SQLite the lock held is the database's write lock, which the
 * update in rowIsFree() waits for just as it waits for the row's lock on the
 * servers, up to better-sqlite3's busy timeout (5 s) before it fails.
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import Koa from 'koa';
import type { Knex } from 'knex';
import { TransactionManager, type Transaction } from '../../lib/index.js';
import * as koa from '../../lib/koa/index.js';
import * as express from '../../lib/express/index.js';
import { eachDialect } from '../support/databases.js';
import { deferred, recordingLogger, until } from '../support/helpers.js';
import { request } from '../support/http.js';
import { errorsAsJson, servers } from '../express/support.js';
import { frameworks, koaErrorsAsJson } from './frameworks.js';

/** aftercommit's options these tests vary. */
type HangOptions = Pick<koa.AftercommitOptions & express.AftercommitOptions, 'timeout' | 'commitWhenClientGone'>;
/** The handler's logic, given the request's transaction and response: it ends before the framework answers 'done'. */
type Hold = (db: Knex.Transaction, transaction: Transaction, res: ServerResponse) => Promise<void>;
/** An app that answers every request with `hold`, then 'done', inside aftercommit; its error handler answers as errorsAsJson, into `errors`. */
type HungApp = (tm: TransactionManager, options: HangOptions, hold: Hold, errors: unknown[]) => Parameters<ReturnType<typeof servers>>[0];

interface Framework {
  app: HungApp;
  /** The framework's aftercommit, for its checks of the options. */
  aftercommit(options: HangOptions & { manager: TransactionManager }): unknown;
}

const FRAMEWORKS = frameworks<Framework>(
  {
    app(tm, options, hold, errors) {
      const app = new Koa();
      app.silent = true;
      app.use(koaErrorsAsJson(errors));
      app.use(
        koa.aftercommit({ manager: tm, ...options }, async (ctx) => {
          await hold(ctx.db, ctx.transaction, ctx.res);
          ctx.body = 'done';
        }),
      );
      return app;
    },
    aftercommit: (options) => koa.aftercommit(options),
  },
  (version) => ({
    app(tm, options, hold, errors) {
      const app = version.app();
      app.use(
        express.aftercommit({ manager: tm, ...options }, async (req, res) => {
          await hold(req.db, req.transaction, res);
          res.send('done');
        }),
      );
      app.use(errorsAsJson(errors));
      return app;
    },
    aftercommit: (options) => express.aftercommit(options),
  }),
);

eachDialect('hung requests', (database) => {
  let knex: Knex;
  let admin: Knex;
  let rows: string;
  const serve = servers();
  before(async () => {
    knex = database.knex();
    admin = database.knex({ pool: { min: 0, max: 1 } });
    rows = database.table('hung_rows');
    await knex.schema.createTable(rows, (t) => {
      t.integer('id').primary();
      t.integer('n').notNullable();
    });
  });

  /** The row is free: an update from another connection goes through (a held lock would fail it after 2 s, on SQLite 5 s). */
  async function rowIsFree(id: number): Promise<void> {
    await admin.transaction(async (trx) => {
      if (database.name === 'mysql') await trx.raw('SET SESSION innodb_lock_wait_timeout = 2');
      if (database.name === 'postgres') await trx.raw("SET LOCAL lock_timeout = '2s'");
      await trx(rows).where({ id }).update({ n: 0 });
    });
  }
  const n = async (id: number) => ((await knex(rows).where({ id }).first('n')) as { n: number }).n;
  let lastId = 0;

  for (const [name, framework] of FRAMEWORKS) {
    describe(name, () => {
      /** An app whose handler takes a row of its own's lock, then waits for `release` (or forever) before it answers. */
      async function app(options: HangOptions, release: Promise<void> = new Promise(() => undefined)) {
        const id = ++lastId;
        await knex(rows).insert({ id, n: 0 });
        const seen = { locked: deferred(), aborted: undefined as unknown, clientLeft: false, finished: false, errors: [] as unknown[] };
        const tm = new TransactionManager(knex, { logger: recordingLogger() });
        const hold: Hold = async (db, transaction, res) => {
          res.on('close', () => (seen.clientLeft = !res.writableFinished)); // the server saw the connection go
          await db(rows).where({ id }).increment('n', 1);
          transaction.signal.addEventListener('abort', () => (seen.aborted = transaction.signal.reason));
          seen.locked.resolve();
          await release;
          seen.finished = true;
        };
        const served = await serve(framework.app(tm, options, hold, seen.errors));
        return { id, url: served.url, seen };
      }

      it('past its timeout: 503 with what happened, the transaction rolled back, the handler told through its signal', async () => {
        const { id, url, seen } = await app({ timeout: 300 });
        const response = await request(`${url}/`);
        assert.equal(response.status, 503);
        assert.deepEqual(response.body, {
          error: 'the request took longer than 300 ms; it was stopped and nothing of it is committed',
          name: 'RequestTimeoutError',
          code: 'AFTERCOMMIT_REQUEST_TIMEOUT',
        });
        assert.equal((seen.aborted as Error).name, 'RequestTimeoutError');
        assert.equal(seen.finished, false, 'the handler is still waiting');
        await rowIsFree(id);
        assert.equal(await n(id), 0);
      });

      it('a client that goes away: the transaction is rolled back at once, even though the handler still waits', async () => {
        const release = deferred();
        const { id, url, seen } = await app({ timeout: 0 }, release.promise);
        const client = new AbortController();
        const sent = fetch(`${url}/`, { signal: client.signal }).catch(() => undefined);
        await seen.locked.promise;
        client.abort();
        await sent;
        await until(() => seen.aborted !== undefined, 10_000, 'the handler to be told');
        assert.equal((seen.aborted as Error).name, 'ClientGoneError');
        assert.equal(seen.finished, false);
        await rowIsFree(id); // while the handler still waits
        await until(() => seen.errors.length > 0, 10_000, 'the error to reach the app’s handler');
        assert.deepEqual(
          seen.errors.map((e) => [(e as Error).name, (e as { status: number }).status]),
          [['ClientGoneError', 499]],
        );
        release.resolve();
        await until(() => seen.finished, 10_000, 'the handler to return');
        assert.equal(await n(id), 0, 'nothing of it committed, even after the handler returned');
      });

      it('commitWhenClientGone: the request commits after its client left', async () => {
        const release = deferred();
        const { id, url, seen } = await app({ timeout: 0, commitWhenClientGone: true }, release.promise);
        const client = new AbortController();
        const sent = fetch(`${url}/`, { signal: client.signal }).catch(() => undefined);
        await seen.locked.promise;
        client.abort();
        await sent;
        await until(() => seen.clientLeft, 10_000, 'the server to see the client go');
        release.resolve();
        await until(async () => (await n(id)) === 1, 10_000, 'the request to commit');
        assert.equal(seen.aborted, undefined);
        assert.deepEqual(seen.errors, []);
      });

      it('refuses a timeout that is not a whole number of ms', () => {
        const manager = new TransactionManager(knex, { logger: recordingLogger() });
        for (const timeout of [-1, 1.5, Infinity, 2 ** 31, '300' as unknown as number]) {
          assert.throws(() => framework.aftercommit({ manager, timeout }), {
            name: 'TypeError',
            message: `aftercommit(options): timeout must be an integer from 0 to 2147483647, got ${timeout}`,
          });
        }
      });
    });
  }
});
