/**
 * Who owns a job, and so who may poll it, under Koa, Express 5 and Express 4:
 * the request's user id from the request's user (`ctx.state.user` in Koa,
 * `req.user` in Express: itself, its `id`, else its `sub`) or from
 * `aftercommit({ user })`. A user that is set but gives no id, or a metadata
 * `user` that is not a string or number, makes schedule() refuse: no job
 * becomes readable by everyone because the library could not read a user
 * object. Both schedulers, over real HTTP.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import Koa from 'koa';
import type { Knex } from 'knex';
import type { Request } from 'express';
import { JobOwnerError, PersistentTransactionalScheduler, TransactionManager, TransactionalScheduler, type Scheduler, type TransactionMeta } from '../../lib/index.js';
import * as koa from '../../lib/koa/index.js';
import * as express from '../../lib/express/index.js';
import { eachDialect } from '../support/databases.js';
import { recordingLogger } from '../support/helpers.js';
import { request, type Served } from '../support/http.js';
import { errorsAsJson, servers, userFromHeader } from '../express/support.js';
import { frameworks } from './frameworks.js';

/** The user of a request, as the test sends it: JSON in the X-User header, put on the request's user as is. */
const as = (user: unknown) => ({ headers: { 'X-User': JSON.stringify(user) } });
const anonymous = { headers: {} };

/** aftercommit's `user` and `metadata` options, written against the request's user as the test sent it. */
interface UserOptions {
  user?: (user: unknown) => unknown;
  metadata?: (user: unknown) => TransactionMeta;
}

/** `options` as the framework's aftercommit takes them: each reads the user from the request (`userOf`). */
function fromRequest<R>(options: UserOptions, userOf: (request: R) => unknown) {
  const { user, metadata } = options;
  return {
    ...(user && { user: (request: R) => user(userOf(request)) }),
    ...(metadata && { metadata: (request: R) => metadata(userOf(request)) }),
  };
}

/** An app `servers()` can serve (Koa's or Express's). */
type Listening = Parameters<ReturnType<typeof servers>>[0];

interface Framework {
  /** Where the request's user is, as the library's messages name it. */
  userAt: string;
  /** How aftercommit's options name the request (`(ctx) => …`, `(req) => …`). */
  request: string;
  /**
   * The status a JobOwnerError gets from the app's error handler: the Koa app maps it to 409 itself
   * (`err instanceof JobOwnerError`); the Express app answers the error's status, else 500 (it has none).
   */
  refused: number;
  /** The framework's aftercommit, for its checks of the options. */
  aftercommit(options: express.AftercommitOptions & koa.AftercommitOptions): unknown;
  /**
   * An app that sets the request's user from the X-User header (as authentication would), schedules on
   * POST /schedule and polls on GET /jobs/:id inside aftercommit, and answers errors as `{ error, name }`.
   */
  app(tm: TransactionManager, scheduler: Scheduler, options: UserOptions): Listening;
}

const FRAMEWORKS = frameworks<Framework>(
  {
    userAt: 'ctx.state.user',
    request: 'ctx',
    refused: 409,
    aftercommit: (options) => koa.aftercommit(options),
    app(tm, scheduler, options) {
      const app = new Koa();
      app.silent = true;
      app.use(async (ctx, next) => {
        const header = ctx.get('X-User');
        if (header) ctx.state.user = JSON.parse(header);
        try {
          await next();
        } catch (err) {
          ctx.status = err instanceof JobOwnerError ? 409 : 500; // the app's own error handler
          ctx.body = { error: (err as Error).message, name: (err as Error).name };
        }
      });
      app.use(
        koa.aftercommit(
          { manager: tm, scheduler, ...fromRequest(options, (ctx: Koa.Context) => ctx.state.user) },
          koa.jobRoutes({ consume: false }),
          async (ctx) => {
            if (ctx.method !== 'POST') return;
            ctx.body = { id: ctx.scheduler.schedule('noop') };
          },
        ),
      );
      return app;
    },
  },
  (version) => ({
    userAt: 'req.user',
    request: 'req',
    refused: 500,
    aftercommit: (options) => express.aftercommit(options),
    app(tm, scheduler, options) {
      const app = version.app();
      app.use(userFromHeader);
      app.use(
        express.aftercommit(
          { manager: tm, scheduler, ...fromRequest(options, (req: Request) => (req as { user?: unknown }).user) },
          express.jobRoutes({ consume: false }),
          (req, res, next) => {
            if (req.method !== 'POST') return next();
            res.json({ id: req.scheduler.schedule('noop') });
          },
        ),
      );
      app.use(errorsAsJson());
      return app;
    },
  }),
);

eachDialect('job ownership', (database) => {
  let knex: Knex;
  const serve = servers();
  const prefix = `${database.table('own')}_`;
  before(() => {
    knex = database.knex();
  });
  after(() => knex.schema.dropTableIfExists(`${prefix}jobs`).dropTableIfExists(`${prefix}schema`).dropTableIfExists(`${prefix}recurring`));

  const kinds: [string, (tm: TransactionManager) => Promise<Scheduler>][] = [
    ['in memory', async (tm) => new TransactionalScheduler(tm).define('noop', async () => 'done')],
    [
      'persistent',
      async (tm) => {
        const scheduler = new PersistentTransactionalScheduler(tm, { tablePrefix: prefix });
        scheduler.define('noop', async () => 'done');
        await scheduler.migrate();
        return scheduler;
      },
    ],
  ];

  for (const [name, framework] of FRAMEWORKS) {
    for (const [kind, make] of kinds) {
      describe(`${name}, ${kind} scheduler`, () => {
        /** The framework's app over real HTTP, with the given aftercommit options. */
        async function app(options: UserOptions = {}) {
          const tm = new TransactionManager(knex, { logger: recordingLogger() });
          const served: Served = await serve(framework.app(tm, await make(tm), options));
          const schedule = (init: { headers: Record<string, string> }) => request(`${served.url}/schedule`, { method: 'POST', ...init });
          const poll = async (id: string, init: { headers: Record<string, string> }) => (await request(`${served.url}/jobs/${id}`, init)).status;
          return { schedule, poll };
        }

        it('{ sub } (a JWT or OIDC payload) owns its jobs: others and anonymous callers get 404', async () => {
          const { schedule, poll } = await app();
          const { body, status } = await schedule(as({ sub: 'auth0|alice', name: 'John Smith' }));
          assert.equal(status, 200);
          assert.equal(await poll(body.id, as({ sub: 'auth0|alice' })), 200);
          assert.equal(await poll(body.id, as({ sub: 'auth0|bob', name: 'John Smith' })), 404, 'a display name is not an owner');
          assert.equal(await poll(body.id, anonymous), 404);
        });

        it('{ id } comes before { sub }; a plain string user is its own id', async () => {
          const { schedule, poll } = await app();
          const { body } = await schedule(as({ id: 7, sub: 'other' }));
          assert.equal(await poll(body.id, as({ id: 7 })), 200);
          assert.equal(await poll(body.id, as(7)), 200);
          assert.equal(await poll(body.id, as({ sub: 'other' })), 404);
          const plain = await schedule(as('carol'));
          assert.equal(await poll(plain.body.id, as({ id: 'carol' })), 200);
          assert.equal(await poll(plain.body.id, as({ id: 'dave' })), 404);
        });

        for (const user of [{ userId: 5 }, { _id: { $oid: '65f0c0ffee' } }, { name: 'John Smith' }, {}]) {
          it(`a user without id or sub (${JSON.stringify(user)}) cannot schedule: refused with what to do`, async () => {
            const { schedule } = await app();
            const response = await schedule(as(user));
            assert.equal(response.status, framework.refused);
            assert.equal(response.body.name, 'JobOwnerError');
            const where = framework.userAt.replace(/\./g, '\\.');
            assert.match(
              response.body.error,
              new RegExp(`^cannot schedule: ${where} \\(an object with (keys [\\w, ]+|no keys)\\) gives no owner for the job: .* Pass aftercommit\\(\\{ user: \\(ctx\\) => … \\}\\) \\(Express: \\(req\\) => …\\)`),
            );
            assert.doesNotMatch(response.body.error, /John Smith|65f0c0ffee/, 'the message names keys, never values');
          });
        }

        it('aftercommit({ user }) reads the owner from any shape', async () => {
          const { schedule, poll } = await app({ user: (user) => (user as { userId?: number } | undefined)?.userId });
          const { body, status } = await schedule(as({ userId: 5 }));
          assert.equal(status, 200);
          assert.equal(await poll(body.id, as({ userId: 5 })), 200);
          assert.equal(await poll(body.id, as({ userId: 6 })), 404);
          assert.equal((await schedule(anonymous)).status, 200, 'undefined: no user');
        });

        it('a metadata user that is not a string or number is refused, not stored as "[object Object]"', async () => {
          const { schedule } = await app({ metadata: (user) => ({ user: user as string }) });
          const response = await schedule(as({ id: 1 }));
          assert.equal(response.status, framework.refused);
          assert.equal(response.body.name, 'JobOwnerError');
          assert.match(response.body.error, /tx\.meta\.user is a value of type object: the owner of a job must be a non-empty string/);
        });

        it('a request with no user at all schedules a job anyone holding its id may poll (as documented)', async () => {
          const { schedule, poll } = await app();
          const { body } = await schedule(anonymous);
          assert.equal(await poll(body.id, anonymous), 200);
          assert.equal(await poll(body.id, as({ id: 'someone' })), 200);
          assert.equal(await poll(body.id, as({ userId: 5 })), 200, 'a poller without an id sees jobs without an owner');
        });
      });
    }

    it(`${name}: refuses a user option that is not a function, and user together with metadata`, () => {
      const tm = new TransactionManager(knex, { logger: recordingLogger() });
      assert.throws(() => framework.aftercommit({ manager: tm, user: 'id' as never }), {
        name: 'TypeError',
        message: `aftercommit(options): options.user must be a function (${framework.request}) => the id of the request’s user`,
      });
      assert.throws(() => framework.aftercommit({ manager: tm, user: () => 1, metadata: () => ({}) }), {
        name: 'TypeError',
        message: 'aftercommit(options): give user or metadata, not both (metadata sets user itself)',
      });
    });
  }
});
