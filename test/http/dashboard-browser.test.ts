/**
 * The jobs dashboard as an admin uses it, in headless Chromium (Debian's
 * chromium, driven by playwright-core) against a Koa app on SQLite: the
 * overview counts the jobs the test made through real requests, run by a
 * worker in this process and one in a separate worker process; the failed ones
 * are filtered, one is opened (its error, the request it came from, the attempt
 * that committed it) and retried until done; a queue paused from the page keeps
 * new jobs pending in the worker process while other queues run, and they run
 * there when it is resumed; done jobs are deleted by a filter. A non-admin gets 404 for the page and its script; a redacted field
 * never reaches the page. Screenshots of each view go to test-artifacts/.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Koa from 'koa';
import knexFactory, { type Knex } from 'knex';
import { chromium, type Browser, type Page } from 'playwright-core';
import { PersistentTransactionalScheduler, TransactionManager, type JobHandle, type Worker } from '../../lib/index.js';
import { aftercommit, jobsDashboard } from '../../lib/koa/index.js';
import { recordingLogger, until } from '../support/helpers.js';
import { startWorker, type WorkerProcess } from '../support/workers.js';
import { request, serve, type Served } from '../support/http.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const skip = !existsSync(CHROMIUM) && process.env.CI !== 'true' ? `no Chromium at ${CHROMIUM} (apt-get install chromium; CI installs it)` : false;

describe('the jobs dashboard in a browser', { skip }, () => {
  let dir: string;
  let knex: Knex;
  let scheduler: PersistentTransactionalScheduler;
  let worker: Worker; // in this process: the default queue
  let reportsWorker: WorkerProcess; // a separate process: the reports and other queues
  let server: Served;
  let browser: Browser;
  let page: Page;
  const firstRuns = new Set<number>();

  /** Schedules through a real request: `POST /schedule/:job/:n?queue=` with a request id. */
  const schedule = (job: string, n: number, queue = 'default') =>
    request(`${server.url}/schedule/${job}/${n}?queue=${queue}`, { method: 'POST', headers: { 'X-Request-Id': `req-${job}-${n}`, 'X-User': 'alice' } });
  const shot = (name: string) => page.screenshot({ path: `test-artifacts/dashboard-${name}.png`, fullPage: true });
  const rowsOf = (selector: string) => page.locator(`${selector} tbody tr`);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'aftercommit-dashboard-'));
    knex = knexFactory({ client: 'better-sqlite3', connection: { filename: join(dir, 'jobs.sqlite') }, useNullAsDefault: true });
    const tm = new TransactionManager(knex, { logger: recordingLogger() });
    scheduler = new PersistentTransactionalScheduler(tm);
    scheduler.define('report', async (_job: JobHandle, n: number, _secret: { password: string }) => ({ report: n }));
    scheduler.define('flaky', async (_job: JobHandle, n: number) => {
      if (!firstRuns.has(n)) {
        firstRuns.add(n);
        throw new RangeError(`flaky ${n} fails its first run`);
      }
      return n;
    });
    await scheduler.migrate();
    worker = scheduler.worker({ queues: ['default'], concurrency: 2, minPollInterval: 20, maxPollInterval: 100 }).start();
    reportsWorker = startWorker(
      {
        AC_FIXTURE_CLIENT: 'better-sqlite3',
        AC_FIXTURE_CONNECTION: join(dir, 'jobs.sqlite'),
        AC_FIXTURE_PREFIX: 'aftercommit_',
        AC_FIXTURE_EFFECTS: 'none', // its report job writes no rows
        AC_FIXTURE_LEASE: '30000',
        AC_FIXTURE_POLL: JSON.stringify({ minPollInterval: 20, maxPollInterval: 100 }),
      },
      ['--queues', 'reports,other', '--concurrency', '2'],
    );
    const app = new Koa();
    app.use(jobsDashboard({ scheduler, authorize: (ctx) => ctx.cookies.get('role') === 'admin', redact: ['password'] }));
    app.use(
      aftercommit({ manager: tm, scheduler, user: (ctx) => ctx.get('X-User') || undefined }, async (ctx, next) => {
        const [, route, job, n] = ctx.path.split('/');
        if (route !== 'schedule') return next();
        const queue = String(ctx.query.queue ?? 'default');
        ctx.body = { id: (ctx.scheduler as PersistentTransactionalScheduler).with({ queue }).schedule(job!, Number(n), ...(job === 'report' ? [{ password: `hunter-${n}` }] : [])) };
      }),
    );
    server = await serve(app);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    await context.addCookies([{ name: 'role', value: 'admin', url: server.url }]);
    page = await context.newPage();
    mkdirSync('test-artifacts', { recursive: true });
  });

  after(async () => {
    await browser?.close();
    await worker?.stop();
    reportsWorker?.child.kill('SIGTERM');
    await reportsWorker?.exited;
    await server?.close();
    await knex?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the overview counts the jobs the requests made', async () => {
    for (let n = 0; n < 3; n++) assert.equal((await schedule('report', n, 'reports')).status, 200);
    for (let n = 0; n < 2; n++) assert.equal((await schedule('flaky', n)).status, 200);
    await until(async () => (await scheduler.admin.find({ state: 'failed' })).jobs.length === 2 && (await scheduler.admin.find({ state: 'done' })).jobs.length === 3, 40_000, 'the first runs (the worker process starts through tsx)');
    await page.goto(`${server.url}/admin/jobs`);
    assert.equal(await page.locator('#queues tr[data-queue="default"] td').nth(6).textContent(), '2', 'failed here');
    assert.equal(await page.locator('#queues tr[data-queue="reports"] td').nth(5).textContent(), '0', 'the reports ran in the other process');
    // Both processes' finished jobs, as their heartbeats (every 5 s) wrote them to the registry.
    await until(async () => (await page.textContent('#finished-total')) === '3 done, 2 failed', 30_000, 'the last hour’s chart');
    assert.equal(await page.locator('#finished rect').count() > 0, true, 'bars drawn');
    const workers = ((await rowsOf('#workers').allTextContents()) ?? []).join('\n');
    assert.match(workers, new RegExp(`:${reportsWorker.pid}:\\w+reports, other`), 'the worker process, serving reports');
    assert.match(workers, new RegExp(`:${process.pid}:\\w+default`), 'this process’s worker');
    await shot('overview');
  });

  it('filters the failed jobs, opens one: its error and the request it came from; retries it until done', async () => {
    await page.selectOption('#filter select[name=state]', 'failed');
    await page.click('#filter button[type=submit]');
    await until(async () => (await rowsOf('#jobs').count()) === 2, 10_000, 'the failed jobs listed');
    await shot('failed');
    await rowsOf('#jobs').first().click();
    await page.waitForSelector('#detail:not([hidden])');
    assert.match((await page.textContent('#detail-outcome')) ?? '', /^RangeError: flaky \d fails its first run$/);
    assert.match((await page.textContent('#detail-fields dd[data-field=request]')) ?? '', /^POST \/schedule\/flaky\/(\d) \(req-flaky-\1\)$/);
    assert.equal(await page.textContent('#detail-fields dd[data-field=owner]'), 'alice');
    assert.equal(await page.textContent('#detail-fields dd[data-field="committed by"]'), 'attempt 1');
    await shot('detail');
    await page.click('#same-request');
    await until(async () => (await rowsOf('#jobs').count()) === 1, 10_000, 'the jobs of its request');
    assert.match(await page.inputValue('#filter input[name=requestId]'), /^req-flaky-\d$/);
    await page.fill('#filter input[name=requestId]', '');
    await page.click('#retry');
    await until(async () => (await page.textContent('#detail-fields dd[data-field=state]')) === 'done', 15_000, 'the retried job done');
    const runs = await page.locator('#detail-runs tbody tr').allTextContents();
    assert.equal(runs.length, 2, 'its failed run and the retried one');
    assert.match(runs[0]!, new RegExp(`^1.*:${process.pid}:.*failed \\(RangeError\\)$`));
    assert.match(runs[1]!, /done$/);
  });

  it('opens a job by its id, and filters by creation time', async () => {
    const [job] = (await scheduler.admin.find({ name: 'report' }, { limit: 1 })).jobs;
    await page.fill('#lookup', job!.id);
    await page.click('#open');
    await until(async () => (await page.textContent('#detail-id')) === job!.id, 10_000, 'the job opened by id');
    await page.fill('#lookup', 'not-an-id');
    await page.click('#open');
    assert.equal(await page.textContent('#message'), 'a job id is 32 hex digits');
    await page.selectOption('#filter select[name=state]', '');
    await page.fill('#filter input[name=since]', '2999-01-01T00:00');
    await page.click('#filter button[type=submit]');
    await until(async () => (await rowsOf('#jobs').count()) === 0, 10_000, 'no job created after 2999');
    await page.fill('#filter input[name=since]', '');
    await page.fill('#filter input[name=until]', '2999-01-01T00:00');
    await page.click('#filter button[type=submit]');
    await until(async () => (await rowsOf('#jobs').count()) === 5, 10_000, 'every job created before 2999');
    await page.fill('#filter input[name=until]', '');
  });

  it('a paused queue keeps new jobs pending while others run, and runs them when resumed', async () => {
    await page.click('#queues tr[data-queue="reports"] button');
    await until(async () => (await page.textContent('#queues tr[data-queue="reports"] td')) === 'reports (paused)', 10_000, 'the pause shown');
    await schedule('report', 10, 'reports');
    await schedule('report', 11, 'reports');
    // After them, in the worker process's other queue: the claim that takes it passed over them.
    const marker = (await schedule('report', 12, 'other')).body as { id: string };
    await until(async () => (await scheduler.getResult(marker.id, { consume: false })).state === 'done', 15_000, 'the other queue’s job');
    assert.equal(((await scheduler.admin.get(marker.id))?.result as { pid?: number }).pid, reportsWorker.pid);
    await page.selectOption('#filter select[name=state]', 'pending');
    await page.click('#filter button[type=submit]');
    await until(async () => (await rowsOf('#jobs').count()) === 2, 10_000, 'the paused queue’s jobs pending');
    await shot('paused');
    assert.equal((await scheduler.admin.find({ queue: 'reports', state: 'pending' })).jobs.length, 2, 'still pending after the worker process’s claim');
    await page.click('#queues tr[data-queue="reports"] button');
    await until(async () => (await scheduler.admin.find({ queue: 'reports', state: 'done' })).jobs.length === 5, 15_000, 'the resumed jobs');
    for (const job of (await scheduler.admin.find({ queue: 'reports' })).jobs) {
      assert.equal(((await scheduler.admin.get(job.id))?.result as { pid?: number }).pid, reportsWorker.pid, 'run by the worker process');
    }
  });

  it('deletes done jobs by a filter, and never shows a redacted field', async () => {
    await page.selectOption('#filter select[name=state]', 'done');
    await page.fill('#filter input[name=name]', 'report');
    await page.click('#filter button[type=submit]');
    await until(async () => (await rowsOf('#jobs').count()) === 6, 10_000, 'the done reports listed');
    await rowsOf('#jobs').first().click();
    await until(async () => ((await page.textContent('#detail-args')) ?? '').includes('[redacted]'), 10_000, 'a report’s arguments');
    assert.doesNotMatch(await page.content(), /hunter-/);
    await page.click('#delete-all');
    await until(async () => (await rowsOf('#jobs').count()) === 0, 10_000, 'the list emptied');
    assert.match((await page.textContent('#message')) ?? '', /^delete all matching: 6 affected$/);
    assert.deepEqual((await scheduler.admin.find({ name: 'report' })).jobs, []);
  });

  it('answers 404 to anyone else, for the page, its script and its API; refuses a cross-site action', async () => {
    for (const path of ['/admin/jobs', '/admin/jobs/app.js', '/admin/jobs/api/overview']) assert.equal((await request(`${server.url}${path}`)).status, 404, path);
    const crossSite = await request(`${server.url}/admin/jobs/api/jobs/delete`, { method: 'POST', headers: { Cookie: 'role=admin', Origin: 'https://evil.example' } });
    assert.equal(crossSite.status, 403);
    const served = await request(`${server.url}/admin/jobs`, { headers: { Cookie: 'role=admin' } });
    assert.match(served.headers.get('content-security-policy') ?? '', /script-src 'self'/);
  });
});
