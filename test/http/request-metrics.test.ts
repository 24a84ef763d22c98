/**
 * The request metrics by route (lib/http/request-metrics.ts), through Koa,
 * Express 5 and Express 4, over real HTTP on every database: a crowd of
 * opposite-order transfers deadlocks for real (MariaDB, PostgreSQL) and its
 * route's counters match what the responses and onRetry tell; a forced deadlock
 * with `retries: 0` is counted as exhausted (503), a raw body read before a
 * retry as not retry-safe; routes are counted by their router template (Koa:
 * a nested router's prefix included; Express: the route's own path, since a
 * mount keeps no pattern: never the URL a mount with parameters matched),
 * unmatched requests under `(unmatched)`, past 200 routes under `(other)`, and a
 * request through two nested aftercommit()s once. The figures are read from
 * metricsRoute (parsed by a real Prometheus parser) and from the jobs
 * dashboard's `/api/requests`, closed (404) to a non-admin.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import Koa from 'koa';
import Router from '@koa/router';
import type { Knex } from 'knex';
import type { Request, Response } from 'express';
import knexFactory from 'knex';
import parsePrometheus from 'parse-prometheus-text-format';
import { ConflictError, PersistentTransactionalScheduler, TransactionManager, type RetryEvent, type Transaction } from '../../lib/index.js';
import * as koa from '../../lib/koa/index.js';
import * as express from '../../lib/express/index.js';
import type { RouteRequestMetrics } from '../../lib/koa/index.js';
import { eachDialect } from '../support/databases.js';
import { barrier, recordingLogger } from '../support/helpers.js';
import { request, serve, type Served } from '../support/http.js';
import { persistentSuite } from '../support/persistent-suite.js';
import { routeFor } from '../express/support.js';
import { frameworks, koaErrorsAsJson } from './frameworks.js';

const ADMIN = { 'X-Role': 'admin' };
/** The label a route is counted under: Koa's router gives the whole template, Express the route's own path. */
const templateIn = (framework: string, template: string, mount: string) => (framework === 'koa' ? template : template.slice(mount.length));

/** What the handlers need from the test. */
interface Setup {
  tm: TransactionManager;
  scheduler: PersistentTransactionalScheduler;
  accounts: string;
  notes: string;
  retries: number;
  /** Where a locked transfer's first attempt waits, holding its first row, for the other one to hold its own. */
  meet: () => Promise<void>;
  onRetry?: (event: RetryEvent) => void;
  route?: (path: string) => string | undefined;
}

/** A transfer with the first row's lock held a moment, so that the opposite request takes its own meanwhile. */
async function transfer(db: Knex.Transaction, accounts: string, from: string, to: string, amount: number): Promise<void> {
  await db(accounts).where({ id: from }).decrement('balance', amount);
  await sleep(5);
  await db(accounts).where({ id: to }).increment('balance', amount);
}

/** A transfer whose first attempt holds its first row until the opposite one holds its own: a deadlock, every time. */
async function lockedTransfer(db: Knex.Transaction, setup: Setup, tx: Transaction, from: string, to: string): Promise<void> {
  await db(setup.accounts).where({ id: from }).decrement('balance', 1);
  if (tx.attempt === 1) await setup.meet();
  await db(setup.accounts).where({ id: to }).increment('balance', 1);
}

/** Reads the request body from the socket without keeping it, writes a note, and conflicts on the first attempt: not safe to retry. */
async function rawNote(db: Knex.Transaction, setup: Setup, tx: Transaction, body: AsyncIterable<unknown>): Promise<void> {
  for await (const chunk of body) void chunk;
  await db(setup.notes).insert({ text: `raw ${tx.attempt}` });
  if (tx.attempt === 1) throw new ConflictError('stale');
}

async function alwaysConflicts(db: Knex.Transaction, setup: Setup): Promise<never> {
  await db(setup.notes).insert({ text: 'never kept' });
  throw new ConflictError('every time');
}

/**
 * An app with the routes above under aftercommit: the accounts routes on a
 * router nested under `/accounts`, the notes routes on the outer one; and
 * metricsRoute and jobsDashboard (before aftercommit) for `X-Role: admin`.
 */
type App = (setup: Setup) => Promise<Served>;

const FRAMEWORKS = frameworks<App>(
  (setup) => {
    const accounts = new Router<Koa.DefaultState, koa.AftercommitContext>();
    accounts.post('/:id/transfer/:to/:amount', async (ctx) => {
      await transfer(ctx.db, setup.accounts, ctx.params.id!, ctx.params.to!, Number(ctx.params.amount));
      ctx.body = { attempt: ctx.transaction.attempt };
    });
    accounts.post('/:id/locked/:to', async (ctx) => {
      await lockedTransfer(ctx.db, setup, ctx.transaction, ctx.params.id!, ctx.params.to!);
      ctx.body = { attempt: ctx.transaction.attempt };
    });
    const router = new Router<Koa.DefaultState, koa.AftercommitContext>();
    router.post('/notes/raw', async (ctx) => {
      await rawNote(ctx.db, setup, ctx.transaction, ctx.req);
      ctx.body = { attempt: ctx.transaction.attempt };
    });
    router.post('/notes/conflict', (ctx) => alwaysConflicts(ctx.db, setup));
    router.use('/accounts', accounts.routes());
    const userNotes = new Router<Koa.DefaultState, koa.AftercommitContext>();
    userNotes.get('/:note', (ctx) => {
      ctx.body = { user: ctx.params.user, note: ctx.params.note };
    });
    router.use('/users/:user/notes', userNotes.routes());
    // An aftercommit() of the same manager nested inside: the request is counted once.
    router.get('/nested', koa.aftercommit({ manager: setup.tm }, (ctx) => {
      ctx.body = 'nested';
    }));
    const app = new Koa();
    app.silent = true;
    const admin = (ctx: Koa.Context) => ctx.get('X-Role') === 'admin';
    app.use(koaErrorsAsJson());
    app.use(koa.metricsRoute({ scheduler: setup.scheduler, authorize: admin }));
    app.use(koa.jobsDashboard({ scheduler: setup.scheduler, authorize: admin }));
    const route = setup.route;
    app.use(
      koa.aftercommit(
        { manager: setup.tm, retries: setup.retries, onRetry: setup.onRetry, ...(route ? { route: (ctx: Koa.Context) => route(ctx.path) } : {}) },
        router.routes(),
        (ctx) => {
          if (ctx.path.startsWith('/plain/')) ctx.body = 'plain'; // answered by no route of a router
        },
      ),
    );
    return serve(app);
  },
  (version) => (setup) => {
    const asyncRoute = routeFor(version);
    const accounts = version.router();
    accounts.post(
      '/:id/transfer/:to/:amount',
      asyncRoute(async (req, res) => {
        const { db, transaction } = req as express.AftercommitRequest;
        await transfer(db, setup.accounts, String(req.params.id), String(req.params.to), Number(req.params.amount));
        res.json({ attempt: transaction.attempt });
      }),
    );
    accounts.post(
      '/:id/locked/:to',
      asyncRoute(async (req, res) => {
        const { db, transaction } = req as express.AftercommitRequest;
        await lockedTransfer(db, setup, transaction, String(req.params.id), String(req.params.to));
        res.json({ attempt: transaction.attempt });
      }),
    );
    const router = version.router();
    router.post(
      '/notes/raw',
      asyncRoute(async (req, res) => {
        const { db, transaction } = req as express.AftercommitRequest;
        await rawNote(db, setup, transaction, req as AsyncIterable<unknown>);
        res.json({ attempt: transaction.attempt });
      }),
    );
    router.post(
      '/notes/conflict',
      asyncRoute((req) => alwaysConflicts((req as express.AftercommitRequest).db, setup)),
    );
    router.use('/accounts', accounts);
    const userNotes = version.router();
    userNotes.get('/:note', (req, res) => {
      res.json({ note: req.params.note });
    });
    router.use('/users/:user/notes', userNotes);
    router.get('/nested', express.aftercommit({ manager: setup.tm }, (_req: Request, res: Response) => {
      res.send('nested');
    }));
    const app = version.app();
    const admin = (req: Request) => req.get('X-Role') === 'admin';
    app.use(express.metricsRoute({ scheduler: setup.scheduler, authorize: admin }));
    app.use(express.jobsDashboard({ scheduler: setup.scheduler, authorize: admin }));
    const route = setup.route;
    app.use(
      express.aftercommit(
        { manager: setup.tm, retries: setup.retries, onRetry: setup.onRetry, ...(route ? { route: (req: Request) => route(req.path) } : {}) },
        router,
        (req: Request, res: Response, next: () => void) => {
          if (req.path.startsWith('/plain/')) res.send('plain');
          else next();
        },
      ),
    );
    app.use((err: { status?: number; message: string; name: string; code?: string }, _req: Request, res: Response, _next: () => void) => {
      res.status(err.status ?? 500).json({ error: err.message, name: err.name, code: err.code ?? null });
    });
    return serve(app);
  },
);

/** The Prometheus text of `url`'s metricsRoute, parsed by a real parser. */
async function scrape(url: string) {
  const response = await request(`${url}/metrics`, { headers: ADMIN });
  assert.equal(response.status, 200);
  const families = parsePrometheus(response.body as string);
  const family = (name: string) => families.find((f) => f.name === name);
  /** The value of the sample of `name` with exactly these labels; undefined when there is none. */
  const value = (name: string, labels: Record<string, string>) => {
    const sample = family(name)?.metrics.find((m) => JSON.stringify(Object.entries(m.labels ?? {}).sort()) === JSON.stringify(Object.entries(labels).sort()));
    return sample === undefined ? undefined : Number(sample.value);
  };
  return { text: response.body as string, families, family, value };
}

/** The dashboard's figures of one route. */
async function dashboardFigures(url: string, route: string): Promise<RouteRequestMetrics | undefined> {
  const answer = await request(`${url}/admin/jobs/api/requests`, { headers: ADMIN });
  assert.equal(answer.status, 200);
  return (answer.body as { routes: RouteRequestMetrics[] }).routes.find((r) => r.route === route);
}

const ZERO_CONFLICTS = { deadlock: 0, serialization: 0, lock_wait_timeout: 0, busy: 0, preempted: 0, application: 0, other: 0 };

eachDialect('request metrics by route', (database) => {
  const suite = persistentSuite(database, 'reqm', () => {});
  const servers = database.name !== 'sqlite';
  let knex: Knex;
  let accounts: string;
  let notes: string;
  before(async () => {
    // PostgreSQL looks for deadlocks after deadlock_timeout (1 s by default); shorter for the test.
    const pool =
      database.name === 'postgres'
        ? { min: 0, max: 45, afterCreate: (conn: { query(sql: string, cb: (err: unknown) => void): void }, done: (err: unknown, conn: unknown) => void) => conn.query("SET deadlock_timeout = '50ms'", (err) => done(err, conn)) }
        : database.name === 'mysql'
          ? { min: 0, max: 45 }
          : undefined;
    knex = database.knex(pool ? { pool } : {});
    accounts = database.table('reqm_accounts');
    notes = database.table('reqm_notes');
    await knex.schema.createTable(accounts, (t) => {
      t.integer('id').primary();
      t.integer('balance').notNullable();
    });
    await knex.schema.createTable(notes, (t) => {
      t.increments('id');
      t.string('text').notNullable();
    });
  });

  for (const [framework, app] of FRAMEWORKS) {
    describe(framework, () => {
      let server: Served;
      /** The same manager (one registry), with `retries: 0`. */
      let strict: Served;
      let capped: Served;
      let tm: TransactionManager;
      let meet = barrier(2);
      const retryEvents: RetryEvent[] = [];
      const cappedLogger = recordingLogger();
      before(async () => {
        await knex(accounts).delete();
        await knex(accounts).insert([1, 2, 3, 4].map((id) => ({ id, balance: 1000 })));
        tm = new TransactionManager(knex, { logger: recordingLogger() });
        const scheduler = new PersistentTransactionalScheduler(tm, { tablePrefix: suite.prefix });
        const common = { tm, scheduler, accounts, notes, meet: () => meet.arrive() };
        server = await app({ ...common, retries: 60, onRetry: (event) => retryEvents.push(event) });
        strict = await app({ ...common, retries: 0 });
        // Another manager, so another registry: routes counted by their raw path (what the cap is for).
        const cappedTm = new TransactionManager(knex, { logger: cappedLogger });
        capped = await app({
          ...common,
          tm: cappedTm,
          scheduler: new PersistentTransactionalScheduler(cappedTm, { tablePrefix: suite.prefix }),
          retries: 0,
          route: (path) => {
            if (path === '/plain/none') return undefined;
            if (path === '/plain/throws') throw new RangeError('no route for you');
            if (path === '/plain/odd') return '/odd "quoted" \\ back\nslash';
            return path;
          },
        });
      });
      after(() => Promise.all([server.close(), strict.close(), capped.close()]));

      const TRANSFER = templateIn(framework, '/accounts/:id/transfer/:to/:amount', '/accounts');
      const LOCKED = templateIn(framework, '/accounts/:id/locked/:to', '/accounts');

      it('counts a crowd of opposite-order transfers under the route template, with the retries, conflicts and escalations they had', { skip: !servers && 'SQLite has one writer: no deadlocks' }, async () => {
        const paths = Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? `/accounts/1/transfer/2/${i + 1}` : `/accounts/2/transfer/1/${i + 1}`));
        const responses = await Promise.all(paths.map((path) => request(server.url + path, { method: 'POST' })));
        assert.deepEqual(
          responses.map((r) => r.status),
          paths.map(() => 200),
        );
        const attempts = responses.map((r) => (r.body as { attempt: number }).attempt);
        const retriedRequests = attempts.filter((a) => a > 1).length;
        const retries = attempts.reduce((sum, a) => sum + a - 1, 0);
        assert.equal(retryEvents.length, retries, 'onRetry saw every retry');

        const figures = await dashboardFigures(server.url, TRANSFER);
        assert.ok(figures, 'counted under the template');
        assert.equal(figures.requests, 40);
        assert.equal(figures.retried, retriedRequests);
        assert.equal(
          Object.values(figures.conflicts).reduce((sum, n) => sum + n, 0),
          retries,
          'a conflict for each retry',
        );
        // How many deadlocks a crowd meets depends on timing: the kind of a deadlock is checked by the forced one below.
        assert.equal(figures.conflicts.other, 0, 'every conflict had a known kind');
        assert.equal(figures.escalations, retryEvents.filter((e) => e.escalated).length);
        assert.equal(figures.exhausted, 0);
        assert.equal(figures.notRetrySafe, 0);

        const { value, family, text } = await scrape(server.url);
        assert.equal(value('aftercommit_requests_total', { route: TRANSFER }), 40);
        assert.equal(value('aftercommit_requests_retried_total', { route: TRANSFER }), retriedRequests);
        for (const [kind, n] of Object.entries(figures.conflicts)) {
          assert.equal(value('aftercommit_request_conflicts_total', { route: TRANSFER, kind }), n > 0 ? n : undefined, kind);
        }
        assert.equal(value('aftercommit_request_escalations_total', { route: TRANSFER }), figures.escalations);
        assert.equal(value('aftercommit_requests_exhausted_total', { route: TRANSFER }), 0);
        assert.equal(value('aftercommit_requests_not_retry_safe_total', { route: TRANSFER }), 0);
        for (const name of ['aftercommit_requests_total', 'aftercommit_requests_retried_total', 'aftercommit_request_conflicts_total', 'aftercommit_request_escalations_total', 'aftercommit_requests_exhausted_total', 'aftercommit_requests_not_retry_safe_total']) {
          assert.equal(family(name)?.type, 'COUNTER', name);
          assert.match(text, new RegExp(`^# HELP ${name} \\S`, 'm'));
        }
        assert.doesNotMatch(text, /route="\/accounts\/\d/, 'never a raw URL');
      });

      it('counts a forced deadlock with retries: 0 as exhausted (503), under the nested router’s template', { skip: !servers && 'SQLite has one writer: no deadlocks' }, async () => {
        meet = barrier(2);
        const responses = await Promise.all(['/accounts/3/locked/4', '/accounts/4/locked/3'].map((path) => request(strict.url + path, { method: 'POST' })));
        assert.deepEqual(responses.map((r) => r.status).sort(), [200, 503]);
        assert.equal(responses.find((r) => r.status === 503)?.body.code, 'AFTERCOMMIT_RETRIES_EXHAUSTED');
        const figures = await dashboardFigures(strict.url, LOCKED);
        assert.deepEqual(figures, { route: LOCKED, requests: 2, retried: 0, conflicts: { ...ZERO_CONFLICTS, deadlock: 1 }, escalations: 0, exhausted: 1, notRetrySafe: 0 });
        const { value } = await scrape(strict.url);
        assert.equal(value('aftercommit_requests_exhausted_total', { route: LOCKED }), 1);
        assert.equal(value('aftercommit_request_conflicts_total', { route: LOCKED, kind: 'deadlock' }), 1);
      });

      it('counts retries that ran out on a ConflictError as exhausted, its conflicts as the application’s', async () => {
        const responses = await Promise.all([1, 2, 3].map(() => request(`${strict.url}/notes/conflict`, { method: 'POST' })));
        assert.deepEqual(
          responses.map((r) => r.status),
          [503, 503, 503],
        );
        const figures = await dashboardFigures(strict.url, '/notes/conflict');
        assert.deepEqual(figures, { route: '/notes/conflict', requests: 3, retried: 0, conflicts: { ...ZERO_CONFLICTS, application: 3 }, escalations: 0, exhausted: 3, notRetrySafe: 0 });
        assert.equal((await scrape(strict.url)).value('aftercommit_requests_exhausted_total', { route: '/notes/conflict' }), 3);
      });

      it('counts a retry refused as unsafe (a raw body read inside the handlers) as a RetryNotSafeError', async () => {
        const before = retryEvents.length;
        const response = await request(`${server.url}/notes/raw`, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: 'read, not kept' });
        assert.equal(response.status, 500);
        assert.equal(response.body.code, 'AFTERCOMMIT_RETRY_NOT_SAFE');
        assert.equal(retryEvents.length, before + 1);
        const figures = await dashboardFigures(server.url, '/notes/raw');
        assert.deepEqual(figures, {
          route: '/notes/raw',
          requests: 1,
          retried: 1,
          conflicts: { ...ZERO_CONFLICTS, application: 1 },
          escalations: retryEvents.at(-1)!.escalated ? 1 : 0,
          exhausted: 0,
          notRetrySafe: 1,
        });
        assert.equal((await scrape(server.url)).value('aftercommit_requests_not_retry_safe_total', { route: '/notes/raw' }), 1);
      });

      it('counts requests that matched no route under (unmatched), never by their URL', async () => {
        const responses = await Promise.all(['/nowhere/1', '/nowhere/2', '/plain/3'].map((path) => request(server.url + path)));
        assert.deepEqual(
          responses.map((r) => r.status),
          [404, 404, 200],
        );
        const figures = await dashboardFigures(server.url, '(unmatched)');
        assert.equal(figures?.requests, 3);
        const { value, text } = await scrape(server.url);
        assert.equal(value('aftercommit_requests_total', { route: '(unmatched)' }), 3);
        assert.doesNotMatch(text, /nowhere|plain/);
      });

      it('counts a route under a mount with parameters by its template, never by the users it names; a nested aftercommit() once', async () => {
        for (const user of ['alice', 'bob', 'carol']) assert.equal((await request(`${server.url}/users/${user}/notes/n1`)).status, 200);
        assert.equal((await request(`${server.url}/nested`)).status, 200);
        const notes = templateIn(framework, '/users/:user/notes/:note', '/users/:user/notes');
        assert.equal((await dashboardFigures(server.url, notes))?.requests, 3);
        assert.equal((await dashboardFigures(server.url, '/nested'))?.requests, 1, 'counted by the outer aftercommit() only');
        const { text } = await scrape(server.url);
        assert.doesNotMatch(text, /alice|bob|carol/);
      });

      it('keeps 200 routes apart and counts the rest under (other); a route option that gives none or throws counts as (unmatched)', async () => {
        for (const path of ['/plain/none', '/plain/throws']) assert.equal((await request(capped.url + path)).status, 200);
        assert.ok(cappedLogger.lines.some((l) => l.level === 'error' && /the route option threw/.test(l.msg)), 'the throw is logged');
        assert.equal((await request(`${capped.url}/plain/odd`)).status, 200);
        // 209 more distinct paths, 20 at a time: 199 of them fill the cap (with /odd…), 10 go to (other).
        const paths = Array.from({ length: 209 }, (_, i) => `/plain/p${i}`);
        for (let i = 0; i < paths.length; i += 20) {
          const statuses = await Promise.all(paths.slice(i, i + 20).map(async (path) => (await request(capped.url + path)).status));
          assert.deepEqual(new Set(statuses), new Set([200]));
        }
        const answer = await request(`${capped.url}/admin/jobs/api/requests`, { headers: ADMIN });
        const routes = (answer.body as { routes: RouteRequestMetrics[] }).routes;
        const named = routes.filter((r) => r.route !== '(unmatched)' && r.route !== '(other)');
        assert.equal(named.length, 200);
        assert.equal(routes.find((r) => r.route === '(other)')?.requests, 10);
        assert.equal(routes.find((r) => r.route === '(unmatched)')?.requests, 2);
        assert.equal(named.reduce((sum, r) => sum + r.requests, 0), 200);

        const { value, family } = await scrape(capped.url);
        assert.equal(family('aftercommit_requests_total')?.metrics.length, 202);
        assert.equal(value('aftercommit_requests_total', { route: '(other)' }), 10);
        // The label escaped as the text format wants it, read back whole by the parser.
        assert.equal(value('aftercommit_requests_total', { route: '/odd "quoted" \\ back\nslash' }), 1);
      });

      it('answers /api/requests with 404 to a non-admin', async () => {
        for (const headers of [{}, { 'X-Role': 'user' }] as Record<string, string>[]) {
          const answer = await request(`${server.url}/admin/jobs/api/requests`, { headers });
          assert.equal(answer.status, 404);
          assert.doesNotMatch(JSON.stringify(answer.body), /accounts|notes/);
        }
      });
    });
  }
});

describe('the route option', () => {
  const manager = new TransactionManager(knexFactory({ client: 'better-sqlite3', connection: { filename: ':memory:' }, useNullAsDefault: true }));
  after(() => manager.knex.destroy());
  for (const [name, guard, request] of [
    ['koa', (options: object) => koa.aftercommit(options as never), 'ctx'],
    ['express', (options: object) => express.aftercommit(options as never), 'req'],
  ] as const) {
    it(`${name}: must be a function`, () => {
      assert.throws(() => guard({ manager, route: '/accounts/:id' }), {
        name: 'TypeError',
        message: `aftercommit(options): options.route must be a function (${request}) => the template of the request’s route (e.g. /accounts/:id), or undefined`,
      });
      assert.equal(typeof guard({ manager, route: () => '/accounts/:id' }), 'function');
    });
  }
});
