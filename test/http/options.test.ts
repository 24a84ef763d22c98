/**
 * aftercommit(options) checks its options where they enter, with the same
 * messages from Koa's adapter and Express's: a mistake fails at startup with
 * what to change, not on the first request.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import knexFactory from 'knex';
import { TransactionManager } from '../../lib/index.js';
import { aftercommit as koaAftercommit } from '../../lib/koa/index.js';
import { aftercommit as expressAftercommit } from '../../lib/express/index.js';

const manager = new TransactionManager(knexFactory({ client: 'better-sqlite3', connection: { filename: ':memory:' }, useNullAsDefault: true }));
const adapters = [
  { name: 'koa', request: 'ctx', guard: (options: object) => koaAftercommit(options as never) },
  { name: 'express', request: 'req', guard: (options: object) => expressAftercommit(options as never) },
];

for (const { name, request, guard } of adapters) {
  describe(`aftercommit/${name} options`, () => {
    const refuses = (options: object, message: string | RegExp) =>
      assert.throws(() => guard(options), { name: 'TypeError', message });

    it('a manager is required', () => {
      refuses({}, /options.manager must be a TransactionManager/);
      refuses({ manager: {} }, /options.manager must be a TransactionManager/);
    });

    it('user and metadata must be functions, and not both', () => {
      refuses({ manager, user: 'alice' }, `aftercommit(options): options.user must be a function (${request}) => the id of the request’s user`);
      refuses({ manager, metadata: { user: 'alice' } }, `aftercommit(options): options.metadata must be a function (${request}) => the request’s transaction metadata`);
      refuses({ manager, user: () => 1, metadata: () => ({}) }, 'aftercommit(options): give user or metadata, not both (metadata sets user itself)');
    });

    it('the request id header must be a header name', () => {
      for (const header of ['', 'X Request Id', 'X-Id\r\nSet-Cookie: a=b', 7]) {
        refuses({ manager, requestIdHeader: header }, `aftercommit(options): options.requestIdHeader must be an HTTP header name, got ${JSON.stringify(header)}`);
      }
      assert.equal(typeof guard({ manager, requestIdHeader: 'X-Correlation-Id' }), 'function');
    });

    it('retryAfter and timeout must be whole numbers', () => {
      refuses({ manager, retryAfter: -1 }, 'aftercommit(options): retryAfter must be an integer from 0 to 2147483647, got -1');
      refuses({ manager, retryAfter: '5' }, 'aftercommit(options): retryAfter must be an integer from 0 to 2147483647, got 5');
      refuses({ manager, timeout: 1.5 }, 'aftercommit(options): timeout must be an integer from 0 to 2147483647, got 1.5');
    });
  });
}
