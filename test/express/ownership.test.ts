/**
 * Who owns a job, and so who may poll it, under Express 5 and 4: the request's
 * user id from `req.user` (itself, its `id`, else its `sub`) or from
 * `aftercommit({ user })`. A user that is set but gives no id, or a metadata
 * `user` that is not a string or number, makes schedule() refuse: no job
 * becomes readable by everyone because the library could not read a user
 * object. Both schedulers, over real HTTP.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import { PersistentTransactionalScheduler, TransactionManager, TransactionalScheduler, type Scheduler } from '../../lib/index.js';
import { aftercommit, jobRoutes, type AftercommitOptions } from '../../lib/express/index.js';
import { eachDialect } from '../support/databases.js';
import { recordingLogger } from '../support/helpers.js';
import { request } from '../support/http.js';
import { EXPRESS_VERSIONS } from './versions.js';
import { errorsAsJson, servers, userFromHeader } from './support.js';

/** The user of a request, as the test sends it: JSON in the X-User header, put on req.user as is. */
const as = (user: unknown) => ({ headers: { 'X-User': JSON.stringify(user) } });
const anonymous = { headers: {} };
type User = { userId?: number } | undefined;

eachDialect('express: job ownership', (database) => {
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

  for (const version of EXPRESS_VERSIONS) {
    for (const [kind, make] of kinds) {
      describe(`${version.name}, ${kind} scheduler`, () => {
        /** An app that schedules on POST /schedule and polls on GET /jobs/:id, with the given aftercommit options. */
        async function app(options: Partial<AftercommitOptions> = {}) {
          const tm = new TransactionManager(knex, { logger: recordingLogger() });
          const scheduler = await make(tm);
          const express = version.app();
          express.use(userFromHeader);
          express.use(
            aftercommit({ manager: tm, scheduler, ...options }, jobRoutes({ consume: false }), (req, res, next) => {
              if (req.method !== 'POST') return next();
              res.json({ id: req.scheduler.schedule('noop') });
            }),
          );
          express.use(errorsAsJson());
          const served = await serve(express);
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
            assert.equal(response.status, 500);
            assert.equal(response.body.name, 'JobOwnerError');
            assert.match(response.body.error, /^cannot schedule: req\.user \(an object with (keys [\w, ]+|no keys)\) gives no owner for the job: .* \(Express: \(req\) => …\)/);
            assert.doesNotMatch(response.body.error, /John Smith|65f0c0ffee/, 'the message names keys, never values');
          });
        }

        it('aftercommit({ user }) reads the owner from any shape', async () => {
          const { schedule, poll } = await app({ user: (req) => ((req as { user?: User }).user)?.userId });
          const { body, status } = await schedule(as({ userId: 5 }));
          assert.equal(status, 200);
          assert.equal(await poll(body.id, as({ userId: 5 })), 200);
          assert.equal(await poll(body.id, as({ userId: 6 })), 404);
          assert.equal((await schedule(anonymous)).status, 200, 'undefined: no user');
        });

        it('a metadata user that is not a string or number is refused, not stored as "[object Object]"', async () => {
          const { schedule } = await app({ metadata: (req) => ({ user: (req as { user?: unknown }).user as string }) });
          const response = await schedule(as({ id: 1 }));
          assert.equal(response.status, 500);
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
  }

  it('refuses a user option that is not a function, and user together with metadata', () => {
    const tm = new TransactionManager(knex, { logger: recordingLogger() });
    assert.throws(() => aftercommit({ manager: tm, user: 'id' as never }), /^TypeError: aftercommit\(options\): options\.user must be a function/);
    assert.throws(() => aftercommit({ manager: tm, user: () => 1, metadata: () => ({}) }), {
      name: 'TypeError',
      message: 'aftercommit(options): give user or metadata, not both (metadata sets user itself)',
    });
  });
});
