/**
 * Streaming responses under aftercommit/express, on Express 5 and 4: a
 * `res.sendFile`, server-sent events and a stream piped into `res` commit when
 * their stream starts, before its first byte reaches the client, and the rest
 * goes straight out, outside the transaction (`req.db` then throws
 * TransactionEndedError). A transient error at that commit does not run the
 * streaming handler again: RetryNotSafeError, nothing committed, nothing of the
 * stream sent. A streaming handler that fails once its commit has begun has
 * its error passed on to the app's error handlers, which cut the connection.
 * (A raw body read inside the handlers is in adapter.test.ts.)
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Knex } from 'knex';
import type { Request, Response } from 'express';
import { ConflictError, TransactionManager } from '../../lib/index.js';
import { aftercommit, type AftercommitRequest } from '../../lib/express/index.js';
import { eachDialect } from '../support/databases.js';
import { deferred, recordingLogger, until } from '../support/helpers.js';
import { request } from '../support/http.js';
import { EXPRESS_VERSIONS } from './versions.js';
import { errorsAsJson, routeFor, servers } from './support.js';

/** A file of several read chunks (fs streams read 64 KiB at a time), so that sendFile writes more than once. */
const FILE_SIZE = 300 * 1024;
const PIPED_CHUNKS = 40;
const EVENTS = ['first', 'second', 'third', 'fourth'];
const sse = (events: string[]) => events.map((e) => `data: ${e}\n\n`).join('');
eachDialect('express: streaming responses', (database) => {
  let knex: Knex;
  let notes: string;
  let dir: string;
  let file: string;
  let content: Buffer;
  const serve = servers();
  before(async () => {
    knex = database.knex();
    notes = database.table('stream_notes');
    await knex.schema.createTable(notes, (t) => {
      t.increments('id');
      t.string('text').notNullable();
    });
    dir = mkdtempSync(join(tmpdir(), 'aftercommit-streams-'));
    file = join(dir, 'report.bin');
    content = randomBytes(FILE_SIZE);
    writeFileSync(file, content);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));
  const texts = async (text: string) => ((await knex(notes).where({ text })) as { text: string }[]).map((r) => r.text);

  for (const version of EXPRESS_VERSIONS) {
    describe(version.name, () => {
      const v = version.name.replace(' ', '');
      const route = routeFor(version);
      const logger = recordingLogger();
      let url: string;
      /** Per path: whether the COMMIT came before any byte of the response was handed to the socket (an after-commit hook looks). */
      const committedBeforeFirstByte = new Map<string, boolean>();
      const runs = new Map<string, number>();
      const sseSeen = { openRightAfterFirstWrite: undefined as boolean | undefined, dbAfterCommit: undefined as unknown };
      let conflicting = { gate: deferred(), finished: deferred() };
      /** The errors the app's error handler got for a path, and when the handler at that path failed. */
      const failingLate = new Map<string, { errors: unknown[]; failed: ReturnType<typeof deferred<void>> }>();
      const failing = (path: string) => failingLate.get(path) ?? failingLate.set(path, { errors: [], failed: deferred() }).get(path)!;

      /** Writes the path's row, counts the run and records, at the commit, whether anything of the response reached the socket. */
      const begin = async (req: Request) => {
        const r = req as AftercommitRequest;
        runs.set(r.path, (runs.get(r.path) ?? 0) + 1);
        const before = r.socket.bytesWritten; // a kept-alive socket has earlier responses on it
        await r.db(notes).insert({ text: `${v}${r.path}` });
        r.transaction.afterCommit(() => committedBeforeFirstByte.set(r.path, r.socket.bytesWritten === before));
        return r;
      };

      before(async () => {
        const tm = new TransactionManager(knex, { logger, delay: { initial: 1 } });
        const router = version.router();
        router.get('/file', route(async (req, res) => {
          await begin(req);
          res.sendFile(file);
        }));
        router.get('/events', route(async (req, res) => {
          const r = await begin(req);
          const committed = deferred();
          r.transaction.afterCommit(() => committed.resolve());
          res.setHeader('Content-Type', 'text/event-stream');
          res.setHeader('Cache-Control', 'no-store');
          res.flushHeaders();
          res.write(sse(EVENTS.slice(0, 1)));
          sseSeen.openRightAfterFirstWrite = r.transaction.isOpen; // the COMMIT starts once the handler yields
          await committed.promise;
          try {
            await r.db(notes).insert({ text: `${v}/events too late` });
          } catch (err) {
            sseSeen.dbAfterCommit = err;
          }
          for (const event of EVENTS.slice(1)) {
            await sleep(3);
            res.write(sse([event]));
          }
          res.end();
        }));
        router.get('/piped', route(async (req, res) => {
          await begin(req);
          res.type('text/plain');
          async function* parts() {
            for (let i = 0; i < PIPED_CHUNKS; i++) {
              await new Promise(setImmediate);
              yield `part ${i};`;
            }
          }
          await pipeline(Readable.from(parts()), res);
        }));
        router.get('/conflict-at-commit', route(async (req, res) => {
          const r = await begin(req);
          // A transient error at the COMMIT of the first attempt (as a serialization failure there would be).
          if (r.transaction.attempt === 1) r.transaction.beforeCommit(() => Promise.reject(new ConflictError('at the commit')));
          res.setHeader('Content-Type', 'text/event-stream');
          res.flushHeaders();
          res.write(sse(EVENTS.slice(0, 1)));
          if (r.transaction.attempt > 1) return res.end(sse(EVENTS.slice(1))); // (a second run would not wait)
          await conflicting.gate.promise; // still streaming when the commit fails
          res.write(sse(EVENTS.slice(1)));
          res.end();
          conflicting.finished.resolve();
        }));
        router.get('/fails-after-commit', route(async (req, res) => {
          const r = await begin(req);
          const committed = deferred();
          r.transaction.afterCommit(() => committed.resolve());
          res.write('partial;');
          await committed.promise;
          try {
            await r.db(notes).insert({ text: `${v}/fails-after-commit too late` }); // throws TransactionEndedError, uncaught
            res.end('never');
          } finally {
            failing(r.path).failed.resolve();
          }
        }));
        router.get('/fails-during-commit', route(async (req, res) => {
          const r = await begin(req);
          const committing = deferred();
          const { failed } = failing(r.path);
          r.transaction.beforeCommit(async () => {
            committing.resolve();
            await failed.promise;
            await new Promise(setImmediate); // the error has reached aftercommit before the COMMIT is sent
          });
          res.write('partial;');
          await committing.promise; // the handlers have answered and the commit has begun
          try {
            throw new Error('the stream broke during the commit');
          } finally {
            failed.resolve();
          }
        }));
        const app = version.app();
        app.use(aftercommit({ manager: tm, retries: 3 }, router));
        app.use((err: unknown, req: Request, res: Response, next: (err: unknown) => void) => {
          if (req.path.startsWith('/fails-')) failing(req.path).errors.push(err);
          next(err);
        });
        app.use(errorsAsJson());
        url = (await serve(app)).url;
      });

      it('res.sendFile: the row is committed before the first byte, and the file arrives whole', async () => {
        const response = await fetch(`${url}/file`);
        const body = Buffer.from(await response.arrayBuffer());
        assert.equal(response.status, 200);
        assert.equal(body.length, FILE_SIZE);
        assert.ok(body.equals(content), 'the same bytes');
        assert.equal(committedBeforeFirstByte.get('/file'), true);
        assert.deepEqual(await texts(`${v}/file`), [`${v}/file`]);
      });

      it('server-sent events: committed before the first event arrives, every event delivered, req.db ended after the commit', async () => {
        const response = await fetch(`${url}/events`);
        assert.equal(response.status, 200);
        assert.equal(response.headers.get('content-type'), 'text/event-stream');
        const reader = response.body!.getReader();
        const first = await reader.read();
        // What the handler wrote before its first event is committed by the time that event arrives.
        assert.deepEqual(await texts(`${v}/events`), [`${v}/events`]);
        let received = Buffer.from(first.value!).toString();
        for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) received += Buffer.from(chunk.value).toString();
        assert.equal(received, sse(EVENTS));
        assert.equal(committedBeforeFirstByte.get('/events'), true);
        assert.equal(sseSeen.openRightAfterFirstWrite, true, 'the first write starts the commit; it ends once the COMMIT has returned');
        assert.equal((sseSeen.dbAfterCommit as Error).name, 'TransactionEndedError');
        assert.match((sseSeen.dbAfterCommit as Error).message, /^req\.db after the request’s commit: this transaction has already ended/);
        assert.deepEqual(await texts(`${v}/events too late`), []);
      });

      it('a stream piped into res: committed before the first byte, the whole body delivered', async () => {
        const response = await request(`${url}/piped`);
        assert.equal(response.status, 200);
        assert.equal(response.body, Array.from({ length: PIPED_CHUNKS }, (_, i) => `part ${i};`).join(''));
        assert.equal(committedBeforeFirstByte.get('/piped'), true);
        assert.deepEqual(await texts(`${v}/piped`), [`${v}/piped`]);
      });

      it('a transient error at the COMMIT of a handler still streaming: RetryNotSafeError (500), not run again, nothing committed or streamed', async () => {
        conflicting = { gate: deferred(), finished: deferred() };
        const response = await request(`${url}/conflict-at-commit`);
        assert.equal(response.status, 500);
        assert.equal(response.headers.get('content-type'), 'application/json; charset=utf-8', 'the stream’s headers were put back');
        assert.equal(response.body.name, 'RetryNotSafeError');
        assert.equal(response.body.code, 'AFTERCOMMIT_RETRY_NOT_SAFE');
        assert.match(
          response.body.error,
          /^the request hit a transient error \([^)]*at the commit\) but is not run again: the handler streams its response .* Its transaction was rolled back; nothing of it is committed\.$/,
        );
        assert.equal(runs.get('/conflict-at-commit'), 1, 'the handler ran once');
        assert.deepEqual(await texts(`${v}/conflict-at-commit`), []);
        assert.ok(logger.lines.some((l) => l.level === 'error' && /GET \/conflict-at-commit: the request hit a transient error/.test(l.msg)), 'logged');
        // The first attempt's handler goes on writing into a response already answered: dropped, nothing breaks.
        conflicting.gate.resolve();
        await conflicting.finished.promise;
        assert.equal((await request(`${url}/piped`)).status, 200, 'the server still answers');
        assert.equal(runs.get('/conflict-at-commit'), 1);
      });

      /** Requests `path`, whose handler answers with a first write, then fails; resolves with what the app's error handler got. */
      async function failingStream(path: string) {
        const client = new AbortController();
        const response = await fetch(`${url}${path}`, { signal: client.signal });
        const body = response.text();
        body.catch(() => undefined);
        try {
          assert.equal(response.status, 200);
          await failing(path).failed.promise;
          await until(() => failing(path).errors.length > 0, 10_000, 'the error to reach the app’s error handler');
          await assert.rejects(body, 'the connection is cut, as Express does for an error after the headers were sent');
          return failing(path).errors;
        } finally {
          client.abort();
        }
      }

      it(
        'a streaming handler that fails after its commit: the error reaches the app’s error handlers and the connection is cut',
        async () => {
          const errors = await failingStream('/fails-after-commit');
          assert.deepEqual(await texts(`${v}/fails-after-commit`), [`${v}/fails-after-commit`], 'committed before the stream');
          assert.deepEqual(errors.map((e) => (e as Error).name), ['TransactionEndedError']);
        },
      );

      it(
        'a streaming handler that fails while its COMMIT is under way: the error is not dropped either',
        async () => {
          const errors = await failingStream('/fails-during-commit');
          assert.deepEqual(errors.map((e) => (e as Error).message), ['the stream broke during the commit']);
        },
      );
    });
  }
});
