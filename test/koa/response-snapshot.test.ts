/**
 * The response reset between attempts, on Koa 2 and Koa 3: after a restore,
 * the response behaves as if the failed attempt had never touched it.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import Koa3 from 'koa';
import Koa2 from 'koa2';
import { restoreResponse, snapshotResponse } from '../../lib/koa/response-snapshot.js';
import { request, serve, type Served } from '../support/http.js';

for (const [name, Koa] of Object.entries({ 'koa 3': Koa3, 'koa 2': Koa2 })) {
  describe(`snapshotResponse / restoreResponse [${name}]`, () => {
    let server: Served;
    before(async () => {
      const app = new Koa();
      app.use(async (ctx) => {
        ctx.set('X-Before', 'kept');
        ctx.state.list = [1];
        ctx.state.user = { id: 'u1' };
        const snapshot = snapshotResponse(ctx);
        // What a failed attempt may leave behind:
        switch (ctx.path) {
          case '/null-body':
            ctx.body = null; // 204, _explicitStatus and _explicitNullBody
            break;
          case '/status':
            ctx.status = 418;
            ctx.message = 'short and stout';
            break;
          default:
            ctx.type = 'json';
            ctx.body = { first: true };
        }
        ctx.set('X-Attempt', 'first');
        (ctx.state.list as number[]).push(2);
        ctx.state.added = true;
        restoreResponse(ctx, snapshot);
        // The next attempt:
        if (ctx.path !== '/nothing') ctx.body = `second ${JSON.stringify(ctx.state)}`;
      });
      server = await serve(app);
    });
    after(() => server.close());

    for (const path of ['/null-body', '/status', '/json']) {
      it(`${path}: status, message, headers, body and ctx.state are as before`, async () => {
        const response = await request(server.url + path);
        assert.equal(response.status, 200);
        assert.equal(response.headers.get('x-attempt'), null);
        assert.equal(response.headers.get('x-before'), 'kept');
        assert.match(response.headers.get('content-type')!, /^text\/plain/);
        assert.equal(response.body, 'second {"list":[1],"user":{"id":"u1"}}');
      });
    }

    it('an attempt that sets nothing leaves Koa’s default 404', async () => {
      const response = await request(`${server.url}/nothing`);
      assert.equal(response.status, 404);
      assert.equal(response.body, 'Not Found');
    });
  });
}
