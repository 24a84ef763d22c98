/**
 * Quotas and concurrency limits of the persistent scheduler's queues, kept at
 * claim time across three worker processes: `concurrency: 1` never runs two jobs
 * at once and keeps submission order, `concurrencyPerKey: 2` never runs more
 * than two of a key while other keys go on (both checked from the start and end
 * rows the jobs write themselves, with their process's clock), a rate limit
 * never lets more claims than it allows into one window (checked from the
 * claims' started_at), and the claim's statements still use indexes. (The
 * `queues` option's checks: test/persistent/quota-options.test.ts.)
 */
import { before, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import type { JobHandle, QueueOptions } from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { until, untilAborted } from '../support/helpers.js';
import { multiProcessSuite } from '../support/workers.js';


/** One row per event of a `span` job, as the fixture writes them. */
interface SpanRow {
  job_id: string;
  n: number;
  key: string | null;
  pid: number;
  run: number;
  event: 'start' | 'end';
  at: number;
}

interface Span {
  id: string;
  n: number;
  key: string | null;
  pid: number;
  start: number;
  end: number;
}

/** The runs the rows tell of: one span per job and run, both rows present. */
function spansOf(rows: SpanRow[]): Span[] {
  const byRun = new Map<string, Partial<Span>>();
  for (const row of rows) {
    const span = byRun.get(`${row.job_id}/${row.run}`) ?? { id: row.job_id, n: Number(row.n), key: row.key, pid: Number(row.pid) };
    if (row.event === 'start') span.start = Number(row.at);
    else span.end = Number(row.at);
    byRun.set(`${row.job_id}/${row.run}`, span);
  }
  const spans = [...byRun.values()] as Span[];
  for (const span of spans) assert.ok(span.start !== undefined && span.end !== undefined, `job ${span.id} wrote both rows`);
  return spans.sort((a, b) => a.start - b.start || a.end - b.end);
}

/** The most spans running at one instant (half-open: one that starts the ms another ends does not overlap it). */
function peak(spans: Span[]): number {
  let most = 0;
  for (const { start } of spans) most = Math.max(most, spans.filter((s) => s.start <= start && start < s.end).length);
  return most;
}

const QUEUES: Record<string, QueueOptions> = {
  serial: { concurrency: 1 },
  tenants: { concurrencyPerKey: 2 },
  explained: { concurrency: 50, concurrencyPerKey: 1, rate: { limit: 1000, per: 60_000 } },
  rated: { rate: { limit: 2, per: 400 } },
};

eachDialect(
  'queue limits across three worker processes',
  (database) => {
    const suite = multiProcessSuite(database, {
      fixture: 'test/fixtures/quota-jobs.ts',
      lease: 10_000,
      jobs: ['span'],
      queues: QUEUES,
      // One row per event of a `span` job: see SpanRow.
      effects: (t) => {
        t.string('job_id', 32).notNullable();
        t.integer('n').notNullable();
        t.string('key', 20).nullable();
        t.integer('pid').notNullable();
        t.integer('run').notNullable();
        t.string('event', 5).notNullable();
        t.bigInteger('at').notNullable();
      },
      // Short polls: the three processes' claims meet often.
      poll: { minPollInterval: 5, maxPollInterval: 20 },
    });
    const { workers } = suite;

    before(async () => {
      suite.scheduler.define('held', (job: JobHandle) => untilAborted(job.signal)); // run here, until its worker stops
      for (let i = 0; i < 3; i++) suite.spawn({ concurrency: 4, queues: ['serial', 'tenants', 'rated'] });
      const started = () => workers.every((w) => w.lines.some((l) => String(l.msg).startsWith('aftercommit: worker')));
      await until(started, 60_000, 'three worker processes started');
    });

    async function spansOfQueue(ids: string[], what: string): Promise<Span[]> {
      await until(async () => (await suite.knex(suite.effects).whereIn('job_id', ids).where({ event: 'end' }).count({ n: '*' }).first())!.n == ids.length, 120_000, what);
      const result = spansOf((await suite.knex(suite.effects).whereIn('job_id', ids)) as SpanRow[]);
      assert.equal(result.length, ids.length, 'each job ran once');
      assert.deepEqual(new Set(result.map((s) => s.id)), new Set(ids));
      return result;
    }

    function warnings(): Record<string, unknown>[] {
      return workers.flatMap((w) => w.lines).filter((l) => l.level === 'warn' || l.level === 'error');
    }

    it('concurrency 1: never two running jobs at once, in submission order', async () => {
      const ids: string[] = [];
      // Four request transactions, one after the other: submission order is the order of n.
      for (let batch = 0; batch < 4; batch++) {
        ids.push(...(await suite.tm.run(async () => Array.from({ length: 6 }, (_, i) => suite.scheduler.with({ queue: 'serial' }).schedule('span', batch * 6 + i, null, 15)))));
      }
      const result = await spansOfQueue(ids, '24 serial jobs');
      for (let i = 1; i < result.length; i++) {
        assert.ok(result[i]!.start >= result[i - 1]!.end, `job ${result[i]!.n} started at ${result[i]!.start}, before job ${result[i - 1]!.n} ended at ${result[i - 1]!.end}`);
      }
      assert.equal(peak(result), 1);
      assert.deepEqual(
        result.map((s) => s.n),
        Array.from({ length: 24 }, (_, n) => n),
        'they started in submission order',
      );
      const perProcess = new Map<number, number>();
      for (const span of result) perProcess.set(span.pid, (perProcess.get(span.pid) ?? 0) + 1);
      console.log(`# ${database.name}: serial jobs per worker process ${JSON.stringify(Object.fromEntries(perProcess))}`);
      assert.deepEqual(warnings(), []);
    });

    it('concurrencyPerKey 2: never more than two of a key at once, while other keys go on', async () => {
      // Key a's jobs first and slow: the head of the queue is a's backlog, which must not hold up b's or those without a key.
      const ids = await suite.tm.run(async () => {
        const tenants = (key: string | null) => suite.scheduler.with({ queue: 'tenants', ...(key === null ? {} : { concurrencyKey: key }) });
        return [
          ...Array.from({ length: 10 }, (_, i) => tenants('a').schedule('span', i, 'a', 120)),
          ...Array.from({ length: 10 }, (_, i) => tenants('b').schedule('span', 10 + i, 'b', 20)),
          ...Array.from({ length: 4 }, (_, i) => tenants(null).schedule('span', 20 + i, null, 20)),
        ];
      });
      const result = await spansOfQueue(ids, '24 tenant jobs');
      const of = (key: string | null) => result.filter((s) => s.key === key);
      assert.equal(peak(of('a')), 2, 'two of key a at once, never more');
      assert.ok(peak(of('b')) <= 2, `at most two of key b at once, got ${peak(of('b'))}`);
      const lastStartOfA = Math.max(...of('a').map((s) => s.start));
      assert.ok(Math.max(...of('b').map((s) => s.start)) < lastStartOfA, "key b's jobs all started while key a still had jobs waiting");
      assert.ok(Math.max(...of(null).map((s) => s.start)) < lastStartOfA, 'so did the jobs without a key');
      // While a ran two, b or the jobs without a key ran beside them.
      const aFull = of('a').filter((s) => of('a').filter((o) => o.start <= s.start && s.start < o.end).length === 2);
      assert.ok(
        aFull.some((s) => result.some((o) => o.key !== 'a' && o.start < s.end && s.start < o.end)),
        'other jobs ran while key a had two running',
      );
      assert.deepEqual(warnings(), []);
    });

    it('a rate limit never lets more claims into one window than it allows', async () => {
      const ids = await suite.tm.run(async () => Array.from({ length: 8 }, (_, i) => suite.scheduler.with({ queue: 'rated' }).schedule('span', i, null, 1)));
      await spansOfQueue(ids, '8 rated jobs');
      // The claims' own times (each claimer's clock), as the rate counts them: any three of them span at least 400 ms.
      const starts = ((await suite.knex(`${suite.prefix}jobs`).whereIn('id', ids).select('started_at')) as { started_at: unknown }[])
        .map((r) => Number(r.started_at))
        .sort((a, b) => a - b);
      assert.equal(starts.length, 8);
      for (let i = 2; i < starts.length; i++) assert.ok(starts[i]! - starts[i - 2]! >= 400, `claims at ${starts.join(', ')}: three within 400 ms`);
      assert.deepEqual(warnings(), []);
    });

    if (database.name !== 'sqlite') {
      it("the claim's statements of a limited queue use indexes", async () => {
        // A queue no worker process takes: this process claims it, once, and its statements are EXPLAINed.
        await suite.tm.run(async (tx) => {
          for (let i = 0; i < 300; i++) suite.scheduler.with({ queue: 'explained', priority: i % 7, concurrencyKey: `k${i % 3}` }).schedule('held');
          await tx.db.raw('select 1');
        });
        const statements: Knex.Sql[] = [];
        const capture = (query: Knex.Sql) => {
          if (query.sql.includes(`${suite.prefix}jobs`) && /^select/i.test(query.sql) && /skip locked|count\(/i.test(query.sql)) statements.push(query);
        };
        suite.knex.on('query', capture);
        const claimer = suite.scheduler.worker({ queues: ['explained'], concurrency: 10, minPollInterval: 60_000, maxPollInterval: 60_000 }).start();
        try {
          // One of each key (concurrencyPerKey: 1) is all the claim may take.
          await until(() => claimer.running === 3);
        } finally {
          suite.knex.off('query', capture);
          await claimer.stop({ timeout: 0 });
        }
        // Counting by key, the claims in the rate's window, the first due jobs, then those of keys not yet full.
        assert.ok(statements.some((s) => /group by/i.test(s.sql)));
        assert.ok(statements.some((s) => /started_at/.test(s.sql)));
        const claims = statements.filter((s) => /skip locked/i.test(s.sql) && /run_at/.test(s.sql));
        assert.ok(claims.some((s) => /not in/i.test(s.sql)), 'a claim that passes over full keys');
        for (const statement of statements) {
          const sql = statement.sql.replace(/\$\d+/g, '?');
          const bindings = statement.bindings as Knex.RawBinding[];
          if (database.name === 'mysql') {
            const [plan] = (await suite.knex.raw(`EXPLAIN ${sql}`, bindings)) as [{ select_type: string; table: string | null; key: string | null; Extra: string }[]];
            for (const step of plan) {
              if (/SUBQUERY/.test(step.select_type)) {
                // The paused check: the queue's row by primary key (found at planning time, or known absent).
                assert.ok(step.key === 'PRIMARY' || /no matching row in const table/.test(String(step.Extra)), `${sql}: ${JSON.stringify(step)}`);
                continue;
              }
              assert.ok(step.key?.startsWith(`${suite.prefix}jobs_`), `${sql}: ${JSON.stringify(step)}`);
            }
            if (claims[0] === statement) assert.doesNotMatch(String(plan[0]!.Extra), /filesort/);
          } else {
            await suite.knex.raw('ANALYZE ??', [`${suite.prefix}jobs`]);
            const plan = await suite.knex.transaction(async (trx) => {
              await trx.raw('SET LOCAL enable_seqscan = off'); // a small table: make the planner show the index path
              return (await trx.raw(`EXPLAIN (FORMAT JSON) ${sql}`, bindings)).rows[0]['QUERY PLAN'];
            });
            const text = JSON.stringify(plan);
            assert.match(text, new RegExp(`"Index Name":"${suite.prefix}jobs_`), sql);
            assert.doesNotMatch(text, /"Node Type":"Seq Scan"/, sql);
            if (claims[0] === statement) assert.doesNotMatch(text, /"Node Type":"Sort"/, sql);
          }
        }
      });
    }
  },
  ['mysql', 'postgres', 'sqlite'],
);
