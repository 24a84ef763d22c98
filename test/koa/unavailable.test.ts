/**
 * A database that cannot be reached: the request fails at once with 503 and
 * Retry-After, the driver's error as cause, instead of a 500 or a hang.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import Koa from 'koa';
import knexFactory, { type Knex } from 'knex';
import { TransactionManager } from '../../lib/index.js';
import { aftercommit } from '../../lib/koa/index.js';
import { recordingLogger } from '../support/helpers.js';
import { request, serve, type Served } from '../support/http.js';

let knex: Knex;
let server: Served;
const errors: Error[] = [];

before(async () => {
  // Nothing listens on port 9 (discard) on this machine: every connection is refused.
  knex = knexFactory({ client: 'mysql2', connection: 'mysql://root@127.0.0.1:9/test', log: { warn() {}, error() {}, debug() {}, deprecate() {} } });
  const tm = new TransactionManager(knex, { logger: recordingLogger() });
  const app = new Koa();
  app.silent = true;
  app.on('error', (err: Error) => errors.push(err));
  app.use(aftercommit({ manager: tm, retryAfter: 5 }, async (ctx) => {
    ctx.body = await ctx.db.raw('select 1');
  }));
  server = await serve(app);
});
after(async () => {
  await server.close();
  await knex.destroy();
});

it('answers 503 with Retry-After when the database refuses connections', async () => {
  const response = await request(server.url);
  assert.equal(response.status, 503);
  assert.equal(response.headers.get('retry-after'), '5');
  assert.equal(response.body, 'the database is unavailable; please try again shortly');
  assert.equal(errors[0]!.name, 'DatabaseUnavailableError');
  assert.equal((errors[0]!.cause as { code?: string }).code, 'ECONNREFUSED');
});
