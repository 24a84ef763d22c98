/**
 * A request that hangs while it holds row locks is ended from outside: at its
 * deadline (aftercommit's `timeout`) the client gets 503 and the transaction is
 * rolled back; when the client goes away before the commit, the transaction is
 * rolled back at once (unless `commitWhenClientGone`). Real HTTP, real locks.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import Koa from 'koa';
import type { Knex } from 'knex';
import { TransactionManager } from '../../lib/index.js';
import { aftercommit, type AftercommitOptions } from '../../lib/koa/index.js';
import { eachDialect } from '../support/databases.js';
import { deferred, recordingLogger, until } from '../support/helpers.js';
import { request, serve, type Served } from '../support/http.js';

eachDialect(
  'hung requests',
  (database) => {
    let knex: Knex;
    let admin: Knex;
    let rows: string;
    const servers: Served[] = [];
    before(async () => {
      knex = database.knex();
      admin = database.knex({ pool: { min: 0, max: 1 } });
      rows = database.table('hung_request_rows');
      await knex.schema.createTable(rows, (t) => {
        t.integer('id').primary();
        t.integer('n').notNullable();
      });
      await knex(rows).insert({ id: 1, n: 0 });
    });
    after(() => Promise.all(servers.map((s) => s.close())));

    /** An app whose handler takes the row's lock, then waits for `release` (or forever). */
    async function app(options: Partial<AftercommitOptions>, release: Promise<void> = new Promise(() => undefined)) {
      const seen = { locked: deferred(), aborted: undefined as unknown, finished: false };
      const koa = new Koa();
      koa.silent = true;
      koa.use(
        aftercommit({ manager: new TransactionManager(knex, { logger: recordingLogger() }), ...options }, async (ctx) => {
          await ctx.db(rows).where({ id: 1 }).increment('n', 1);
          ctx.transaction.signal.addEventListener('abort', () => (seen.aborted = ctx.transaction.signal.reason));
          seen.locked.resolve();
          await release;
          seen.finished = true;
          ctx.body = 'done';
        }),
      );
      const served = await serve(koa);
      servers.push(served);
      return { url: served.url, seen };
    }

    /** The row is free: an update from another connection goes through (a held lock would fail it after 2 s). */
    async function rowIsFree(): Promise<number> {
      return admin.transaction(async (trx) => {
        if (database.name === 'mysql') await trx.raw('SET SESSION innodb_lock_wait_timeout = 2');
        if (database.name === 'postgres') await trx.raw("SET LOCAL lock_timeout = '2s'");
        await trx(rows).where({ id: 1 }).update({ n: 0 });
        return 0;
      });
    }

    it('past its timeout: 503 with what happened, the transaction rolled back, the handler told', async () => {
      const { url, seen } = await app({ timeout: 300 });
      const response = await request(`${url}/`);
      assert.equal(response.status, 503);
      assert.match(String(response.body), /the request took longer than 300 ms; it was stopped and nothing of it is committed/);
      assert.equal((seen.aborted as Error).name, 'RequestTimeoutError');
      await rowIsFree();
      assert.equal((await knex(rows).first('n')).n, 0);
    });

    it('a client that goes away: the transaction is rolled back at once, even though the handler still waits', async () => {
      const release = deferred();
      const { url, seen } = await app({ timeout: 0 }, release.promise);
      const client = new AbortController();
      const sent = fetch(`${url}/`, { signal: client.signal }).catch(() => undefined);
      await seen.locked.promise;
      client.abort();
      await sent;
      await until(() => seen.aborted !== undefined, 10_000, 'the handler to be told');
      assert.equal((seen.aborted as Error).name, 'ClientGoneError');
      await rowIsFree();
      release.resolve();
      await until(() => seen.finished, 10_000, 'the handler to return');
      assert.equal((await knex(rows).first('n')).n, 0, 'nothing of it committed, even after the handler returned');
    });

    it('commitWhenClientGone: the old behaviour, the request commits after its client left', async () => {
      const release = deferred();
      const { url, seen } = await app({ timeout: 0, commitWhenClientGone: true }, release.promise);
      const client = new AbortController();
      const sent = fetch(`${url}/`, { signal: client.signal }).catch(() => undefined);
      await seen.locked.promise;
      client.abort();
      await sent;
      release.resolve();
      await until(async () => (await knex(rows).first('n')).n === 1, 10_000, 'the request to commit');
      assert.equal(seen.aborted, undefined);
      await knex(rows).update({ n: 0 });
    });

    it('refuses a timeout that is not a whole number of ms', () => {
      const manager = new TransactionManager(knex, { logger: recordingLogger() });
      for (const timeout of [-1, 1.5, Infinity, 2 ** 31, '300' as unknown as number]) {
        assert.throws(() => aftercommit({ manager, timeout }), {
          name: 'TypeError',
          message: `aftercommit(options): timeout must be an integer from 0 to 2147483647, got ${timeout}`,
        });
      }
    });
  },
  ['mysql', 'postgres'],
);
