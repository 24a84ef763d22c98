/**
 * aftercommit/express over real HTTP on real databases, under Express 5 and 4:
 * commit before the response, rollback on errors and 5xx, a conflicting first
 * attempt that never reaches the client, request metadata, unsafe retries
 * refused, exhausted retries, job polling with the owner rule, and an aborted
 * request whose jobs never start.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Knex } from 'knex';
import type { NextFunction, Request, Response } from 'express';
import { ConflictError, TransactionManager, TransactionalScheduler, type JobHandle } from '../../lib/index.js';
import { aftercommit, jobRoutes, type AftercommitRequest } from '../../lib/express/index.js';
import { eachDialect } from '../support/databases.js';
import { barrier, recordingLogger, until } from '../support/helpers.js';
import { request, serve, type Served } from '../support/http.js';
import { EXPRESS_VERSIONS } from './versions.js';

eachDialect('aftercommit/express', (database) => {
  let knex: Knex;
  let notes: string;
  before(async () => {
    knex = database.knex();
    notes = database.table('notes');
    await knex.schema.createTable(notes, (t) => {
      t.increments('id');
      t.string('text').notNullable();
    });
  });
  const texts = async (prefix: string) => ((await knex(notes).where('text', 'like', `${prefix}%`).orderBy('id')) as { text: string }[]).map((r) => r.text);

  for (const version of EXPRESS_VERSIONS) {
    describe(version.name, () => {
      let server: Served;
      const runs = new Map<string, number>();
      const logger = recordingLogger();
      const jobRuns: string[] = [];
      const v = version.name.replace(' ', '');
      const arrived = barrier(2);
      let committedBeforeResponse: boolean[] = [];

      before(async () => {
        const tm = new TransactionManager(knex, { logger, delay: { initial: 1 } });
        const scheduler = new TransactionalScheduler(tm);
        scheduler.define('note', async (_job: JobHandle, _context: unknown, text: string) => {
          jobRuns.push(text);
          return { text };
        });
        const count = (path: string) => {
          runs.set(path, (runs.get(path) ?? 0) + 1);
          return runs.get(path)!;
        };
        const router = version.router();
        // Express 4's router ignores a rejected promise: its routes pass errors on with next(err) themselves.
        type Route = (req: Request, res: Response, next: NextFunction) => unknown;
        const route = (fn: Route): Route =>
          version.name === 'express 5' ? fn : (req, res, next) => Promise.resolve(fn(req, res, next)).catch(next);
        router.post('/note/:text', route(async (req, res) => {
          const r = req as AftercommitRequest;
          await r.db(notes).insert({ text: r.params.text });
          r.transaction.afterCommit(() => committedBeforeResponse.push(!res.writableFinished)); // headersSent says what the handler did: true once it answered
          res.status(201).json({ text: r.params.text, attempt: r.transaction.attempt });
        }));
        router.post('/write-then-throw/:text', route(async (req) => {
          await req.db!(notes).insert({ text: req.params.text });
          throw Object.assign(new Error('nope'), { status: 422 });
        }));
        router.post('/five-hundred/:text', route(async (req, res) => {
          await req.db!(notes).insert({ text: req.params.text });
          res.status(503).json({ down: true });
        }));
        router.post('/rollback-only/:text', route(async (req, res) => {
          const r = req as AftercommitRequest;
          await r.db(notes).insert({ text: r.params.text });
          r.transaction.setRollbackOnly();
          res.json({ rolledBack: true });
        }));
        router.post('/conflict-first/:text', route(async (req, res) => {
          const r = req as AftercommitRequest;
          const attempt = count(`conflict-${v}`);
          assert.equal(res.locals.seen, undefined, 'res.locals is fresh');
          assert.equal(res.statusCode, 200, 'the status is as before the first attempt');
          assert.equal(res.getHeader('X-First'), undefined, 'headers are as before the first attempt');
          res.locals.seen = attempt;
          await r.db(notes).insert({ text: `${r.params.text} ${attempt}` });
          if (attempt === 1) {
            res.status(409).set('X-First', 'yes').json({ first: true });
            throw new ConflictError('stale'); // after the answer, before the commit: discarded and run again
          }
          res.json({ attempt, body: r.body });
        }));
        router.get('/meta', route(async (req, res) => {
          const r = req as AftercommitRequest;
          const tx = r.transaction;
          await arrived.arrive(); // both in flight (before their first statement: SQLite has one connection)
          await r.db.raw('select 1');
          res.json({ note: tx.meta.note, requestId: (tx.meta.extension as { requestId: string }).requestId, same: r.transaction === tx, user: tx.meta.user ?? null });
        }));
        router.post('/raw-body', route(async (req, res) => {
          count(`raw-${v}`);
          for await (const chunk of req) void chunk;
          if (runs.get(`raw-${v}`) === 1) throw new ConflictError('stale');
          res.send('read it');
        }));
        router.post('/parsed-inside', version.json(), route(async (req, res) => {
          if (count(`parsed-${v}`) === 1) throw new ConflictError('stale');
          res.json({ body: req.body });
        }));
        router.post('/always-conflict', route(() => {
          throw new ConflictError('always');
        }));
        router.post('/schedule/:text', route((req, res) => {
          const r = req as AftercommitRequest;
          res.status(202).json({ id: r.scheduler.schedule('note', r.persistentContext(), r.params.text) });
        }));
        router.post('/schedule-slowly/:text', route(async (req, res) => {
          const r = req as AftercommitRequest;
          r.scheduler.schedule('note', r.persistentContext(), r.params.text);
          await sleep(600);
          res.json({ late: true });
        }));
        router.post('/stream/:text', route(async (req, res) => {
          await req.db!(notes).insert({ text: req.params.text });
          res.write('a');
          res.write('b');
          setTimeout(() => res.end('c'), 20);
        }));

        const inner = version.router();
        inner.get('/deep/:text', route(async (req, res) => {
          const r = req as AftercommitRequest;
          await r.db(notes).insert({ text: r.params.text });
          res.json({ deep: r.params.text, baseUrl: r.baseUrl });
        }));
        router.use('/nested', inner);
        router.post('/pass-on/:text', route(async (req, _res, next) => {
          await req.db!(notes).insert({ text: req.params.text });
          next();
        }));

        const app = version.app();
        app.use(
          '/guarded-error',
          aftercommit(
            { manager: tm },
            route(async (req) => {
              await req.db!(notes).insert({ text: `${v}-guarded-error` });
              throw Object.assign(new Error('teapot'), { status: 418 });
            }),
            (err: { status: number; message: string }, _req: Request, res: Response, _next: NextFunction) => {
              res.status(err.status).json({ handled: err.message });
            },
          ),
        );
        app.use(
          '/slow',
          aftercommit({ manager: tm, timeout: 300 }, route(async (req) => {
            await req.db!(notes).insert({ text: `${v}-hung` });
            await sleep(2000); // never answers in time
          })),
        );
        app.use((req: Request, _res: Response, next: NextFunction) => {
          const user = req.get('X-User');
          if (user) (req as { user?: unknown }).user = { id: user };
          next();
        });
        app.use('/api', version.json(), aftercommit({ manager: tm, scheduler, retries: 3 }, router, jobRoutes({ prefix: '/jobs' })));
        app.use('/api', (req: Request, res: Response) => {
          res.json({ after: true, committed: !req.transaction!.isOpen });
        });
        app.use((err: { status?: number; message: string; code?: string; headers?: Record<string, string> }, _req: Request, res: Response, _next: NextFunction) => {
          res.status(err.status ?? 500).set(err.headers ?? {}).json({ error: err.message, code: err.code ?? null });
        });
        server = await serve(app);
      });
      after(() => server.close());

      const post = (path: string, init: RequestInit = {}) => request(`${server.url}/api${path}`, { method: 'POST', ...init });

      it('commits before the response is sent', async () => {
        committedBeforeResponse = [];
        const response = await post(`/note/${v}-ok`);
        assert.equal(response.status, 201);
        assert.deepEqual(response.body, { text: `${v}-ok`, attempt: 1 });
        assert.match(response.headers.get('x-request-id') ?? '', /./);
        assert.deepEqual(committedBeforeResponse, [true]);
        assert.deepEqual(await texts(`${v}-ok`), [`${v}-ok`]);
      });

      it('write-then-throw, a 5xx and setRollbackOnly roll back; the error reaches the app’s handler', async () => {
        const thrown = await post(`/write-then-throw/${v}-throw`);
        assert.deepEqual({ status: thrown.status, body: thrown.body }, { status: 422, body: { error: 'nope', code: null } });
        const fiveHundred = await post(`/five-hundred/${v}-5xx`);
        assert.deepEqual({ status: fiveHundred.status, body: fiveHundred.body }, { status: 503, body: { down: true } });
        const rollbackOnly = await post(`/rollback-only/${v}-rbo`);
        assert.deepEqual({ status: rollbackOnly.status, body: rollbackOnly.body }, { status: 200, body: { rolledBack: true } });
        assert.deepEqual(await texts(`${v}-throw`), []);
        assert.deepEqual(await texts(`${v}-5xx`), []);
        assert.deepEqual(await texts(`${v}-rbo`), []);
      });

      it('a conflicting first attempt: its status, headers and body never reach the client', async () => {
        const response = await post(`/conflict-first/${v}-conflict`, { headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ kept: 1 }) });
        assert.equal(response.status, 200);
        assert.equal(response.headers.get('x-first'), null);
        assert.deepEqual(response.body, { attempt: 2, body: { kept: 1 } });
        assert.deepEqual(await texts(`${v}-conflict`), [`${v}-conflict 2`]);
      });

      it('interleaved requests each see their own transaction and metadata', async () => {
        const [a, b] = await Promise.all([
          request(`${server.url}/api/meta`, { headers: { 'X-Request-Id': 'req-a', 'X-User': 'alice' } }),
          request(`${server.url}/api/meta`, { headers: { 'X-Request-Id': 'req-b' } }),
        ]);
        assert.deepEqual(a.body, { note: 'GET /api/meta', requestId: 'req-a', same: true, user: 'alice' });
        assert.deepEqual(b.body, { note: 'GET /api/meta', requestId: 'req-b', same: true, user: null });
        assert.equal(a.headers.get('x-request-id'), 'req-a');
      });

      it('a raw body read inside is not retried: RetryNotSafeError with the reason; a parser inside is retried', async () => {
        const raw = await post('/raw-body', { headers: { 'Content-Type': 'text/plain' }, body: 'hello' });
        assert.equal(raw.status, 500);
        assert.equal(raw.body.code, 'AFTERCOMMIT_RETRY_NOT_SAFE');
        assert.match(raw.body.error, /read inside the guarded handlers without being kept/);
        const parsed = await post('/parsed-inside', { headers: { 'Content-Type': 'text/plain' }, body: 'x' });
        assert.equal(parsed.status, 200);
      });

      it('exhausted retries answer 503 with Retry-After', async () => {
        const response = await post('/always-conflict');
        assert.equal(response.status, 503);
        assert.equal(response.headers.get('retry-after'), '1');
        assert.equal(response.body.code, 'AFTERCOMMIT_RETRIES_EXHAUSTED');
      });

      it('a streaming handler commits before its stream starts', async () => {
        const response = await post(`/stream/${v}-stream`);
        assert.equal(response.status, 200);
        assert.equal(response.body, 'abc');
        assert.deepEqual(await texts(`${v}-stream`), [`${v}-stream`]);
      });

      it('nested routers; falling through commits and goes on with next() outside the transaction', async () => {
        const deep = await request(`${server.url}/api/nested/deep/${v}-deep`);
        assert.deepEqual({ status: deep.status, body: deep.body }, { status: 200, body: { deep: `${v}-deep`, baseUrl: '/api/nested' } });
        const passed = await post(`/pass-on/${v}-passed`);
        assert.deepEqual({ status: passed.status, body: passed.body }, { status: 200, body: { after: true, committed: true } });
        assert.deepEqual(await texts(`${v}-deep`), [`${v}-deep`]);
        assert.deepEqual(await texts(`${v}-passed`), [`${v}-passed`]);
      });

      it('an error handler among the guarded ones answers; its 4xx commits', async () => {
        const response = await request(`${server.url}/guarded-error`);
        assert.deepEqual({ status: response.status, body: response.body }, { status: 418, body: { handled: 'teapot' } });
        assert.deepEqual(await texts(`${v}-guarded-error`), [`${v}-guarded-error`]);
      });

      it('a hung request is ended at its timeout: 503, rolled back', async () => {
        const response = await request(`${server.url}/slow`);
        assert.equal(response.status, 503);
        assert.equal(response.body.code, 'AFTERCOMMIT_REQUEST_TIMEOUT');
        assert.deepEqual(await texts(`${v}-hung`), []);
      });

      it('job polling: the owner sees the job, others get 404', async () => {
        const scheduled = await post(`/schedule/${v}-job`, { headers: { 'X-User': 'alice' } });
        assert.equal(scheduled.status, 202);
        const id = (scheduled.body as { id: string }).id;
        await until(() => jobRuns.includes(`${v}-job`));
        const poll = (user?: string) => request(`${server.url}/api/jobs/${id}`, { headers: user ? { 'X-User': user } : {} });
        assert.equal((await poll('bob')).status, 404);
        assert.equal((await poll()).status, 404);
        const mine = await poll('alice');
        assert.equal(mine.status, 200);
        assert.equal(mine.headers.get('cache-control'), 'no-store');
        assert.equal(mine.body.state, 'done');
        assert.deepEqual((await poll('alice')).body, { error: 'no such job' }); // consumed
      });

      it('an aborted request never starts its jobs', async () => {
        const controller = new AbortController();
        const pending = fetch(`${server.url}/api/schedule-slowly/${v}-aborted`, { method: 'POST', signal: controller.signal }).catch(() => undefined);
        await sleep(100);
        controller.abort();
        await pending;
        await sleep(1000);
        assert.ok(!jobRuns.includes(`${v}-aborted`));
        assert.ok(logger.lines.every((l) => !l.msg.includes('aborted') || l.level !== 'info'));
      });
    });
  }
});
