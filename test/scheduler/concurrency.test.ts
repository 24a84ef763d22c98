/**
 * 100 concurrent requests schedule jobs: each job runs exactly once, with the
 * arguments and metadata of its own request; the jobs of aborted requests never
 * run.
 */
import { before, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import { TransactionManager, TransactionalScheduler, type JobHandle } from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { finished, recordingLogger, until } from '../support/helpers.js';

eachDialect('100 concurrent requests scheduling jobs', (database) => {
  let knex: Knex;
  let effects: string;
  let tm: TransactionManager;
  let scheduler: TransactionalScheduler;

  before(async () => {
    knex = database.knex();
    effects = database.table('effects');
    await knex.schema.createTable(effects, (t) => {
      t.increments('id');
      t.string('schedule_id', 32).notNullable().unique();
      t.integer('request').notNullable();
      t.string('payload').notNullable();
      t.string('user').notNullable();
    });
    tm = new TransactionManager(knex, { logger: recordingLogger() });
    scheduler = new TransactionalScheduler(tm, { concurrency: 4 });
    scheduler.define('record', async (job: JobHandle, request: number, payload: { text: string; at: Date }) => {
      assert.ok(payload.at instanceof Date, 'a Date argument arrives as a Date');
      await job.db(effects).insert({ schedule_id: job.id, request, payload: payload.text, user: String(job.meta.user) });
      return { request, user: job.meta.user };
    });
  });

  it('each committed request starts exactly its own job; aborted ones start none', async () => {
    const requests = Array.from({ length: 100 }, (_, request) => request);
    const outcomes = await Promise.all(
      requests.map((request) =>
        tm
          .run(
            async (tx) => {
              await new Promise((r) => setTimeout(r, Math.random() * 10)); // interleave the requests
              const id = scheduler.schedule('record', request, { text: `payload ${request}`, at: new Date(request) });
              await tx.db(effects).count({ n: '*' }); // the request touches the database too
              if (request % 10 === 7) throw new Error(`request ${request} fails after scheduling`);
              return { request, id };
            },
            { metadata: { user: `user-${request}`, note: `POST /record/${request}` } },
          )
          .catch((err: Error) => ({ request, failed: err.message })),
      ),
    );

    const committed = outcomes.filter((o): o is { request: number; id: string } => 'id' in o);
    assert.equal(committed.length, 90);
    assert.equal(new Set(committed.map((c) => c.id)).size, 90, 'ids are unique');
    for (const { request, id } of committed) {
      assert.deepEqual(await finished(scheduler, id), { state: 'done', value: { request, user: `user-${request}` } });
    }
    await until(() => scheduler.stats().running === 0 && scheduler.stats().pending === 0);
    const rows = await knex(effects).orderBy('request');
    assert.equal(rows.length, 90, 'exactly one job per committed request, none for the aborted ones');
    for (const row of rows as { schedule_id: string; request: number; payload: string; user: string }[]) {
      assert.notEqual(row.request % 10, 7);
      assert.equal(row.payload, `payload ${row.request}`);
      assert.equal(row.user, `user-${row.request}`);
      assert.equal(row.schedule_id, committed.find((c) => c.request === row.request)!.id);
    }
  });
});
