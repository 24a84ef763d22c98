/**
 * `scheduler.metrics()` and `metricsRoute()`, through Koa, Express 5 and
 * Express 4 on one persistent scheduler: requests interleaved across the three
 * apps schedule jobs, some of which fail; the route's Prometheus text, parsed
 * by a real parser, counts them while they wait (gauges read from the jobs
 * table) and once a worker ran them (this process's counters and histograms).
 * A request the app does not authorize gets 404, as if there were no route.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import Koa from 'koa';
import knexFactory from 'knex';
import parsePrometheus from 'parse-prometheus-text-format';
import { TransactionManager, TransactionalScheduler, type JobHandle, type Worker } from '../../lib/index.js';
import * as koa from '../../lib/koa/index.js';
import * as express from '../../lib/express/index.js';
import { eachDialect } from '../support/databases.js';
import { until } from '../support/helpers.js';
import { request, serve, type Served } from '../support/http.js';
import { persistentSuite } from '../support/persistent-suite.js';
import { frameworks } from './frameworks.js';

const ADMIN = { headers: { 'X-Role': 'metrics' } };

/** Scheduling route `POST /schedule/:job` under aftercommit, and metricsRoute for X-Role: metrics. */
type MetricsApp = (tm: TransactionManager, scheduler: koa.AftercommitOptions['scheduler'] & {}) => Promise<Served>;

const apps = frameworks<MetricsApp>(
  (tm, scheduler) => {
    const app = new Koa();
    app.use(koa.metricsRoute({ scheduler, authorize: (ctx) => ctx.get('X-Role') === 'metrics' }));
    app.use(
      koa.aftercommit({ manager: tm, scheduler }, async (ctx, next) => {
        const [, route, job] = ctx.path.split('/');
        if (ctx.method !== 'POST' || route !== 'schedule') return next();
        ctx.status = 202;
        ctx.body = { id: ctx.scheduler.schedule(job!) };
      }),
    );
    return serve(app);
  },
  (version) => (tm, scheduler) => {
    const app = version.app();
    app.use(express.metricsRoute({ scheduler, authorize: (req) => req.get('X-Role') === 'metrics' }));
    app.use(
      express.aftercommit({ manager: tm, scheduler }, (req, res, next) => {
        const [, route, job] = req.path.split('/');
        if (req.method !== 'POST' || route !== 'schedule') return next();
        res.status(202).json({ id: req.scheduler.schedule(job!) });
      }),
    );
    return serve(app);
  },
);

/** The samples of one family, as `labels → value`. */
async function scrape(url: string) {
  const response = await request(`${url}/metrics`, ADMIN);
  assert.equal(response.status, 200);
  const type = response.headers.get('content-type') ?? '';
  assert.ok(type.startsWith('text/plain;') && type.includes('version=0.0.4'), type);
  const families = parsePrometheus(response.body as string);
  const family = (name: string) => families.find((f) => f.name === name);
  const value = (name: string, labels: Record<string, string>) =>
    Number(family(name)?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))?.value ?? NaN);
  // The parser folds a labelled histogram's series into one sample of buckets (its count and labels are dropped): with the one
  // queue of these tests, the +Inf bucket is that queue's count.
  const histogramCount = (name: string) => Number(family(name)?.metrics[0]?.buckets?.['+Inf'] ?? NaN);
  return { text: response.body as string, families, family, value, histogramCount };
}

eachDialect('metrics', (database) => {
  const suite = persistentSuite(database, 'metrics', (scheduler) => {
    scheduler.define('works', async (_job: JobHandle) => 'ok');
    scheduler.define('fails', async (_job: JobHandle) => {
      throw new RangeError('as planned');
    });
  });
  const servers: Served[] = [];
  let worker: Worker | undefined;
  before(async () => {
    for (const [, app] of apps) servers.push(await app(suite.tm, suite.scheduler));
  });
  after(async () => {
    await worker?.stop();
    await Promise.all(servers.map((s) => s.close()));
  });

  it('counts waiting jobs from the table, then what the worker did, in each app’s route', async () => {
    // 30 requests interleaved across the three apps: 24 jobs that work, 6 that fail (at once: maxAttempts is 1 by default).
    const jobs = Array.from({ length: 30 }, (_, i) => (i % 5 === 4 ? 'fails' : 'works'));
    const responses = await Promise.all(jobs.map((job, i) => request(`${servers[i % servers.length]!.url}/schedule/${job}`, { method: 'POST' })));
    assert.deepEqual(
      responses.map((r) => r.status),
      jobs.map(() => 202),
    );

    for (const server of servers) {
      const before = await scrape(server.url);
      assert.equal(before.value('aftercommit_jobs', { queue: 'default', state: 'pending' }), 30);
      assert.equal(before.value('aftercommit_jobs', { queue: 'default', state: 'running' }), 0);
      assert.ok(before.value('aftercommit_oldest_due_seconds', { queue: 'default' }) >= 0);
      assert.equal(before.family('aftercommit_jobs_finished_total')?.metrics.length ?? 0, 0, 'nothing run yet in this process');
    }

    worker = suite.scheduler.worker({ concurrency: 4, minPollInterval: 10, maxPollInterval: 50 }).start();
    await until(async () => (await suite.scheduler.stats()).pending + (await suite.scheduler.stats()).running === 0, 20_000, 'the jobs to run');
    // A job's counters move just after its commit is visible: wait for the counters themselves.
    await until(
      async () => {
        const counted = await scrape(servers[0]!.url);
        const finished = (outcome: string) => counted.value('aftercommit_jobs_finished_total', { queue: 'default', outcome });
        return finished('done') === 24 && finished('failed') === 6 && counted.histogramCount('aftercommit_job_run_seconds') === 24;
      },
      10_000,
      'every run to be counted',
    );

    for (const server of servers) {
      const after = await scrape(server.url);
      assert.equal(after.value('aftercommit_jobs', { queue: 'default', state: 'pending' }), 0);
      assert.equal(after.value('aftercommit_jobs_finished_total', { queue: 'default', outcome: 'done' }), 24);
      assert.equal(after.value('aftercommit_jobs_finished_total', { queue: 'default', outcome: 'failed' }), 6);
      assert.equal(after.histogramCount('aftercommit_job_run_seconds'), 24);
      assert.equal(after.histogramCount('aftercommit_job_start_delay_seconds'), 30);
      assert.match(after.text, /^aftercommit_job_run_seconds_count\{queue="default"\} 24$/m);
      assert.match(after.text, /^aftercommit_job_start_delay_seconds_bucket\{queue="default",le="\+Inf"\} 30$/m);
      assert.equal(after.family('aftercommit_job_run_seconds')?.type, 'HISTOGRAM');
      assert.equal(after.value('aftercommit_lost_leases_total', { queue: 'default' }), 0);
    }
  });

  it('answers 404 to a request the app does not authorize, on every framework', async () => {
    for (const server of servers) {
      const denied = await request(`${server.url}/metrics`);
      assert.equal(denied.status, 404);
      assert.doesNotMatch(String(denied.body), /aftercommit_/);
    }
  });
});

const memoryKnex = () => knexFactory({ client: 'better-sqlite3', connection: { filename: ':memory:' }, useNullAsDefault: true });

describe('metricsRoute options', () => {
  const scheduler = new TransactionalScheduler(new TransactionManager(memoryKnex()));
  for (const [name, route] of [
    ['koa', koa.metricsRoute],
    ['express', express.metricsRoute],
  ] as const) {
    it(`${name}: authorize is required, and the path must start with /`, () => {
      assert.throws(() => route({ scheduler } as never), /options.authorize must be a function .* give \(\) => true to serve them to anyone/);
      assert.throws(() => route({ scheduler, authorize: () => true, path: 'metrics' }), /options.path must start with \//);
      assert.throws(() => route({ authorize: () => true } as never), /options.scheduler must be a scheduler/);
    });
  }
});

describe('the in-memory scheduler’s metrics', () => {
  it('counts its jobs in the default queue', async () => {
    const knexless = new TransactionManager(memoryKnex());
    const scheduler = new TransactionalScheduler(knexless);
    scheduler.define('works', async () => 'ok');
    scheduler.define('fails', async () => {
      throw new Error('as planned');
    });
    await Promise.all([1, 2, 3].map(() => knexless.run(async () => scheduler.schedule('works'))));
    await knexless.run(async () => scheduler.schedule('fails'));
    await until(() => scheduler.stats().done + scheduler.stats().failed === 4, 5000, 'the jobs to run');
    const { queues, runs } = await scheduler.metrics();
    assert.deepEqual(queues, { default: { waiting: 0, pending: 0, running: 0, oldestDueMs: null } });
    assert.equal(runs.default?.done, 3);
    assert.equal(runs.default?.failed, 1);
    assert.equal(runs.default?.runTime.count, 3);
    await scheduler.stop();
    await knexless.knex.destroy();
  });
});
