/**
 * The package as users get it: `npm pack`, unpacked into a fresh app next to its
 * peers, imported with `import` and with `require`, and type-checked as a
 * consumer would (moduleResolution node16, both module kinds).
 */
import { before, after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..');
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
    for (const peer of [...Object.keys(dependencies), 'knex', 'better-sqlite3', 'koa', '@koa/router', '@types']) {
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
      import { aftercommit, jobRoutes, type AftercommitContext, type AftercommitOptions, type JobRoutesOptions } from 'aftercommit/koa';
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
});
