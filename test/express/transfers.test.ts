/**
 * 40 concurrent transfer requests through Express (5 and 4) over real HTTP
 * between two rows, half in each lock order: real deadlocks, every request
 * still answers 200, and the money is conserved.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Knex } from 'knex';
import type { NextFunction, Request, Response } from 'express';
import { TransactionManager } from '../../lib/index.js';
import { aftercommit, type AftercommitRequest } from '../../lib/express/index.js';
import { eachDialect } from '../support/databases.js';
import { recordingLogger } from '../support/helpers.js';
import { request, serve, type Served } from '../support/http.js';
import { EXPRESS_VERSIONS } from './versions.js';

eachDialect(
  'concurrent transfers through Express',
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

    for (const version of EXPRESS_VERSIONS) {
      describe(version.name, () => {
        let server: Served;
        const retries: string[] = [];

        before(async () => {
          await knex(accounts).delete();
          await knex(accounts).insert([
            { id: 1, balance: 1000 },
            { id: 2, balance: 1000 },
          ]);
          const tm = new TransactionManager(knex, { logger: recordingLogger() });
          const router = version.router();
          router.post('/transfer/:from/:to/:amount', (req: Request, res: Response, next: NextFunction) => {
            const r = req as AftercommitRequest;
            (async () => {
              const { from, to } = r.params;
              const amount = Number(r.params.amount);
              await r.db(accounts).where({ id: from }).decrement('balance', amount);
              await sleep(5); // hold the first lock while the opposite request takes its own
              await r.db(accounts).where({ id: to }).increment('balance', amount);
              res.json({ attempt: r.transaction.attempt });
            })().catch(next); // Express 4's router ignores rejected promises
          });
          const app = version.app();
          app.use(aftercommit({ manager: tm, retries: 60, onRetry: (event, req) => retries.push(`${req.path} after attempt ${event.attempt}`) }, router));
          server = await serve(app);
        });
        after(() => server.close());

        it('all 40 answer 200 and the money is conserved', async () => {
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
          console.log(`# ${database.name}, ${version.name}: ${retries.length} retries over 40 requests, ${retried} requests retried`);
        });
      });
    }
  },
  ['mysql', 'postgres'],
);
