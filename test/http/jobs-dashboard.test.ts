/**
 * The jobs dashboard's admin API (`jobsDashboard()`), through Koa, Express 5
 * and Express 4 on every database: closed by default (a non-admin gets 404 on
 * every route, the actions included), redacted fields never in an answer, an
 * action without the admin header refused (what a cross-site form or script
 * sends), and the actions working and reported: retry a failed job and see it
 * done, pause and resume a queue, delete by a filter; read-only hides them.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import Koa from 'koa';
import type { JobHandle, PersistentTransactionalScheduler, Worker } from '../../lib/index.js';
import type { DashboardAction } from '../../lib/koa/index.js';
import * as koa from '../../lib/koa/index.js';
import * as express from '../../lib/express/index.js';
import { eachDialect } from '../support/databases.js';
import { until } from '../support/helpers.js';
import { request, serve, type Served } from '../support/http.js';
import { persistentSuite } from '../support/persistent-suite.js';
import { frameworks } from './frameworks.js';

type DashboardApp = (scheduler: PersistentTransactionalScheduler, readOnly: boolean, actions: DashboardAction[]) => Promise<Served>;
const common = (actions: DashboardAction[], readOnly: boolean) => ({ redact: ['password'], readOnly, onAction: (event: DashboardAction) => actions.push(event) });

const apps = frameworks<DashboardApp>(
  (scheduler, readOnly, actions) => {
    const app = new Koa();
    app.use(koa.jobsDashboard({ scheduler, authorize: (ctx) => ctx.get('X-User') === 'admin', actor: (ctx) => ctx.get('X-User'), ...common(actions, readOnly) }));
    return serve(app);
  },
  (version) => (scheduler, readOnly, actions) => {
    const app = version.app();
    app.use(express.jobsDashboard({ scheduler, authorize: (req) => req.get('X-User') === 'admin', actor: (req) => req.get('X-User') ?? '', ...common(actions, readOnly) }));
    return serve(app);
  },
);

const ADMIN = { 'X-User': 'admin' };
const ACT = { ...ADMIN, 'X-Aftercommit-Admin': '1' };

eachDialect('jobs dashboard API', (database) => {
  const firstRuns = new Set<number>();
  const suite = persistentSuite(database, 'dash', (scheduler) => {
    scheduler.define('send', async (_job: JobHandle, message: { to: string; password: string }) => message.to);
    scheduler.define('flaky', async (_job: JobHandle, n: number) => {
      if (!firstRuns.has(n)) {
        firstRuns.add(n);
        throw new RangeError(`flaky ${n} fails its first run`);
      }
      return n;
    });
  });
  let worker: Worker;
  before(async () => {
    await suite.tm.run(async () => {
      for (let i = 0; i < 4; i++) suite.scheduler.schedule('send', { to: `user${i}@example.com`, password: `pw-${i}` });
      for (let i = 0; i < 3; i++) suite.scheduler.with({ queue: 'reports' }).schedule('flaky', i);
    });
    worker = suite.scheduler.worker({ queues: ['default', 'reports'], concurrency: 4, minPollInterval: 10, maxPollInterval: 20 }).start();
    await until(async () => (await suite.scheduler.admin.find({ state: 'failed' })).jobs.length === 3, 15_000, 'the first runs'); // one retried by each framework's suite
  });
  after(() => worker.stop());

  for (const [name, app] of apps) {
    describe(name, () => {
      let server: Served;
      let readOnlyServer: Served;
      const actions: DashboardAction[] = [];
      before(async () => {
        server = await app(suite.scheduler, false, actions);
        readOnlyServer = await app(suite.scheduler, true, []);
      });
      after(() => Promise.all([server.close(), readOnlyServer.close()]));
      const api = (path: string, init: RequestInit = {}) => request(`${server.url}/admin/jobs/api${path}`, init);

      it('answers 404 to a non-admin on every route, actions included', async () => {
        const failedBefore = (await suite.scheduler.admin.find({ state: 'failed' })).jobs;
        const job = failedBefore[0];
        const routes: [string, string][] = [
          ['GET', '/overview'],
          ['GET', '/requests'],
          ['GET', '/jobs?state=failed'],
          ['GET', `/jobs/${job!.id}`],
          ['POST', `/jobs/${job!.id}/retry`],
          ['DELETE', `/jobs/${job!.id}`],
          ['POST', '/jobs/delete?state=done'],
          ['POST', '/queues/reports/pause'],
        ];
        for (const [method, path] of routes) {
          for (const headers of [{}, { 'X-User': 'bob', 'X-Aftercommit-Admin': '1' }] as Record<string, string>[]) {
            const answer = await api(path, { method, headers });
            assert.equal(answer.status, 404, `${method} ${path} as ${JSON.stringify(headers)}`);
            assert.doesNotMatch(JSON.stringify(answer.body), /flaky|user\d@/);
          }
        }
        assert.equal((await suite.scheduler.admin.find({ state: 'failed' })).jobs.length, failedBefore.length, 'nothing changed');
      });

      it('shows the overview, the failed jobs and one job with its password redacted', async () => {
        const overview = await api('/overview', { headers: ADMIN });
        assert.equal(overview.status, 200);
        assert.equal(overview.headers.get('cache-control'), 'no-store');
        assert.equal(overview.body.queues.reports.pending + overview.body.queues.reports.running, 0);
        assert.ok(overview.body.workers.some((w: { id: string }) => w.id === worker.id));
        const failed = await api('/jobs?state=failed&queue=reports', { headers: ADMIN });
        const stillFailed = (await suite.scheduler.admin.find({ state: 'failed', queue: 'reports' })).jobs.map((j) => j.id);
        assert.deepEqual(failed.body.jobs.map((j: { id: string }) => j.id), stillFailed);
        assert.ok(stillFailed.length > 0);
        const [send] = (await api('/jobs?name=send&limit=1', { headers: ADMIN })).body.jobs;
        const detail = await api(`/jobs/${send.id}`, { headers: ADMIN });
        assert.equal(detail.body.args[0].password, '[redacted]');
        const everything = JSON.stringify([failed.body, (await api('/jobs?limit=500', { headers: ADMIN })).body, detail.body]);
        assert.doesNotMatch(everything, /pw-\d/);
        assert.equal((await api('/jobs?state=lost', { headers: ADMIN })).status, 400);
        assert.equal((await api('/jobs?requestId=nul%00byte', { headers: ADMIN })).status, 400, 'a request id that is none: 400, never a database error');
        const requests = await api('/requests', { headers: ADMIN });
        assert.equal(requests.status, 200);
        assert.deepEqual(requests.body, { routes: [] }, 'no request of this manager was guarded (request-metrics.test.ts counts some)');
      });

      it('refuses an action without the admin header (what another site sends), then retries with it and the job is done', async () => {
        const [job] = (await suite.scheduler.admin.find({ state: 'failed', queue: 'reports' })).jobs;
        const refused = await api(`/jobs/${job!.id}/retry`, { method: 'POST', headers: { ...ADMIN, Origin: 'https://evil.example' } });
        assert.equal(refused.status, 403);
        assert.equal((await suite.scheduler.admin.get(job!.id))?.state, 'failed');
        const retried = await api(`/jobs/${job!.id}/retry`, { method: 'POST', headers: ACT });
        assert.deepEqual({ status: retried.status, body: retried.body }, { status: 200, body: { affected: 1 } });
        await until(async () => (await suite.scheduler.admin.get(job!.id))?.state === 'done', 15_000, 'the retried job');
        assert.deepEqual(actions.at(-1), { actor: 'admin', action: 'retry', id: job!.id, affected: 1 });
      });

      it('pauses and resumes a queue', async () => {
        assert.equal((await api('/queues/reports/pause', { method: 'POST', headers: ACT })).status, 200);
        assert.deepEqual((await api('/overview', { headers: ADMIN })).body.paused, ['reports']);
        assert.equal((await api('/queues/reports/resume', { method: 'POST', headers: ACT })).status, 200);
        assert.deepEqual((await api('/overview', { headers: ADMIN })).body.paused, []);
        assert.equal((await api('/queues/no%20spaces/pause', { method: 'POST', headers: ACT })).status, 400);
        // A queue name with a colon, percent-encoded as the page sends it.
        assert.equal((await api('/queues/mail%3Aeu/pause', { method: 'POST', headers: ACT })).status, 200);
        assert.deepEqual((await api('/overview', { headers: ADMIN })).body.paused, ['mail:eu']);
        assert.equal((await api('/queues/mail%3Aeu/resume', { method: 'POST', headers: ACT })).status, 200);
      });

      it('read-only: shows, but hides every action', async () => {
        const [job] = (await suite.scheduler.admin.find({ state: 'failed' })).jobs;
        const ro = (path: string, init: RequestInit) => request(`${readOnlyServer.url}/admin/jobs/api${path}`, init);
        assert.equal((await ro('/overview', { headers: ADMIN })).status, 200);
        assert.equal((await ro(`/jobs/${job?.id ?? '0'.repeat(32)}/retry`, { method: 'POST', headers: ACT })).status, 404);
        assert.equal((await ro('/jobs/delete?name=send', { method: 'POST', headers: ACT })).status, 404);
      });
    });
  }

  it('refuses a bulk filter it cannot read, rather than applying it to every job', async () => {
    const server = await apps[1]![1](suite.scheduler, false, []);
    try {
      const before = (await suite.scheduler.admin.find({}, { limit: 500 })).jobs.length;
      for (const query of ['State=done', 'state=done&state=done', 'state=', 'queue[]=reports', '']) {
        const answer = await request(`${server.url}/admin/jobs/api/jobs/delete?${query}`, { method: 'POST', headers: ACT });
        assert.equal(answer.status, 400, query);
      }
      assert.equal((await suite.scheduler.admin.find({}, { limit: 500 })).jobs.length, before, 'nothing deleted');
      const browserCrossSite = await request(`${server.url}/admin/jobs/api/jobs/delete?name=none`, { method: 'POST', headers: { ...ACT, 'Sec-Fetch-Site': 'cross-site' } });
      assert.equal(browserCrossSite.status, 403, 'a browser says another site sent it, whatever CORS allowed');
    } finally {
      await server.close();
    }
  });

  it('deletes the jobs matching a filter (bulk), once', async () => {
    const actions: DashboardAction[] = [];
    const server = await apps[0]![1](suite.scheduler, false, actions);
    try {
      const done = (await suite.scheduler.admin.find({ name: 'send', state: 'done' })).jobs.length;
      assert.equal(done, 4);
      const answers = await Promise.all(
        [1, 2].map(() => request(`${server.url}/admin/jobs/api/jobs/delete?name=send&state=done`, { method: 'POST', headers: ACT })),
      );
      assert.equal(answers.reduce((sum, a) => sum + (a.body as { affected: number }).affected, 0), 4, 'each job deleted once');
      assert.deepEqual((await suite.scheduler.admin.find({ name: 'send' })).jobs, []);
    } finally {
      await server.close();
    }
  });
});
