/**
 * A crowd on hot rows converges, at the library's defaults: 60 concurrent
 * transfers between the same two rows, half in each lock order, sent to real
 * server processes (test/fixtures/transfer-server.ts: knex's default pool, a
 * TransactionManager and aftercommit with default options). After a conflict the
 * next attempt runs escalated (alone in its process, taking turns with the other
 * processes on a database lock), so every request answers 2xx instead of running
 * out of retries. With escalation off, MariaDB shows what it prevents: 503s.
 *
 * No timing is asserted; requests and server start-ups are bounded.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import { eachDialect, type TestDatabase } from '../support/databases.js';
import { request } from '../support/http.js';
import { balancesAfterTransfers, oppositeTransfers, startServer, stopServer, tally, type ServerProcess, type Transfer } from '../support/transfer-servers.js';

const TRANSFERS = 60;
const BALANCE = 100_000;
/** Long enough for PostgreSQL without escalation (each wave of deadlocks waits out deadlock_timeout); a hang fails, it does not block the suite. */
const REQUEST_TIMEOUT_MS = 100_000;
const START_TIMEOUT_MS = 30_000; // the most startServer waits

/** The part of the fixture's GET /stats these tests read. */
interface ServerStats {
  retries: number;
  escalatedRetries: number;
  contention: { escalations: number } | null;
}

const transfers = oppositeTransfers(TRANSFERS);
const balancesAfter = (done: Transfer[]) => balancesAfterTransfers(done, BALANCE);

interface Crowd {
  statuses: number[];
  retryAfter: (string | null)[];
  balances: [number, number];
  stats: ServerStats[];
}

/**
 * Declares the hooks of one scenario: an accounts table of its own, `processes`
 * server processes on it, and the crowd of transfers sent at once (consecutive
 * pairs to alternate processes, so each process gets both lock orders and, with
 * two, the processes collide with each other too). The servers are stopped in `after`.
 */
function crowd(database: TestDatabase, scenario: string, { processes, escalate = true }: { processes: number; escalate?: boolean }): Crowd {
  const result = {} as Crowd;
  let knex: Knex;
  const servers: ServerProcess[] = [];

  before(
    async () => {
      knex = database.knex();
      const table = database.table(`contention_${scenario}`);
      await knex.schema.createTable(table, (t) => {
        t.integer('id').primary();
        t.integer('balance').notNullable();
      });
      await knex(table).insert([
        { id: 1, balance: BALANCE },
        { id: 2, balance: BALANCE },
      ]);
      const env = {
        AC_TRANSFER_CLIENT: database.config.client as string,
        AC_TRANSFER_CONNECTION: database.config.connection as string,
        AC_TRANSFER_TABLE: table,
        ...(escalate ? {} : { AC_TRANSFER_ESCALATE: '0' }),
      };
      for (let p = 0; p < processes; p++) servers.push(await startServer(env));

      const responses = await Promise.all(
        transfers.map(({ from, to, amount }, i) =>
          request(`${servers[Math.floor(i / 2) % processes]!.url}/transfer/${from}/${to}/${amount}`, {
            method: 'POST',
            signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
          }),
        ),
      );
      result.statuses = responses.map((r) => r.status);
      result.retryAfter = responses.map((r) => r.headers.get('retry-after'));
      const rows = (await knex(table).orderBy('id')) as { balance: number }[];
      result.balances = [rows[0]!.balance, rows[1]!.balance];
      result.stats = await Promise.all(servers.map(async (s) => (await request(`${s.url}/stats`)).body as ServerStats));

      const count = (key: 'retries' | 'escalatedRetries') => result.stats.reduce((sum, s) => sum + s[key], 0);
      console.log(
        `# ${database.name}, ${scenario}: ${tally(result.statuses)}, ${count('retries')} retries (${count('escalatedRetries')} escalated), balances ${result.balances.join('/')}`,
      );
    },
    { timeout: REQUEST_TIMEOUT_MS + processes * START_TIMEOUT_MS + 10_000 },
  );
  after(() => Promise.all(servers.map(stopServer)));
  return result;
}

const is2xx = (status: number) => status >= 200 && status < 300;
const sum = (stats: ServerStats[], pick: (s: ServerStats) => number | undefined) => stats.reduce((total, s) => total + (pick(s) ?? 0), 0);

/** What a crowd must show at the default options, with `processes` server processes. */
function convergesAtDefaults(database: TestDatabase, scenario: string, processes: number) {
  const run = crowd(database, scenario, { processes });

  it(`every one of the ${TRANSFERS} transfers answers 2xx`, () => {
    assert.ok(run.statuses.every(is2xx), `answers: ${tally(run.statuses)}`);
  });

  it('both balances are exactly what all the transfers make them', () => {
    assert.deepEqual(run.balances, balancesAfter(transfers));
  });

  it('the conflicts were escalated: onRetry reported retries whose next attempt runs escalated', () => {
    assert.ok(sum(run.stats, (s) => s.retries) > 0, 'the crowd collided (there were retries)');
    assert.ok(sum(run.stats, (s) => s.escalatedRetries) > 0, 'some RetryEvent had escalated: true');
  });

  it('tm.contention counts the escalated attempts', () => {
    assert.ok(
      run.stats.every((s) => s.contention !== null),
      'each server reports tm.contention',
    );
    assert.ok(sum(run.stats, (s) => s.contention?.escalations) > 0, 'contention.escalations > 0');
  });
}

eachDialect(
  'a crowd of opposite-order transfers on two hot rows',
  (database) => {
    describe(`one server process, ${TRANSFERS} concurrent transfers, default options`, () => {
      convergesAtDefaults(database, 'one', 1);
    });

    describe(`two server processes sharing the database, ${TRANSFERS} concurrent transfers alternated between them, default options`, () => {
      convergesAtDefaults(database, 'two', 2);
    });

    // What escalation prevents. Not on PostgreSQL: there every wave of deadlocks waits out deadlock_timeout (~85 s).
    if (database.name === 'mysql') {
      describe(`with escalate: false, one server process, ${TRANSFERS} concurrent transfers`, () => {
        const run = crowd(database, 'plain', { processes: 1, escalate: false });

        it('some transfers run out of retries: 503 with Retry-After, nothing else fails', () => {
          assert.ok(run.statuses.some((s) => s === 503), `at least one 503 (got ${tally(run.statuses)})`);
          const failed = run.statuses.map((status, i) => ({ status, retryAfter: run.retryAfter[i] })).filter((r) => !is2xx(r.status));
          assert.deepEqual(
            failed,
            failed.map(() => ({ status: 503, retryAfter: '1' })),
          );
        });

        it('the money is conserved: the balances are exactly what the 2xx transfers make them', () => {
          assert.equal(run.balances[0] + run.balances[1], 2 * BALANCE);
          assert.deepEqual(run.balances, balancesAfter(transfers.filter((_, i) => is2xx(run.statuses[i]!))));
        });

        it('no retry was escalated', () => {
          assert.equal(sum(run.stats, (s) => s.escalatedRetries), 0);
          assert.ok(sum(run.stats, (s) => s.retries) > 0);
        });
      });
    }
  },
  ['mysql', 'postgres'],
);
