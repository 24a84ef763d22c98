/**
 * A database that cannot be reached: the request fails at once with 503 and
 * Retry-After, the driver's error as cause, instead of a 500 or a hang. A request
 * whose turn at the database does not come within knex's acquireConnectionTimeout
 * (ContentionTimeoutError) gets the same answer.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import Koa from 'koa';
import knexFactory, { type Knex } from 'knex';
import { AftercommitError, ConflictError, ContentionTimeoutError, TransactionManager } from '../../lib/index.js';
import { DatabaseUnavailableError, aftercommit } from '../../lib/koa/index.js';
import { deferred, recordingLogger } from '../support/helpers.js';
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
  assert.ok(errors[0] instanceof DatabaseUnavailableError && errors[0] instanceof AftercommitError);
  assert.equal(errors[0].code, 'AFTERCOMMIT_DATABASE_UNAVAILABLE');
  assert.equal((errors[0]!.cause as { code?: string }).code, 'ECONNREFUSED');
});

describe('no turn at the database within acquireConnectionTimeout', () => {
  let memory: Knex;
  let contended: Served;
  const contendedErrors: Error[] = [];
  const holderMayEnd = deferred();
  const holderBegan = deferred();

  before(async () => {
    memory = knexFactory({ client: 'better-sqlite3', connection: { filename: ':memory:' }, useNullAsDefault: true, acquireConnectionTimeout: 200 });
    const tm = new TransactionManager(memory, { logger: recordingLogger() });
    let attempts = 0;
    const app = new Koa();
    app.silent = true;
    app.on('error', (err: Error) => contendedErrors.push(err));
    app.use(
      aftercommit({ manager: tm, retryAfter: 3 }, async (ctx) => {
        if (ctx.path === '/hold') {
          await ctx.db.raw('SELECT 1'); // holds the only turn while a conflict has lowered the limit
          holderBegan.resolve();
          await holderMayEnd.promise;
          ctx.body = 'held';
          return;
        }
        // Its first attempt conflicts; the second, escalated, must run alone and waits for the holder.
        if (++attempts === 1) throw new ConflictError('the first attempt collides');
        ctx.body = await ctx.db.raw('SELECT 1');
      }),
    );
    contended = await serve(app);
  });
  after(async () => {
    holderMayEnd.resolve();
    await contended.close();
    await memory.destroy();
  });

  it('ContentionTimeoutError: 503 with Retry-After, as DatabaseUnavailableError with the ContentionTimeoutError as cause', async () => {
    const holding = request(`${contended.url}/hold`);
    await holderBegan.promise;
    const response = await request(`${contended.url}/wait`);
    assert.equal(response.status, 503);
    assert.equal(response.headers.get('retry-after'), '3');
    assert.equal(response.body, 'the database is unavailable; please try again shortly');
    assert.equal(contendedErrors.length, 1);
    const [err] = contendedErrors;
    assert.ok(err instanceof DatabaseUnavailableError);
    assert.ok(err.cause instanceof ContentionTimeoutError, `cause: ${String(err.cause)}`);
    assert.equal(err.cause.code, 'AFTERCOMMIT_CONTENTION_TIMEOUT');
    holderMayEnd.resolve();
    assert.equal((await holding).status, 200);
  });
});
