/**
 * The example's flow over HTTP against MariaDB, with the jobs run by two
 * separate worker processes (npm run worker): reports scheduled by interleaved
 * users, progress seen while they run, totals as the database says, and nobody
 * sees another user's job or report; year reports, whose twelve month reports
 * the worker processes share and whose callback writes the year's summary once.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import type { Knex } from 'knex';
import { eachDialect } from '../support/databases.js';
import { request } from '../support/http.js';
import { until } from '../support/helpers.js';
import { monthsOf } from '../../example-app/year-report.js';
import { expectedTotals, expectedYear, startExample, type Example } from './serve.js';

eachDialect(
  'the example over HTTP with two worker processes',
  (database) => {
    let knex: Knex;
    let example: Example;
    const workers: ChildProcess[] = [];

    const drop = async () => {
      for (const table of ['year_summaries', 'reports', 'orders', 'users', 'aftercommit_jobs', 'aftercommit_schema']) await knex.schema.dropTableIfExists(table);
    };

    before(async () => {
      knex = database.knex();
      await drop();
      example = await startExample(knex, { embeddedWorker: false });
      for (let i = 0; i < 2; i++) {
        const worker = spawn(process.execPath, ['--import', 'tsx', 'lib/cli.ts', 'worker', '--jobs', 'example-app/jobs.ts', '--concurrency', '2'], {
          env: { ...process.env, DATABASE_URL: database.config.connection as string, REPORT_STEPS: '6', REPORT_STEP_MS: '150', MONTH_REPORT_MS: '150' },
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        await once(worker.stdout!, 'data'); // "aftercommit: worker … started"
        workers.push(worker);
      }
    });

    after(async () => {
      for (const worker of workers) worker.kill('SIGTERM');
      await Promise.all(workers.map((w) => once(w, 'exit')));
      await example.stop();
      await drop();
    });

    const as = (user: number) => ({ 'X-User': String(user), 'content-type': 'application/json' });

    /** Polls job `id` as `user` until it is no longer pending; `progressed`: it was seen part way (progress between 0 and 1) meanwhile. */
    async function settled<V>(id: string, user: number): Promise<{ result: { state: string; progress?: { fraction: number }; value?: V }; progressed: boolean }> {
      let result!: { state: string; progress?: { fraction: number }; value?: V };
      let progressed = false;
      await until(async () => {
        result = (await request(`${example.url}/jobs/${id}`, { headers: as(user) })).body;
        if (result.state === 'pending' && result.progress && result.progress.fraction > 0 && result.progress.fraction < 1) progressed = true;
        return result.state !== 'pending';
      }, 30_000);
      return { result, progressed };
    }

    it('interleaved users get their own reports, with progress, from the worker processes', async () => {
      const asks = [
        [1, '2026-10'],
        [2, '2026-10'],
        [1, '2026-09'],
        [3, '2026-07'],
        [2, '2026-03'],
        [1, '2026-01'],
      ] as const;
      const scheduled = await Promise.all(
        asks.map(async ([user, month]) => {
          const response = await request(`${example.url}/reports`, { method: 'POST', headers: as(user), body: JSON.stringify({ month }) });
          assert.equal(response.status, 202);
          return { user, month, id: (response.body as { id: string }).id };
        }),
      );
      let sawProgress = false;
      await Promise.all(
        scheduled.map(async ({ user, month, id }) => {
          const other = (user % 3) + 1;
          assert.equal((await request(`${example.url}/jobs/${id}`, { headers: as(other) })).status, 404, 'not to another user');
          const { result, progressed } = await settled<{ reportId: number; orders: number; totalCents: number }>(id, user);
          if (progressed) sawProgress = true;
          assert.equal(result.state, 'done');
          const expected = await expectedTotals(knex, user, month);
          assert.deepEqual({ orders: result.value!.orders, totalCents: result.value!.totalCents }, expected);
          const report = await request(`${example.url}/reports/${result.value!.reportId}`, { headers: as(user) });
          assert.deepEqual(report.body, { id: result.value!.reportId, month, ...expected });
          assert.equal((await request(`${example.url}/reports/${result.value!.reportId}`, { headers: as(other) })).status, 404);
        }),
      );
      assert.ok(sawProgress, 'progress was visible while a job ran in a worker process');
      assert.deepEqual(example.errors, []);
    });

    it('year reports: the worker processes share the months, the callback writes each summary once', async () => {
      // The web process runs no worker: every month report and callback runs in a worker process.
      const scheduled = await Promise.all(
        [1, 3].map(async (user) => {
          const response = await request(`${example.url}/year-reports`, { method: 'POST', headers: as(user), body: JSON.stringify({ year: '2026' }) });
          assert.equal(response.status, 202);
          const { id, poll, summary } = response.body as { id: string; poll: string; summary: string };
          assert.deepEqual({ poll, summary }, { poll: `/jobs/${id}`, summary: '/year-summaries/2026' });
          return { user, id };
        }),
      );
      let sawProgress = false;
      await Promise.all(
        scheduled.map(async ({ user, id }) => {
          assert.equal((await request(`${example.url}/jobs/${id}`, { headers: as(2) })).status, 404, 'not to another user');
          const { result, progressed } = await settled<{ state: string; value: { month: string; orders: number; totalCents: number } }[]>(id, user);
          if (progressed) sawProgress = true;
          assert.equal(result.state, 'done');
          const months = await Promise.all(monthsOf(2026).map(async (month) => ({ state: 'done', value: { month, ...(await expectedTotals(knex, user, month)) } })));
          assert.deepEqual(result.value, months, 'one outcome per month, in order');
          // The callback commits a moment after the batch: its summary, once it is there.
          let summary!: { batchId?: string; year: number; orders: number; totalCents: number };
          await until(async () => {
            const response = await request(`${example.url}/year-summaries/2026`, { headers: as(user) });
            summary = response.body;
            return response.status === 200 && summary.batchId === id;
          }, 30_000);
          assert.deepEqual({ year: summary.year, orders: summary.orders, totalCents: summary.totalCents }, { year: 2026, ...(await expectedYear(knex, user, 2026)) });
          assert.equal((await knex('year_summaries').where({ batch_id: id })).length, 1, 'written once');
        }),
      );
      assert.ok(sawProgress, 'the fraction of months done was visible while the batch ran');
      assert.equal((await request(`${example.url}/year-summaries/2026`, { headers: as(2) })).status, 404, 'nobody else’s summary');
      assert.deepEqual(example.errors, []);
    });

    it('bad input answers 400/404 with a clear message', async () => {
      const cases: [string, RequestInit, number, string][] = [
        ['/reports', { method: 'POST', headers: as(1), body: JSON.stringify({ month: '2026-13' }) }, 400, 'month must look like 2026-10 (YYYY-MM), got "2026-13"'],
        ['/reports', { method: 'POST', headers: as(1), body: JSON.stringify({ month: '2999-01' }) }, 400, '2999-01 is in the future: there are no orders yet'],
        ['/reports', { method: 'POST', headers: as(1), body: '{not json' }, 400, 'the request body is not valid JSON'],
        ['/reports', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ month: '2026-10' }) }, 401, 'log in first'],
        ['/year-reports', { method: 'POST', headers: as(1), body: JSON.stringify({ year: '26' }) }, 400, 'year must look like 2026 (YYYY), got "26"'],
        ['/year-reports', { method: 'POST', headers: as(1), body: JSON.stringify({ year: 2999 }) }, 400, '2999 is in the future: there are no orders yet'],
        ['/year-reports', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ year: '2026' }) }, 401, 'log in first'],
        ['/year-summaries/2025', { headers: as(1) }, 404, 'no summary of 2025 yet'],
        ['/year-summaries/abc', { headers: as(1) }, 404, 'no summary of abc yet'],
        ['/year-summaries/2026', {}, 401, 'log in first'],
        ['/reports/999999', { headers: as(1) }, 404, 'no such report'],
        ['/reports/abc', { headers: as(1) }, 404, 'no such report'],
        ['/jobs/0123456789abcdef0123456789abcdef', { headers: as(1) }, 404, 'no such job'],
        ['/jobs/not-an-id', { headers: as(1) }, 404, 'no such job'],
      ];
      for (const [path, init, status, message] of cases) {
        const response = await request(example.url + path, init);
        assert.deepEqual({ status: response.status, body: response.body }, { status, body: { error: message } }, path);
      }
      assert.deepEqual(example.errors, [], 'nothing in the server log is an unhandled error');
    });
  },
  ['mysql'],
);
