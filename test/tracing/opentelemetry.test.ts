/**
 * OpenTelemetry, with the SDK's in-memory exporter registered globally: a Koa
 * request's transaction attempt is a span under the request's server span, with
 * its COMMIT as a child; a worker's claim is a span; the job the request
 * scheduled runs in a span of its own trace, linked to the attempt span that
 * committed it (of a retried request, the last attempt), also for two requests
 * in flight at once. A stored traceparent that is not one gives no link. A
 * failed attempt's span tells the error without its SQL or values. Without a
 * registered SDK nothing is built.
 *
 * The job links to the attempt span rather than to the server span: the attempt
 * is what committed the job (a rolled-back attempt's schedule never existed),
 * and the server span is its parent.
 */
import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { context, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import Koa from 'koa';
import Router from '@koa/router';
import express from 'express';
import { ConflictError, type JobHandle, type Worker } from '../../lib/index.js';
import { aftercommit, type AftercommitContext } from '../../lib/koa/index.js';
import { aftercommit as expressAftercommit, type AftercommitRequest } from '../../lib/express/index.js';
import { AttemptSpan, isTraceparent, loadOptional } from '../../lib/support/tracing.js';
import { eachDialect } from '../support/databases.js';
import { barrier, until } from '../support/helpers.js';
import { request, serve, type Served } from '../support/http.js';
import { persistentSuite } from '../support/persistent-suite.js';

it('builds no span while no SDK is registered, and takes a missing optional module for absent', () => {
  assert.equal(AttemptSpan.start('no SDK yet', 1, false), undefined);
  assert.equal(loadOptional('@opentelemetry/no-such-package'), undefined);
  assert.equal(typeof loadOptional<{ trace: unknown }>('@opentelemetry/api')?.trace, 'object');
});

it('accepts only a well-formed W3C traceparent', () => {
  assert.ok(isTraceparent('00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'));
  for (const malformed of [
    '00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01', // upper case
    '00-00000000000000000000000000000000-b7ad6b7169203331-01', // no trace id
    '00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01', // no span id
    'ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', // another version
    '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra',
    '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331',
    ' 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
    42,
    null,
    { traceId: '0af7651916cd43dd8448eb211c80319c' },
  ]) {
    assert.equal(isTraceparent(malformed), false, JSON.stringify(malformed));
  }
});

const exporter = new InMemorySpanExporter();
const spans = () => exporter.getFinishedSpans();
const named = (name: string) => spans().filter((s) => s.name === name);
const idOf = (span: ReadableSpan) => span.spanContext().spanId;
const traceOf = (span: ReadableSpan) => span.spanContext().traceId;
const childrenOf = (parent: ReadableSpan, name: string) => named(name).filter((s) => s.parentSpanContext?.spanId === idOf(parent));
const jobSpanOf = (id: string) => named('aftercommit.job').find((s) => s.attributes['aftercommit.job.id'] === id);
const serverSpanOf = (label: string) => named('HTTP POST').find((s) => s.attributes['test.label'] === label)!;
/** The attempt spans of the request `label`, in attempt order. */
const attemptsOf = (label: string) =>
  childrenOf(serverSpanOf(label), 'aftercommit.transaction').sort(
    (a, b) => Number(a.attributes['aftercommit.transaction.attempt']) - Number(b.attributes['aftercommit.transaction.attempt']),
  );
const linksOf = (span: ReadableSpan) => span.links.map((link) => ({ traceId: link.context.traceId, spanId: link.context.spanId }));
const asLink = (span: ReadableSpan) => ({ traceId: traceOf(span), spanId: idOf(span) });

describe('with an OpenTelemetry SDK registered', () => {
  before(() => {
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));
  });
  after(() => {
    trace.disable();
    context.disable();
  });
  afterEach(() => exporter.reset());

  // MariaDB for the real deadlock; SQLite for the rest (and a forced conflict).
  eachDialect(
    'spans of a Koa app and of the jobs it schedules',
    (database) => {
      const suite = persistentSuite(database, 'otel', (scheduler) => {
        scheduler.define('deliver', async (job: JobHandle, label: string) => `delivered ${label}`);
        scheduler.define('refuse', async () => {
          throw new RangeError('refused on purpose');
        });
      });
      let accounts: string;
      let server: Served;
      let expressServer: Served;
      let worker: Worker;
      let startupTrace: string;
      let meeting = barrier(2);

      before(async () => {
        accounts = database.table('accounts');
        await suite.knex.schema.createTable(accounts, (t) => {
          t.integer('id').primary();
          t.integer('balance').notNullable();
        });
        await suite.knex(accounts).insert([
          { id: 1, balance: 100 },
          { id: 2, balance: 100 },
        ]);
        const router = new Router<Koa.DefaultState, AftercommitContext>();
        const scheduled = (ctx: AftercommitContext & Koa.Context) => {
          ctx.status = 202;
          ctx.body = { id: ctx.scheduler.schedule('deliver', ctx.params.label) };
        };
        router.post('/orders/:label', async (ctx) => {
          if (ctx.get('X-Meet')) await meeting.arrive(); // both requests are in their transactions before either schedules
          scheduled(ctx);
        });
        router.post('/conflicts/:label', async (ctx) => {
          scheduled(ctx);
          if (ctx.transaction.attempt === 1) throw new ConflictError('the first attempt collides');
        });
        // Two of these in opposite directions deadlock on their first attempts (MariaDB).
        router.post('/transfers/:label/:from/:to', async (ctx) => {
          await ctx.db(accounts).where({ id: Number(ctx.params.from) }).decrement('balance', 1);
          if (ctx.transaction.attempt === 1) await meeting.arrive();
          await ctx.db(accounts).where({ id: Number(ctx.params.to) }).increment('balance', 1);
          scheduled(ctx);
        });
        router.post('/broken/:label', async (ctx) => {
          await ctx.db('no_such_table_otel').insert({ secret: 'hunter2' });
        });
        const app = new Koa();
        app.silent = true;
        // What an HTTP instrumentation does: a server span, active while the request is handled.
        const http = trace.getTracer('test-http');
        app.use(async (ctx, next) => {
          const span = http.startSpan('HTTP POST', { kind: SpanKind.SERVER, attributes: { 'test.label': ctx.path.split('/')[2] } });
          try {
            await context.with(trace.setSpan(context.active(), span), next);
          } finally {
            span.end();
          }
        });
        app.use(aftercommit({ manager: suite.tm, scheduler: suite.scheduler }, router.routes()));
        server = await serve(app);

        const expressApp = express();
        expressApp.use((req, res, next) => {
          const span = http.startSpan('HTTP POST', { kind: SpanKind.SERVER, attributes: { 'test.label': req.path.split('/')[2] } });
          res.on('finish', () => span.end());
          context.with(trace.setSpan(context.active(), span), next);
        });
        const expressRouter = express.Router();
        expressRouter.post('/orders/:label', (expressReq, res) => {
          const req = expressReq as AftercommitRequest;
          res.status(202).json({ id: req.scheduler.schedule('deliver', req.params.label) });
        });
        expressApp.use(expressAftercommit({ manager: suite.tm, scheduler: suite.scheduler }, expressRouter));
        expressServer = await serve(expressApp);

        // Started inside a span: the worker's claims are roots all the same.
        worker = http.startActiveSpan('startup', (span) => {
          startupTrace = span.spanContext().traceId;
          try {
            return suite.scheduler.worker({ minPollInterval: 20, maxPollInterval: 100 }).start();
          } finally {
            span.end();
          }
        });
      });
      after(async () => {
        await worker.stop();
        await server.close();
        await expressServer.close();
        await suite.knex.schema.dropTableIfExists(accounts);
      });

      const post = async (path: string, headers: Record<string, string> = {}) => {
        const response = await request(`${server.url}${path}`, { method: 'POST', headers });
        assert.equal(response.status, 202, JSON.stringify(response.body));
        return (response.body as { id: string }).id;
      };
      const jobSpans = async (...ids: string[]) => {
        await until(() => ids.every((id) => jobSpanOf(id)), 15_000, 'the job spans');
        return ids.map((id) => jobSpanOf(id)!);
      };

      it('a request: its attempt under the server span, COMMIT under that; the job links to the attempt', async () => {
        const id = await post('/orders/single');
        const [job] = await jobSpans(id);
        const serverSpan = serverSpanOf('single');
        const attempts = attemptsOf('single');
        assert.equal(attempts.length, 1);
        const attempt = attempts[0]!;
        assert.equal(traceOf(attempt), traceOf(serverSpan));
        assert.deepEqual(attempt.attributes, {
          'aftercommit.transaction.name': 'POST /orders/single',
          'aftercommit.transaction.attempt': 1,
          'aftercommit.transaction.escalated': false,
          'aftercommit.transaction.outcome': 'commit',
        });
        const commits = childrenOf(attempt, 'aftercommit.commit');
        assert.equal(commits.length, 1, 'one COMMIT, a child of the attempt');
        assert.equal(commits[0]!.kind, SpanKind.CLIENT);
        assert.equal(commits[0]!.status.code, SpanStatusCode.UNSET);

        assert.equal(job!.parentSpanContext, undefined, 'a job run starts a trace of its own');
        assert.notEqual(traceOf(job!), traceOf(serverSpan));
        assert.equal(job!.kind, SpanKind.CONSUMER);
        assert.deepEqual(linksOf(job!), [asLink(attempt)]);
        assert.deepEqual(job!.attributes, {
          'aftercommit.job.name': 'deliver',
          'aftercommit.job.id': id,
          'aftercommit.job.queue': 'default',
          'aftercommit.job.run': 1,
          'aftercommit.job.attempt': 1,
          'aftercommit.job.outcome': 'done',
        });
        const jobAttempts = childrenOf(job!, 'aftercommit.transaction');
        assert.deepEqual(
          jobAttempts.map((s) => [s.attributes['aftercommit.transaction.name'], s.attributes['aftercommit.transaction.outcome']]),
          [['job deliver', 'commit']],
        );
        assert.equal(childrenOf(jobAttempts[0]!, 'aftercommit.commit').length, 1);

        const claims = named('aftercommit.claim').filter((s) => s.attributes['aftercommit.claim.count'] === 1);
        assert.ok(claims.length >= 1, 'the claim that took the job');
        assert.deepEqual(claims[0]!.attributes['aftercommit.claim.queues'], ['default']);
        assert.equal(claims[0]!.attributes['aftercommit.worker.id'], worker.id);
        assert.equal(claims[0]!.parentSpanContext, undefined, 'a claim starts a trace of its own');
        assert.equal(childrenOf(claims[0]!, 'aftercommit.transaction').length, 1, 'the claim transaction is its child');

        // The admin shows the stored trace context.
        const detail = await suite.scheduler.admin.get(id);
        assert.equal(detail!.traceparent, `00-${traceOf(attempt)}-${idOf(attempt)}-01`);
      });

      it('a worker started inside a span keeps none of its work in that trace: a failed job’s bookkeeping is a root', async () => {
        const id = await suite.tm.run(async () => suite.scheduler.schedule('refuse'));
        await until(async () => (await suite.scheduler.getResult(id)).state === 'failed', 15_000, 'the job to fail');
        await until(() => named('aftercommit.transaction').some((s) => s.attributes['aftercommit.transaction.name'] === 'record a failed job'), 5000, 'its bookkeeping span');
        const bookkeeping = named('aftercommit.transaction').find((s) => s.attributes['aftercommit.transaction.name'] === 'record a failed job')!;
        assert.equal(bookkeeping.parentSpanContext, undefined, 'a root, not a child of the span the worker was started in');
        assert.deepEqual(exporter.getFinishedSpans().filter((s) => traceOf(s) === startupTrace), [], 'nothing in the startup’s trace');
      });

      it('an Express request: its attempt under the server span; the job links to the attempt', async () => {
        const response = await request(`${expressServer.url}/orders/by-express`, { method: 'POST' });
        assert.equal(response.status, 202);
        const [job] = await jobSpans((response.body as { id: string }).id);
        const [attempt, ...more] = attemptsOf('by-express');
        assert.equal(more.length, 0);
        assert.equal(attempt!.attributes['aftercommit.transaction.outcome'], 'commit');
        assert.deepEqual(linksOf(job!), [asLink(attempt!)]);
      });

      it('two requests in flight at once: each job links to its own request', async () => {
        meeting = barrier(2);
        const ids = await Promise.all([post('/orders/left', { 'X-Meet': '1' }), post('/orders/right', { 'X-Meet': '1' })]);
        const jobs = await jobSpans(...ids);
        assert.notEqual(traceOf(serverSpanOf('left')), traceOf(serverSpanOf('right')));
        for (const [i, label] of ['left', 'right'].entries()) {
          const [attempt, ...others] = attemptsOf(label);
          assert.equal(others.length, 0);
          assert.deepEqual(linksOf(jobs[i]!), [asLink(attempt!)], `the job of ${label}`);
        }
      });

      it('a retried request: two attempt spans, and the job links to the one that committed', async () => {
        let labels: string[];
        if (database.name === 'sqlite') {
          await post('/conflicts/retried');
          labels = ['retried'];
        } else {
          meeting = barrier(2);
          await Promise.all([post('/transfers/one-way/1/2'), post('/transfers/other-way/2/1')]);
          labels = ['one-way', 'other-way'];
        }
        await until(() => named('aftercommit.job').length === labels.length, 15_000, 'the job spans');
        const retried = labels.filter((label) => attemptsOf(label).length === 2);
        assert.equal(retried.length, 1, 'one request was retried');
        for (const label of labels) {
          const attempts = attemptsOf(label);
          const committed = attempts.at(-1)!;
          assert.equal(committed.attributes['aftercommit.transaction.outcome'], 'commit');
          const [job, ...more] = named('aftercommit.job').filter((s) => linksOf(s)[0]?.traceId === traceOf(serverSpanOf(label)));
          assert.equal(more.length, 0, `one job of ${label}`);
          assert.deepEqual(linksOf(job!), [asLink(committed)], `the job of ${label} links to the attempt that committed`);
        }
        const [first, second] = attemptsOf(retried[0]!);
        assert.equal(first!.attributes['aftercommit.transaction.outcome'], 'retry');
        assert.equal(first!.attributes['aftercommit.transaction.conflict'], database.name === 'sqlite' ? 'AFTERCOMMIT_CONFLICT' : 'ER_LOCK_DEADLOCK');
        assert.equal(first!.status.code, SpanStatusCode.UNSET, 'a retried attempt is handled, not an error');
        assert.equal(first!.events[0]?.name, 'exception');
        assert.equal(childrenOf(first!, 'aftercommit.commit').length, 0);
        assert.equal(second!.attributes['aftercommit.transaction.attempt'], 2);
        if (database.name === 'mysql') assert.equal(second!.attributes['aftercommit.transaction.escalated'], true);
      });

      it('a failed attempt: an error span whose exception has no SQL and no values', async () => {
        const response = await request(`${server.url}/broken/failing`, { method: 'POST' });
        assert.equal(response.status, 500);
        const [attempt, ...more] = attemptsOf('failing');
        assert.equal(more.length, 0);
        assert.equal(attempt!.attributes['aftercommit.transaction.outcome'], 'rollback');
        assert.equal(attempt!.status.code, SpanStatusCode.ERROR);
        const exception = attempt!.events.find((e) => e.name === 'exception')!;
        assert.equal(exception.attributes!['exception.type'], 'DatabaseError');
        const shown = JSON.stringify([exception.attributes, attempt!.status, attempt!.attributes]);
        assert.doesNotMatch(shown, /hunter2|insert into|no_such_table_otel/i);
      });

      it('a stored traceparent that is not one gives no link, and the job runs', async () => {
        const jobs = `${suite.prefix}jobs`;
        const spoiled = ['00-zzf7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', '00-00000000000000000000000000000000-b7ad6b7169203331-01', 42];
        const ids: string[] = [];
        for (const traceparent of spoiled) {
          const id = await suite.tm.run(() => suite.scheduler.with({ queue: 'spoiled' }).schedule('deliver', 'spoiled'));
          const { meta } = (await suite.knex(jobs).where({ id }).first('meta')) as { meta: string };
          const stored = JSON.parse(meta) as [unknown, { traceparent?: unknown }];
          assert.ok(isTraceparent(stored[1].traceparent), 'a traced schedule stores its traceparent');
          stored[1].traceparent = traceparent;
          await suite.knex(jobs).where({ id }).update({ meta: JSON.stringify(stored) });
          assert.equal((await suite.scheduler.admin.get(id))!.traceparent, null);
          ids.push(id);
        }
        const spoiledWorker = suite.scheduler.worker({ queues: ['spoiled'], minPollInterval: 20, maxPollInterval: 100 }).start();
        try {
          for (const job of await jobSpans(...ids)) {
            assert.deepEqual(job.links, []);
            assert.equal(job.attributes['aftercommit.job.outcome'], 'done');
          }
        } finally {
          await spoiledWorker.stop();
        }
      });
    },
    ['sqlite', 'mysql'],
  );
});
