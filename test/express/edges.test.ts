/**
 * aftercommit/express at its edges, over real HTTP on SQLite, under Express 5 and 4: answers Node
 * refuses, errors after the answer, falsy next() values, stale and timed-out attempts answering
 * late, jobRoutes outside aftercommit, req.db after a stream's first write, a raw body read in part,
 * the request and res.locals a retry starts from, sub-apps, kept references to res.write/res.end,
 * nested aftercommit, next() called twice, a 5xx status passed on, and the held state
 * (res.headersSent, res.writableEnded) an error handler reads. Each is a regression test for a
 * review finding. Two more show that a given-up attempt reaches nothing of the attempt that replaced
 * it (its res.status()/res.set(), its req.db writes).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createGzip } from 'node:zlib';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Knex } from 'knex';
import type { NextFunction, Request, Response } from 'express';
import { ConflictError, TransactionalScheduler, TransactionEndedError, TransactionManager, type JobHandle } from '../../lib/index.js';
import { aftercommit, jobRoutes, RequestTimeoutError, type AftercommitRequest } from '../../lib/express/index.js';
import { eachDialect } from '../support/databases.js';
import { deferred, finished, recordingLogger } from '../support/helpers.js';
import { request } from '../support/http.js';
import { errorsAsJson, routeFor, servers, type ErrorBody } from './support.js';
import { postInTwoParts } from './edges-support.js';
import { EXPRESS_VERSIONS } from './versions.js';

/** A client that never hangs a test: every request gives up after a few seconds. */
const patience = () => AbortSignal.timeout(5_000);

eachDialect(
  'aftercommit/express edges',
  (database) => {
    let knex: Knex;
    let notes: string;
    /** Every unhandled rejection while the suite runs (under Node's defaults one would end the process). */
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => void unhandled.push(reason);
    before(async () => {
      process.on('unhandledRejection', onUnhandled);
      knex = database.knex();
      notes = database.table('notes');
      await knex.schema.createTable(notes, (t) => {
        t.increments('id');
        t.string('text').notNullable();
      });
    });
    after(() => void process.off('unhandledRejection', onUnhandled));
    /** The committed rows whose text starts with `prefix`, in order of insertion. */
    const texts = async (prefix: string) => ((await knex(notes).where('text', 'like', `${prefix}%`).orderBy('id')) as { text: string }[]).map((r) => r.text);

    for (const version of EXPRESS_VERSIONS) {
      describe(version.name, () => {
        const v = version.name.replace(' ', '');
        const serve = servers();
        const route = routeFor(version);
        const logger = recordingLogger();
        let tm: TransactionManager;
        let scheduler: TransactionalScheduler;
        /** What the `edge-note` job saw of its request's row: the row's text, or null when it was not committed. */
        const jobSaw = new Map<string, string | null>();

        before(() => {
          tm = new TransactionManager(knex, { logger, delay: { initial: 1 } });
          scheduler = new TransactionalScheduler(tm);
          scheduler.define('edge-note', async (job: JobHandle, _context: unknown, text: string) => {
            const row = (await job.db(notes).where({ text }).first()) as { text: string } | undefined;
            jobSaw.set(text, row?.text ?? null);
            return { text };
          });
        });

        it('a response Node refuses (res.status(1000).json(), res.statusCode = 0 then res.end(), res.end(42)) fails the request with Node’s kind of error: the app’s error handler answers 500, the row written before is not committed, the process goes on', async () => {
          const unhandledBefore = unhandled.length;
          type Answer = (res: Response) => void;
          const cases: [string, Answer, { name: string; code: string | null }][] = [
            [
              'status-1000',
              (res) => void res.status(1000).json({ x: 1 }),
              // Express 5's res.status() refuses it itself (a RangeError without a code); Express 4 leaves it to Node.
              version.name === 'express 5' ? { name: 'RangeError', code: null } : { name: 'RangeError', code: 'ERR_HTTP_INVALID_STATUS_CODE' },
            ],
            [
              'status-0',
              (res) => {
                res.statusCode = 0; // e.g. an upstream status passed through
                res.end('x');
              },
              { name: 'RangeError', code: 'ERR_HTTP_INVALID_STATUS_CODE' },
            ],
            ['end-42', (res) => void res.end(42 as never), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }],
          ];
          for (const [name, answer, expected] of cases) {
            const text = `${v}-refused-${name}`;
            const seen: unknown[] = [];
            const guarded = version.app();
            guarded.use(
              aftercommit({ manager: tm }, async (req, res) => {
                await req.db(notes).insert({ text });
                answer(res);
              }),
            );
            guarded.use(errorsAsJson(seen));
            const plain = version.app(); // the same answer without aftercommit: what Node and Express make of it
            plain.use((_req: Request, res: Response) => answer(res));
            plain.use(errorsAsJson());
            const response = await request((await serve(guarded)).url, { signal: patience() });
            const control = await request((await serve(plain)).url, { signal: patience() });
            const body = response.body as ErrorBody;
            assert.equal(response.status, 500, name);
            assert.deepEqual({ name: body.name, code: body.code }, expected, name);
            assert.deepEqual({ status: control.status, name: (control.body as ErrorBody).name, code: (control.body as ErrorBody).code }, { status: 500, ...expected }, `${name}: as without aftercommit`);
            assert.equal(seen.length, 1, name);
            assert.deepEqual(await texts(text), [], name);
          }
          await new Promise(setImmediate);
          assert.deepEqual(unhandled.slice(unhandledBefore), []);
          const alive = version.app();
          alive.use(aftercommit({ manager: tm }, (_req, res) => void res.json({ alive: true })));
          assert.deepEqual((await request((await serve(alive)).url, { signal: patience() })).body, { alive: true });
        });

        it('an error passed on after the answer by a guarded error handler (`if (res.headersSent) return next(err)`) rolls the request back, and the client gets a well-formed 500 from the app’s error handler', async () => {
          const text = `${v}-after-answer`;
          const seen: unknown[] = [];
          const headersSent: boolean[] = [];
          const router = version.router();
          router.post(
            '/x',
            route(async (req, res, next) => {
              await req.db!(notes).insert({ text });
              res.json({ ok: true });
              next(new Error('something after the answer'));
            }),
          );
          router.use((err: unknown, _req: Request, res: Response, next: NextFunction) => {
            headersSent.push(res.headersSent);
            if (res.headersSent) return next(err);
            res.status(500).json({ error: 'internal error, please retry later' });
          });
          const app = version.app();
          app.use(aftercommit({ manager: tm }, router));
          app.use(errorsAsJson(seen));
          const response = await request(`${(await serve(app)).url}/x`, { method: 'POST', signal: patience() });
          assert.deepEqual({ status: response.status, body: response.body }, { status: 500, body: { error: 'something after the answer', name: 'Error', code: null } });
          assert.deepEqual(headersSent, [true]);
          assert.equal(seen.length, 1);
          assert.deepEqual(await texts(text), []);
        });

        it('next(null), next(false) and next(0) mean no error: the next guarded handler runs and the row commits', async () => {
          for (const value of [null, false, 0]) {
            const text = `${v}-falsy-${String(value)}`;
            const app = version.app();
            app.use(
              aftercommit(
                { manager: tm },
                async (req, _res, next) => {
                  await req.db(notes).insert({ text });
                  next(value);
                },
                (req, res) => void res.json({ second: true, open: req.transaction.isOpen }),
              ),
            );
            app.use((_req: Request, res: Response) => void res.status(404).json({ outside: true }));
            app.use(errorsAsJson());
            const response = await request((await serve(app)).url, { signal: patience() });
            assert.deepEqual({ status: response.status, body: response.body }, { status: 200, body: { second: true, open: true } }, `next(${String(value)})`);
            assert.deepEqual(await texts(text), [text], `next(${String(value)})`);
          }
        });

        it('a given-up attempt that answers late is not heard: after a conflict (next(e) without return) the client gets attempt 2’s answer and only attempt 2’s rows commit; after the timeout the client gets 503 AFTERCOMMIT_REQUEST_TIMEOUT, never the late 201, and nothing commits', async () => {
          // A stale attempt: attempt 1 answers while attempt 2 runs, attempt 2 answers after that.
          const text = `${v}-stale`;
          let attempts = 0;
          const attempt2Started = deferred();
          const attempt1Answered = deferred();
          const retried = version.app();
          retried.use(
            aftercommit({ manager: tm }, async (req, res, next) => {
              const attempt = ++attempts;
              try {
                await req.db(notes).insert({ text: `${text} a${attempt}-row1` });
                if (attempt === 1) throw new ConflictError('stale read'); // transient: all the handlers run again
              } catch (err) {
                next(err); // a common slip: no return
              }
              if (attempt === 1) {
                await attempt2Started.promise; // e.g. an external call that returns late
                res.json({ answeredBy: 'attempt 1' });
                attempt1Answered.resolve();
                return;
              }
              attempt2Started.resolve();
              await attempt1Answered.promise;
              await req.db(notes).insert({ text: `${text} a2-row2` });
              res.json({ answeredBy: 'attempt 2' });
            }),
          );
          retried.use(errorsAsJson());
          const response = await request((await serve(retried)).url, { signal: patience() });
          assert.deepEqual({ status: response.status, body: response.body }, { status: 200, body: { answeredBy: 'attempt 2' } });
          assert.equal(attempts, 2);
          assert.deepEqual(await texts(text), [`${text} a2-row1`, `${text} a2-row2`]);

          // A timed-out attempt: it answers 201 while the app's (async) error handler is busy with the timeout.
          const paid = `${v}-late-paid`;
          const errorHandlerEntered = deferred();
          const lateAnswered = deferred();
          const errors: unknown[] = [];
          const timed = version.app();
          timed.use(
            aftercommit({ manager: tm, timeout: 250 }, async (req, res) => {
              try {
                await req.db(notes).insert({ text: paid });
                await errorHandlerEntered.promise; // e.g. a payment provider's call, returning after the deadline
                res.status(201).json({ paid: true });
              } finally {
                lateAnswered.resolve();
              }
            }),
          );
          timed.use(async (err: { status?: number; code?: string }, _req: Request, res: Response, next: NextFunction) => {
            errors.push(err);
            errorHandlerEntered.resolve();
            await lateAnswered.promise; // e.g. reporting the error somewhere first
            if (res.headersSent) return next(err);
            res.status(err.status ?? 500).json({ error: err.code });
          });
          const late = await request((await serve(timed)).url, { signal: patience() });
          assert.deepEqual({ status: late.status, body: late.body }, { status: 503, body: { error: 'AFTERCOMMIT_REQUEST_TIMEOUT' } });
          assert.equal(errors.length, 1);
          assert.ok(errors[0] instanceof RequestTimeoutError);
          assert.deepEqual(await texts(paid), []);
        });

        /**
         * One request whose attempt 1 passes a ConflictError on (next(e), no return), waits for attempt 2 to
         * start, then does `late` (what a given-up attempt does after that); attempt 2 waits for `late` to be
         * done, writes the row `text` and answers `{ answeredBy: 'attempt 2' }`. The response, as the client gets it.
         */
        async function afterGivenUpAttempt(text: string, late: (req: AftercommitRequest, res: Response) => void | Promise<void>) {
          let attempts = 0;
          const attempt2Started = deferred();
          const attempt1Done = deferred();
          const app = version.app();
          app.use(
            aftercommit({ manager: tm }, async (req, res, next) => {
              const attempt = ++attempts;
              if (attempt === 1) {
                next(new ConflictError('stale read'));
                await attempt2Started.promise;
                await late(req, res);
                attempt1Done.resolve();
                return;
              }
              attempt2Started.resolve();
              await attempt1Done.promise;
              await req.db(notes).insert({ text });
              res.json({ answeredBy: 'attempt 2' });
            }),
          );
          app.use(errorsAsJson());
          return request((await serve(app)).url, { signal: patience() });
        }

        it(
          'a given-up attempt’s late res.status() and res.set() do not reach the answer of the attempt that replaced it',
          async () => {
            const text = `${v}-stale-status`;
            const response = await afterGivenUpAttempt(text, (_req, res) => void res.status(201).set('X-Stale', '1').json({ answeredBy: 'attempt 1' }));
            assert.deepEqual(
              { status: response.status, stale: response.headers.get('x-stale'), body: response.body },
              { status: 200, stale: null, body: { answeredBy: 'attempt 2' } },
            );
            assert.deepEqual(await texts(text), [text]);
          },
        );

        it(
          'a given-up attempt’s late req.db writes do not land in the transaction of the attempt that replaced it',
          async () => {
            const text = `${v}-stale-db`;
            const refusals: unknown[] = [];
            const response = await afterGivenUpAttempt(`${text} a2`, async (req) => {
              try {
                await req.db(notes).insert({ text: `${text} a1-late` });
              } catch (err) {
                refusals.push(err); // req.db throws TransactionEndedError in a given-up attempt
              }
            });
            assert.deepEqual({ status: response.status, body: response.body }, { status: 200, body: { answeredBy: 'attempt 2' } });
            assert.deepEqual(await texts(text), [`${text} a2`]);
            assert.deepEqual(
              refusals.map((err) => [(err as Error).name, (err as Error).message.split(':')[0]]),
              [['TransactionEndedError', 'req.db in an attempt of the request that was given up']],
            );
          },
        );

        it('jobRoutes() mounted outside aftercommit passes a TypeError saying where it belongs to the app’s error handler (no unhandled rejection)', async () => {
          const unhandledBefore = unhandled.length;
          const seen: unknown[] = [];
          const app = version.app();
          app.use(jobRoutes());
          app.use(errorsAsJson(seen));
          const response = await request(`${(await serve(app)).url}/jobs/0123456789abcdef0123456789abcdef`, { signal: patience() });
          const body = response.body as ErrorBody;
          assert.equal(response.status, 500);
          assert.equal(body.name, 'TypeError');
          assert.match(body.error, /jobRoutes\(\) must be mounted inside aftercommit/);
          assert.equal(seen.length, 1);
          assert.ok(seen[0] instanceof TypeError);
          await new Promise(setImmediate);
          assert.deepEqual(unhandled.slice(unhandledBefore), []);
        });

        it('a streaming handler that uses req.db after its first write: the TransactionEndedError reaches the app’s error handler, the connection is cut, and the row written before the first write is committed', async () => {
          const text = `${v}-stream-db`;
          const seen: unknown[] = [];
          const clientHasHeaders = deferred();
          const app = version.app();
          app.use(
            aftercommit({ manager: tm }, async (req, res) => {
              await req.db(notes).insert({ text });
              res.write('a'); // the answer: the transaction commits, then this goes out
              await clientHasHeaders.promise; // after the commit, for sure
              await req.db(notes).select(); // throws TransactionEndedError
              res.end('b');
            }),
          );
          app.use(errorsAsJson(seen)); // headers sent: next(err), and Express's own handler cuts the connection
          const response = await fetch((await serve(app)).url, { signal: patience() });
          assert.equal(response.status, 200);
          clientHasHeaders.resolve();
          const read = await response.text().then(
            (body) => ({ body }),
            (err: unknown) => ({ err }),
          );
          assert.ok(!('body' in read) || read.body !== 'ab', `the body must not end normally, got ${JSON.stringify(read)}`);
          if ('body' in read) assert.equal(read.body, 'a');
          assert.equal(seen.length, 1);
          assert.ok(seen[0] instanceof TransactionEndedError, `got ${String(seen[0])}`);
          assert.deepEqual(await texts(text), [text]);
        });

        it('a raw request body read in part inside the handlers, then a transient error: 500 AFTERCOMMIT_RETRY_NOT_SAFE, nothing committed', async () => {
          const text = `${v}-raw-part`;
          let attempts = 0;
          const firstChunkStored = deferred();
          const app = version.app();
          app.use(
            aftercommit({ manager: tm }, async (req, res) => {
              const attempt = ++attempts;
              const db = req.db;
              await new Promise<void>((resolve, reject) => {
                let chunks = 0;
                req.on('data', (chunk: Buffer) => {
                  db(notes)
                    .insert({ text: `${text} attempt ${attempt}: ${String(chunk)}` })
                    .then(() => {
                      firstChunkStored.resolve();
                      if (attempt === 1 && ++chunks === 1) reject(new ConflictError('deadlock while storing the upload'));
                    }, reject);
                });
                req.on('end', () => resolve());
              });
              res.json({ attempt, stored: 'the whole upload' });
            }),
          );
          app.use(errorsAsJson());
          const response = await postInTwoParts((await serve(app)).url, 'part1-', 'part2-', () => firstChunkStored.promise);
          assert.equal(response.status, 500);
          assert.equal((response.body as ErrorBody).code, 'AFTERCOMMIT_RETRY_NOT_SAFE');
          assert.equal(attempts, 1);
          assert.deepEqual(await texts(text), []);
        });

        it('a retry starts from the JSON body as parsed and res.locals as before the first attempt (an escape applied once, one trail entry), and res.locals keeps its identity', async () => {
          const text = `${v}-body`;
          let attempts = 0;
          let localsBefore: Record<string, unknown> | undefined;
          const sameLocals: boolean[] = [];
          const app = version.app();
          app.use(version.json());
          app.use((_req: Request, res: Response, next: NextFunction) => {
            res.locals.trail = [];
            localsBefore = res.locals;
            next();
          });
          app.use(
            aftercommit({ manager: tm }, async (req, res) => {
              const attempt = ++attempts;
              const body = req.body as { name: string; tags: string[] };
              sameLocals.push(res.locals === localsBefore);
              body.name = body.name.replace(/&/g, '&amp;'); // in place, as sanitizers do
              body.tags.push('seen');
              (res.locals.trail as string[]).push(`attempt ${attempt}`);
              await req.db(notes).insert({ text: `${text} ${body.name}` });
              if (attempt === 1) throw new ConflictError('stale');
              res.json({ name: body.name, tags: body.tags, trail: res.locals.trail });
            }),
          );
          app.use(errorsAsJson());
          const response = await request((await serve(app)).url, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ name: 'A&B', tags: [] }),
            signal: patience(),
          });
          assert.deepEqual(
            { status: response.status, body: response.body },
            { status: 200, body: { name: 'A&amp;B', tags: ['seen'], trail: ['attempt 2'] } },
          );
          assert.equal(attempts, 2);
          assert.deepEqual(sameLocals, [true, true]);
          assert.deepEqual(localsBefore?.trail, ['attempt 2']);
          assert.deepEqual(await texts(text), [`${text} A&amp;B`]);
        });

        it('an Express sub-app among the guarded handlers: its routes see req.db, req.transaction and req.scheduler, and a job they schedule runs after the commit', async () => {
          const text = `${v}-sub-app`;
          const api = version.app();
          api.post(
            '/sub',
            route(async (req, res) => {
              const r = req as AftercommitRequest;
              await r.db(notes).insert({ text });
              const id = r.scheduler.schedule('edge-note', r.persistentContext(), text);
              res.status(202).json({ id, attempt: r.transaction.attempt, open: r.transaction.isOpen, sameScheduler: r.scheduler === scheduler });
            }),
          );
          const app = version.app();
          app.use(aftercommit({ manager: tm, scheduler }, api));
          app.use(errorsAsJson());
          const response = await request(`${(await serve(app)).url}/sub`, { method: 'POST', signal: patience() });
          const body = response.body as { id: string; attempt: number; open: boolean; sameScheduler: boolean };
          assert.equal(response.status, 202, JSON.stringify(body));
          assert.deepEqual({ attempt: body.attempt, open: body.open, sameScheduler: body.sameScheduler }, { attempt: 1, open: true, sameScheduler: true });
          assert.deepEqual(await texts(text), [text]);
          assert.equal((await finished(scheduler, body.id)).state, 'done');
          assert.equal(jobSaw.get(text), text); // it ran after the commit: it read the request's row
        });

        it('a compression-style wrapper that keeps res.write/res.end and writes after the commit delivers the whole body, and an aftercommit nested in another’s handlers answers 200 and commits', async () => {
          const big = 'x'.repeat(100_000);
          /** As the compression middleware does: the methods kept, called later from zlib's output. */
          const compressionLike = (_req: Request, res: Response, next: NextFunction) => {
            const write = res.write as (this: Response, chunk: Buffer) => boolean;
            const end = res.end as (this: Response) => Response;
            const gzip = createGzip();
            gzip.on('data', (chunk: Buffer) => void write.call(res, chunk));
            gzip.on('end', () => void end.call(res));
            res.write = ((chunk: string | Buffer) => gzip.write(chunk)) as Response['write'];
            res.end = ((chunk?: string | Buffer) => {
              res.setHeader('Content-Encoding', 'gzip');
              res.removeHeader('Content-Length');
              if (chunk) gzip.write(chunk);
              gzip.end();
              return res;
            }) as Response['end'];
            next();
          };
          for (const where of ['before', 'inside']) {
            const text = `${v}-compressed-${where}`;
            const handler = async (req: AftercommitRequest, res: Response) => {
              await req.db(notes).insert({ text });
              res.send(big);
            };
            const app = version.app();
            if (where === 'before') app.use(compressionLike, aftercommit({ manager: tm }, handler));
            else app.use(aftercommit({ manager: tm }, compressionLike, handler));
            app.use(errorsAsJson());
            const response = await fetch((await serve(app)).url, { signal: patience() });
            assert.equal(response.status, 200, where);
            assert.equal(response.headers.get('content-encoding'), 'gzip', where);
            const received = await response.text();
            assert.equal(received.length, big.length, where);
            assert.equal(received, big, where);
            assert.deepEqual(await texts(text), [text], where);
          }

          const text = `${v}-nested`;
          const inner = version.router();
          inner.use(
            aftercommit({ manager: tm }, async (req, res) => {
              await req.db(notes).insert({ text: `${text} inner` });
              res.json({ nested: true });
            }),
          );
          const app = version.app();
          app.use(
            aftercommit(
              { manager: tm },
              async (req, _res, next) => {
                await req.db(notes).insert({ text: `${text} outer` });
                next();
              },
              inner,
            ),
          );
          app.use(errorsAsJson());
          const response = await request((await serve(app)).url, { signal: patience() });
          assert.deepEqual({ status: response.status, body: response.body }, { status: 200, body: { nested: true } });
          assert.deepEqual(await texts(text), [`${text} outer`, `${text} inner`]);
        });

        it('next() called twice: the second call is ignored and logged, the request commits once with the next handler’s answer; res.status(500) then next() from the guarded handlers rolls back', async () => {
          const text = `${v}-twice`;
          const requestId = `${v}-next-twice`;
          let reachedOutside = 0;
          const app = version.app();
          app.use(
            aftercommit(
              { manager: tm },
              (_req, _res, next) => {
                next();
                next();
              },
              async (req, res) => {
                await sleep(20); // long enough for a commit the second next() would have started
                await req.db(notes).insert({ text });
                res.json({ second: true });
              },
            ),
          );
          app.use((_req: Request, res: Response) => {
            reachedOutside++;
            res.status(404).json({ outside: true });
          });
          app.use(errorsAsJson());
          const response = await request((await serve(app)).url, { headers: { 'X-Request-Id': requestId }, signal: patience() });
          assert.deepEqual({ status: response.status, body: response.body }, { status: 200, body: { second: true } });
          assert.equal(reachedOutside, 0);
          assert.deepEqual(await texts(text), [text]);
          const logged = logger.lines.filter((l) => l.obj.requestId === requestId);
          assert.deepEqual(
            logged.map((l) => l.level),
            ['error'],
          );
          assert.match(logged[0]!.msg, /called next\(\) twice/);

          const failed = `${v}-status-500-next`;
          const passing = version.app();
          passing.use(
            aftercommit({ manager: tm }, async (req, res, next) => {
              await req.db(notes).insert({ text: failed });
              res.status(500);
              next();
            }),
          );
          passing.use((_req: Request, res: Response) => void res.json({ failed: true }));
          passing.use(errorsAsJson());
          const passed = await request((await serve(passing)).url, { signal: patience() });
          assert.deepEqual({ status: passed.status, body: passed.body }, { status: 500, body: { failed: true } });
          assert.deepEqual(await texts(failed), []);
        });

        it('a guarded error handler reads res.headersSent and res.writableEnded as false before any answer, and as true after res.json() while the response is held', async () => {
          const text = `${v}-held-state`;
          const states: { headersSent: boolean; writableEnded: boolean; open: boolean }[] = [];
          const app = version.app();
          app.use(
            aftercommit(
              { manager: tm },
              async (req: AftercommitRequest, _res: Response, next: NextFunction) => {
                await req.db(notes).insert({ text });
                next(new Error('boom'));
              },
              (err: Error, req: AftercommitRequest, res: Response, _next: NextFunction) => {
                const state = () => ({ headersSent: res.headersSent, writableEnded: res.writableEnded, open: req.transaction.isOpen });
                states.push(state());
                res.status(422).json({ handled: err.message });
                states.push(state());
              },
            ),
          );
          app.use(errorsAsJson());
          const response = await request((await serve(app)).url, { signal: patience() });
          assert.deepEqual({ status: response.status, body: response.body }, { status: 422, body: { handled: 'boom' } });
          assert.deepEqual(states, [
            { headersSent: false, writableEnded: false, open: true },
            { headersSent: true, writableEnded: true, open: true },
          ]);
          assert.deepEqual(await texts(text), [text]); // the guarded error handler took the error, with a 4xx: it commits
        });
      });
    }
  },
  ['sqlite'],
);
