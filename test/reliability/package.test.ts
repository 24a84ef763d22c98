/**
 * The package as users get it: `npm pack`, unpacked into a fresh app next to its
 * peers, imported with `import` and with `require`, and type-checked as a
 * consumer would (moduleResolution node16, both module kinds). In the long
 * suite (`npm run test:reliability`): building, packing and four type-checks
 * take over a minute.
 */
import { before, after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createRequire } from 'node:module';

const root = resolve(import.meta.dirname, '..', '..');
const run = (cmd: string, args: string[], cwd: string) =>
  execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

describe('the packed package', () => {
  let app: string;

  before(() => {
    app = mkdtempSync(join(tmpdir(), 'aftercommit-app-'));
    run('npm', ['pack', '--silent', '--pack-destination', app], root);
    const tarball = readdirSync(app).find((f) => f.endsWith('.tgz'))!;
    const installed = join(app, 'node_modules', 'aftercommit');
    mkdirSync(installed, { recursive: true });
    run('tar', ['xzf', join(app, tarball), '-C', installed, '--strip-components=1'], app);
    // The package's own dependencies (npm installs them beside it) and the peers the app chose,
    // taken from this checkout instead of the registry.
    const { dependencies = {} } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
    for (const peer of [...Object.keys(dependencies), 'knex', 'better-sqlite3', 'koa', '@koa/router', 'express', '@types']) {
      mkdirSync(join(app, 'node_modules', peer, '..'), { recursive: true });
      symlinkSync(join(root, 'node_modules', peer), join(app, 'node_modules', peer));
    }
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'fresh-app', private: true }));
  });

  after(() => rmSync(app, { recursive: true, force: true }));

  it('ships only the build, the README and the CHANGELOG', () => {
    const files = readdirSync(join(app, 'node_modules', 'aftercommit'));
    assert.deepEqual(files.sort(), ['CHANGELOG.md', 'README.md', 'dist', 'package.json']);
  });

  const program = `
    const db = knex({ client: 'better-sqlite3', connection: { filename: ':memory:' }, useNullAsDefault: true });
    const tm = new TransactionManager(db, { retries: 1 });
    let attempts = 0;
    const value = await tm.run(async (tx) => {
      attempts++;
      await tx.db.raw('select 1');
      if (attempts === 1) throw new ConflictError();
      return 'committed after ' + attempts + ' attempts';
    });
    await db.destroy();
    console.log(value, typeof koaEntry, new ConflictError().name); // error names survive the build
  `;

  it('imports as ESM', () => {
    writeFileSync(
      join(app, 'esm.mjs'),
      `import knex from 'knex';
       import { TransactionManager, ConflictError } from 'aftercommit';
       import * as koaEntry from 'aftercommit/koa';
       ${program}`,
    );
    assert.equal(run('node', ['esm.mjs'], app).trim(), 'committed after 2 attempts object ConflictError');
  });

  it('requires as CommonJS', () => {
    writeFileSync(
      join(app, 'cjs.cjs'),
      `const knex = require('knex');
       const { TransactionManager, ConflictError } = require('aftercommit');
       const koaEntry = require('aftercommit/koa');
       (async () => { ${program} })().catch((err) => { console.error(err); process.exit(1); });`,
    );
    assert.equal(run('node', ['cjs.cjs'], app).trim(), 'committed after 2 attempts object ConflictError');
  });

  // A fresh Express 5 app on the packed `aftercommit/express`: a router doing a transfer through
  // req.db whose first attempt fails with a transient error (so the whole handler runs again), a
  // job scheduled with req.scheduler, polled through jobRoutes; the balances are read by the root
  // knex as soon as the response arrives, so they show it was sent after the COMMIT.
  const expressProgram = `
    const db = knex({ client: 'better-sqlite3', connection: { filename: ':memory:' }, useNullAsDefault: true });
    await db.schema.createTable('accounts', (t) => { t.integer('id').primary(); t.integer('balance').notNullable(); });
    await db('accounts').insert([{ id: 1, balance: 10 }, { id: 2, balance: 0 }]);
    const tm = new TransactionManager(db, { retries: 1 });
    const scheduler = new TransactionalScheduler(tm);
    scheduler.define('double', async (job, n) => n * 2);
    let attempts = 0;
    const router = express.Router();
    router.post('/transfer', async (req, res) => {
      attempts++;
      await req.db('accounts').where({ id: 1 }).decrement('balance', req.body.amount);
      await req.db('accounts').where({ id: 2 }).increment('balance', req.body.amount);
      if (attempts === 1) throw new ConflictError(); // transient: rolled back, the handler runs again
      res.status(202).json({ id: req.scheduler.schedule('double', req.body.amount) });
    });
    const app = express();
    app.use(express.json());
    app.use(aftercommit({ manager: tm, scheduler }, router, jobRoutes({ prefix: '/jobs' })));
    const server = app.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const base = 'http://127.0.0.1:' + server.address().port;
    const posted = await fetch(base + '/transfer', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ amount: 4 }) });
    const { id } = await posted.json();
    const balances = (await db('accounts').orderBy('id')).map((row) => row.balance).join('/');
    let result;
    for (let i = 0; i < 200; i++) {
      result = await (await fetch(base + '/jobs/' + id)).json();
      if (result.state !== 'pending') break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await new Promise((resolve) => server.close(resolve));
    await db.destroy();
    console.log(posted.status, attempts, balances, result.state, result.value);
  `;
  const expressAnswer = '202 2 6/4 done 8';

  it('serves a fresh Express app as ESM', () => {
    writeFileSync(
      join(app, 'express-esm.mjs'),
      `import { once } from 'node:events';
       import knex from 'knex';
       import express from 'express';
       import { TransactionManager, TransactionalScheduler, ConflictError } from 'aftercommit';
       import { aftercommit, jobRoutes } from 'aftercommit/express';
       ${expressProgram}`,
    );
    assert.equal(run('node', ['express-esm.mjs'], app).trim(), expressAnswer);
  });

  it('serves a fresh Express app as CommonJS', () => {
    writeFileSync(
      join(app, 'express-cjs.cjs'),
      `const { once } = require('node:events');
       const knex = require('knex');
       const express = require('express');
       const { TransactionManager, TransactionalScheduler, ConflictError } = require('aftercommit');
       const { aftercommit, jobRoutes } = require('aftercommit/express');
       (async () => { ${expressProgram} })().catch((err) => { console.error(err); process.exit(1); });`,
    );
    assert.equal(run('node', ['express-cjs.cjs'], app).trim(), expressAnswer);
  });

  it('ships the CLI: npx aftercommit migrate with the app’s jobs module', () => {
    writeFileSync(
      join(app, 'jobs.mjs'),
      `import knex from 'knex';
       import { TransactionManager, PersistentTransactionalScheduler } from 'aftercommit';
       const db = knex({ client: 'better-sqlite3', connection: { filename: './app.sqlite' }, useNullAsDefault: true });
       export const scheduler = new PersistentTransactionalScheduler(new TransactionManager(db));
       scheduler.define('report', async (job, month) => ({ month }));`,
    );
    const bin = JSON.parse(readFileSync(join(app, 'node_modules', 'aftercommit', 'package.json'), 'utf8')).bin.aftercommit;
    const cli = join(app, 'node_modules', 'aftercommit', bin);
    assert.match(run('node', [cli, 'migrate', '--jobs', './jobs.mjs'], app), /the scheduler tables are up to date/);
    assert.match(run('node', [cli, 'migrate', '--jobs', './jobs.mjs'], app), /the scheduler tables are up to date/, 'idempotent');
    assert.match(run('node', [cli, '--help'], app), /^usage:\n {2}aftercommit migrate/, '--help prints the usage and exits 0');
  });

  it('type-checks for a TypeScript consumer, as ESM and as CommonJS', () => {
    const consumer = `
      import knex from 'knex';
      import Koa from 'koa';
      import Router from '@koa/router';
      import { TransactionManager, ConflictError, PersistentTransactionalScheduler, type PersistentContext, type Transaction, type TransactionMeta } from 'aftercommit';
      import { aftercommit, jobRoutes, jobsDashboard, metricsRoute, type AftercommitContext, type AftercommitOptions, type DashboardOptions, type JobRoutesOptions, type MetricsRouteOptions } from 'aftercommit/koa';
      const tm = new TransactionManager(knex({ client: 'better-sqlite3' }), { retries: 2, delay: { initial: 10 } });
      const meta: TransactionMeta = { user: 'alice' };
      const answer: Promise<number> = tm.run(async (tx: Transaction) => {
        tx.afterCommit((ok: boolean, n: number) => void (ok && n), 1);
        await tx.db('t').insert({ a: 1 });
        return 42;
      }, { metadata: meta });
      const wrapped: (a: number, b?: string) => Promise<string> = tm.wrap(async (a: number, b = 'x') => b + a);
      void answer; void wrapped; void ConflictError;

      // The README's job shape: parameters after the handle need no annotation.
      const scheduler = new PersistentTransactionalScheduler(tm);
      scheduler.define('salesReport', async (job, context, month) => ({ user: await context.get('user'), month, id: job.id }));
      scheduler.define('typed', async (_job, context: PersistentContext, month: string) => context.get(month));

      // Handlers given straight to aftercommit get a typed ctx.
      const app = new Koa();
      app.use(aftercommit({ manager: tm, scheduler }, async (ctx, next) => {
        ctx.transaction.afterCommit((ok) => void ok);
        await ctx.db('orders').insert({ total: 1 });
        const context = ctx.persistentContext([], { user: ctx.state.user });
        ctx.body = { id: ctx.scheduler.schedule('salesReport', context, '2026-10'), table: context.ref('user').table };
        // @ts-expect-error ctx.db is a knex transaction, not a number
        const wrong: number = ctx.db;
        void wrong;
        await next();
      }));
      // Middleware of differing state types still compose (the untyped overload).
      const forA: Koa.Middleware<{ a: number }> = async (ctx, next) => { ctx.state.a = 1; await next(); };
      const forB: Koa.Middleware<{ b: string }> = async (ctx, next) => { ctx.state.b = 'x'; await next(); };
      app.use(aftercommit({ manager: tm }, forA, forB));

      // A router whose routes aftercommit guards says so in its context type: no \`!\` needed.
      const router = new Router<Koa.DefaultState, AftercommitContext>();
      router.post('/reports/:month', async (ctx) => {
        await ctx.db('orders').where({ month: ctx.params.month });
        ctx.transaction.afterCommit((ok) => void ok);
        ctx.body = { id: ctx.scheduler.schedule('salesReport', ctx.persistentContext(), ctx.params.month) };
      });
      const guarded: Koa.Middleware<Koa.DefaultState, AftercommitContext> = async (ctx) => {
        ctx.body = await ctx.db('orders').count();
      };
      const options: AftercommitOptions = { manager: tm, scheduler, timeout: 5000 };
      const polling: JobRoutesOptions = { prefix: '/jobs', consume: false };
      app.use(aftercommit(options, router.routes(), router.allowedMethods(), guarded, jobRoutes(polling)));
      const metrics: MetricsRouteOptions = { scheduler, authorize: (ctx) => ctx.get('X-Token') === 'secret' };
      app.use(metricsRoute(metrics));
      const dashboard: DashboardOptions = { scheduler, authorize: (ctx) => ctx.get('X-Token') === 'secret', redact: ['password'], onAction: (event) => void event.affected };
      app.use(jobsDashboard(dashboard));
      void scheduler.admin.find({ state: 'failed' }, { limit: 10 }).then((page) => page.jobs.map((job) => job.requestId));

      // Outside aftercommit, Koa's own context has them as optional: most requests never got them.
      app.use(async (ctx, next) => {
        // @ts-expect-error ctx.db is undefined on a request that did not go through aftercommit
        await ctx.db('orders').count();
        // @ts-expect-error so is ctx.transaction
        ctx.transaction.setRollbackOnly();
        // @ts-expect-error and ctx.scheduler
        ctx.scheduler.schedule('salesReport');
        // @ts-expect-error ctx.db is a getter: it cannot be assigned
        ctx.db = undefined;
        if (ctx.transaction) ctx.body = { attempt: ctx.transaction.attempt };
        await next();
      });
    `;
    writeFileSync(join(app, 'consumer.mts'), consumer);
    writeFileSync(join(app, 'consumer.cts'), consumer.replace("import knex from 'knex';", "import knex = require('knex');").replace("import Koa from 'koa';", "import Koa = require('koa');"));
    const tsc = join(root, 'node_modules', '.bin', 'tsc');
    const flags = ['--noEmit', '--strict', '--module', 'node16', '--moduleResolution', 'node16', '--types', 'node', '--skipLibCheck', 'false'];
    run(tsc, [...flags, 'consumer.mts', 'consumer.cts'], app);
  });

  it('type-checks an Express app for a TypeScript consumer, as ESM and as CommonJS', () => {
    const consumer = `
      import knex from 'knex';
      import express from 'express';
      import type { NextFunction, Request, Response } from 'express';
      import { TransactionManager, TransactionalScheduler } from 'aftercommit';
      import { aftercommit, jobRoutes, jobsDashboard, metricsRoute, type AftercommitOptions, type AftercommitRequest, type JobRoutesOptions, type MetricsRouteOptions } from 'aftercommit/express';
      const tm = new TransactionManager(knex({ client: 'better-sqlite3' }));
      const scheduler = new TransactionalScheduler(tm);
      scheduler.define('double', async (_job, n: number) => n * 2);

      const app = express();
      app.use(express.json());

      // Handlers given straight to aftercommit get a typed req.
      app.use(aftercommit({ manager: tm, scheduler }, async (req, res, next) => {
        req.transaction.afterCommit((ok) => void ok);
        await req.db('orders').insert({ total: 1 });
        const context = req.persistentContext([], { user: req.user });
        // @ts-expect-error req.db is a knex transaction, not a number
        const wrong: number = req.db;
        void wrong;
        if (req.path === '/next') return next();
        res.status(202).json({ id: req.scheduler.schedule('double', 2), named: context.length });
      }));

      // A router whose routes aftercommit guards opts in with AftercommitRequest.
      const router = express.Router();
      router.post('/orders/:month', async (expressReq, res) => {
        const req = expressReq as AftercommitRequest;
        await req.db('orders').where({ month: req.params.month });
        req.transaction.afterCommit((ok) => void ok);
        res.json({ id: req.scheduler.schedule('double', 3) });
      });
      const guarded = async (req: AftercommitRequest, res: Response) => {
        res.json(await req.db('orders').count());
      };
      const options: AftercommitOptions = {
        manager: tm,
        scheduler,
        timeout: 5000,
        user: (req) => (req.user as { id?: string } | undefined)?.id,
        rollbackOn: (_req, res) => res.statusCode >= 500,
      };
      const polling: JobRoutesOptions = { prefix: '/jobs', consume: false };
      app.use(aftercommit(options, router, guarded, jobRoutes(polling)));
      const metrics: MetricsRouteOptions = { scheduler, authorize: (req) => req.get('X-Token') === 'secret' };
      app.use(metricsRoute(metrics));

      // Outside aftercommit, Express's own Request has them as optional: most requests never got them.
      app.use(async (req: Request, res: Response, next: NextFunction) => {
        // @ts-expect-error req.db is undefined on a request that did not go through aftercommit
        await req.db('orders').count();
        // @ts-expect-error so is req.transaction
        req.transaction.setRollbackOnly();
        // @ts-expect-error and req.scheduler
        req.scheduler.schedule('double', 1);
        // @ts-expect-error req.db is a getter: it cannot be assigned
        req.db = undefined;
        if (req.transaction) res.json({ attempt: req.transaction.attempt });
        else next();
      });
      // Error handlers after aftercommit see its errors.
      app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
        res.status((err as { status?: number }).status ?? 500).json({ error: String(err) });
      });
      app.listen(0);
    `;
    // req.user is Passport's; a consumer without Passport declares it.
    const declarations = "declare global { namespace Express { interface Request { user?: unknown } } }\nexport {};\n";
    writeFileSync(join(app, 'express-user.d.ts'), declarations);
    writeFileSync(join(app, 'express-consumer.mts'), consumer);
    writeFileSync(
      join(app, 'express-consumer.cts'),
      consumer.replace("import knex from 'knex';", "import knex = require('knex');").replace("import express from 'express';", "import express = require('express');"),
    );
    const tsc = join(root, 'node_modules', '.bin', 'tsc');
    const flags = ['--noEmit', '--strict', '--module', 'node16', '--moduleResolution', 'node16', '--types', 'node', '--skipLibCheck', 'false'];
    run(tsc, [...flags, 'express-user.d.ts', 'express-consumer.mts', 'express-consumer.cts'], app);
  });

  // Last: the tests above ran without the optional OpenTelemetry API, as most apps do.
  it('finds @opentelemetry/api once the app installs it, from ESM and from CommonJS, and traces', () => {
    const fromPackage = createRequire(join(app, 'node_modules', 'aftercommit', 'package.json'));
    assert.throws(() => fromPackage.resolve('@opentelemetry/api'), /Cannot find module/, 'the tests above ran without it');
    symlinkSync(join(root, 'node_modules', '@opentelemetry'), join(app, 'node_modules', '@opentelemetry'));
    const traced = `
      const exporter = new InMemorySpanExporter();
      trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));
      const db = knex({ client: 'better-sqlite3', connection: { filename: ':memory:' }, useNullAsDefault: true });
      await new TransactionManager(db).run((tx) => tx.db.raw('select 1'));
      await db.destroy();
      console.log(exporter.getFinishedSpans().map((span) => span.name).join(' '));
    `;
    writeFileSync(
      join(app, 'traced.mjs'),
      `import knex from 'knex';
       import { trace } from '@opentelemetry/api';
       import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
       import { TransactionManager } from 'aftercommit';
       ${traced}`,
    );
    writeFileSync(
      join(app, 'traced.cjs'),
      `const knex = require('knex');
       const { trace } = require('@opentelemetry/api');
       const { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } = require('@opentelemetry/sdk-trace-base');
       const { TransactionManager } = require('aftercommit');
       (async () => { ${traced} })().catch((err) => { console.error(err); process.exit(1); });`,
    );
    for (const program of ['traced.mjs', 'traced.cjs']) {
      assert.equal(run('node', [program], app).trim(), 'aftercommit.commit aftercommit.transaction', program);
    }
  });
});
