/**
 * Escalation: an attempt that follows a conflict runs alone. Inside the process
 * it waits for the attempts in flight and goes before new ones; across processes
 * it holds a database lock; on PostgreSQL the lock waits it would wait for are
 * cancelled and run again, escalated. No wall-clock assertions: order and state.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import knexFactory, { type Knex } from 'knex';
import { ConflictError, ContentionTimeoutError, PreemptedError, TransactionManager, type Transaction } from '../../lib/index.js';
import { eachDialect } from '../support/databases.js';
import { ManualClock, deferred, recordingLogger, until } from '../support/helpers.js';
import { conflictOnce, counterHeldOutside, lockWaitPreempted } from './forced-conflicts.js';

eachDialect('escalated attempts run alone in their process', (database) => {
  it('an escalated attempt waits for the attempts in flight, and attempts that begin later wait for it', async () => {
    const knex = database.knex({ pool: { min: 0, max: 4 } });
    const table = database.table('gate_order');
    await knex.schema.createTable(table, (t) => {
      t.increments('id');
      t.string('who').notNullable();
    });
    const tm = new TransactionManager(knex, { logger: recordingLogger() });
    const order: string[] = [];
    const inFlightMayEnd = deferred();
    const inFlightBegan = deferred();

    // On SQLite the attempt in flight holds the only connection: the others wait at the gate, not in the pool.
    const inFlight = tm.run(async (tx) => {
      await tx.db(table).insert({ who: 'in flight' });
      inFlightBegan.resolve();
      await inFlightMayEnd.promise;
      order.push('in flight ends');
    });
    await inFlightBegan.promise;
    const escalated = tm.run(
      conflictOnce(async (tx) => {
        assert.equal(tx.escalated, true);
        await tx.db(table).insert({ who: 'escalated' });
        order.push('escalated runs');
      }),
    );
    await until(() => tm.contention!.escalations === 1, 5000, 'the retry to be escalated');
    const later = tm.run(async (tx) => {
      assert.equal(tx.escalated, false);
      await tx.db(table).insert({ who: 'later' });
      order.push('later runs');
    });
    inFlightMayEnd.resolve();
    await Promise.all([inFlight, escalated, later]);
    assert.deepEqual(order, ['in flight ends', 'escalated runs', 'later runs']);
    const stats = tm.contention!;
    assert.equal(stats.escalations, 1);
    assert.ok(stats.gateWaits >= 1, 'someone waited for a turn');
  });

  it('with escalate: false, a retry does not wait for the attempts in flight', async () => {
    const knex = database.knex({ pool: { min: 0, max: 4 } });
    const tm = new TransactionManager(knex, { logger: recordingLogger(), escalate: false, delay: { initial: 0 } });
    assert.equal(tm.contention, undefined);
    const inFlightMayEnd = deferred();
    const order: string[] = [];
    const inFlight = tm.run(async (tx) => {
      if (database.name !== 'sqlite') await tx.db.raw('SELECT 1');
      await inFlightMayEnd.promise;
      order.push('in flight ends');
    });
    await tm.run(
      conflictOnce(async (tx) => {
        assert.equal(tx.escalated, false);
        order.push('retry runs');
      }),
    );
    inFlightMayEnd.resolve();
    await inFlight;
    assert.deepEqual(order, ['retry runs', 'in flight ends']);
  });
});

eachDialect(
  'escalated attempts of all processes take turns on a database lock',
  (database) => {
    /** Who holds the escalation lock, seen from another connection: a session id, or none. */
    async function lockHolder(admin: Knex): Promise<unknown> {
      if (database.name === 'mysql') {
        const [rows] = await admin.raw("SELECT IS_USED_LOCK(LEFT(CONCAT_WS('.', 'aftercommit.escalated', DATABASE()), 64)) AS holder");
        return rows[0].holder ?? undefined;
      }
      const { rows } = await admin.raw(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = (hashtext('aftercommit.escalated')::bigint & 4294967295)",
      );
      return rows[0]?.pid;
    }
    const sessionId = (tx: Transaction) =>
      database.name === 'mysql'
        ? tx.db.raw('SELECT CONNECTION_ID() AS id').then(([rows]) => rows[0].id)
        : tx.db.raw('SELECT pg_backend_pid() AS id').then(({ rows }) => rows[0].id);

    it('held by the escalated attempt’s session while it runs, given back after, never by ordinary attempts', async () => {
      const knex = database.knex();
      const admin = database.knex({ pool: { min: 0, max: 1 } });
      const tm = new TransactionManager(knex, { logger: recordingLogger() });
      await tm.run(async (tx) => {
        await sessionId(tx);
        assert.equal(await lockHolder(admin), undefined);
      });
      const seen = await tm.run(
        conflictOnce(async (tx) => {
          const own = await sessionId(tx);
          return { own, holder: await lockHolder(admin) };
        }),
      );
      assert.equal(String(seen.holder), String(seen.own));
      assert.equal(await lockHolder(admin), undefined, 'given back with the transaction');
    });

    it('a statement sent while tx.commit() is under way begins the next transaction after it: nothing of the first is left held', async () => {
      const knex = database.knex({ acquireConnectionTimeout: 2000 });
      const admin = database.knex({ pool: { min: 0, max: 1 } });
      const tm = new TransactionManager(knex, { logger: recordingLogger() });
      const overlapping = async (tx: Transaction) => {
        await sessionId(tx);
        await Promise.all([tx.commit(), tx.db.raw('SELECT 1')]);
        await Promise.all([tx.abort(), tx.db.raw('SELECT 1')]);
      };
      await tm.run(overlapping); // ordinary turns
      await tm.run(conflictOnce(overlapping)); // escalated turns, with the escalation lock
      assert.equal(await lockHolder(admin), undefined, 'no pooled session keeps the escalation lock');
      // A leaked turn would keep the next escalated attempt waiting until ContentionTimeoutError.
      await tm.run(conflictOnce((tx) => sessionId(tx)));
    });

    it('an attempt that cannot get the escalation lock in time goes on without it, and says so', async () => {
      const logger = recordingLogger();
      const tm = new TransactionManager(database.knex({ acquireConnectionTimeout: 300 }), { logger });
      const other = new TransactionManager(database.knex(), { logger: recordingLogger() });
      const otherMayEnd = deferred();
      const otherHolds = deferred();
      const holding = other.run(
        conflictOnce(async (tx) => {
          await sessionId(tx);
          otherHolds.resolve();
          await otherMayEnd.promise;
        }),
      );
      await otherHolds.promise;
      await tm.run(conflictOnce((tx) => sessionId(tx)));
      assert.ok(logger.lines.some((l) => l.level === 'warn' && /waited 300 ms for the escalation lock \(exclusive\) and goes on without it/.test(l.msg)));
      otherMayEnd.resolve();
      await holding;
    });

    it('a transaction started with tm.outside() and awaited inside another one does not wait behind it for a turn', async () => {
      const tm = new TransactionManager(database.knex({ acquireConnectionTimeout: 1000 }), { logger: recordingLogger(), retries: 0 });
      await assert.rejects(tm.run(() => Promise.reject(new ConflictError())), ConflictError);
      assert.equal(tm.contention!.concurrencyLimit, 1, 'one attempt at a time: the inner one would wait for the outer');
      const inner = await tm.run(async (tx) => {
        await sessionId(tx);
        return tm.outside(() => tm.run((innerTx) => sessionId(innerTx)));
      });
      assert.ok(inner, 'the inner transaction ran');
    });

    it('a second manager’s escalated attempt (another process) waits until the first one ends', async () => {
      const first = new TransactionManager(database.knex(), { logger: recordingLogger() });
      const second = new TransactionManager(database.knex(), { logger: recordingLogger() });
      const admin = database.knex({ pool: { min: 0, max: 1 } });
      const firstMayEnd = deferred();
      const firstHolds = deferred();
      const order: string[] = [];
      const one = first.run(
        conflictOnce(async (tx) => {
          await sessionId(tx);
          firstHolds.resolve();
          await firstMayEnd.promise;
          order.push('first ends');
        }),
      );
      await firstHolds.promise;
      const two = second.run(
        conflictOnce(async (tx) => {
          await sessionId(tx);
          order.push('second runs');
        }),
      );
      // The second one's session is blocked on the lock: wait until the server shows it waiting.
      await until(
        async () =>
          database.name === 'mysql'
            ? (await admin.raw("SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT GET_LOCK(%'"))[0][0].n > 0
            : (await admin.raw("SELECT COUNT(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")).rows[0].n > 0,
        10_000,
        'the second escalated attempt to wait for the lock',
      );
      firstMayEnd.resolve();
      await Promise.all([one, two]);
      assert.deepEqual(order, ['first ends', 'second runs']);
    });
  },
  ['mysql', 'postgres'],
);

eachDialect(
  'lock waits in the way of an escalated attempt are cancelled (PostgreSQL)',
  (database) => {
    /** A counter row held from outside the manager, on a knex instance and table of the test's own. */
    async function heldCounter(base: string) {
      const knex = database.knex();
      const table = database.table(base);
      return { knex, table, ...(await counterHeldOutside(knex, table)) };
    }

    it('an ordinary attempt blocked on a row lock is cancelled, runs again escalated, and both commit', async () => {
      const knex = database.knex();
      await lockWaitPreempted(new TransactionManager(knex, { logger: recordingLogger() }), knex, database.table('preempt'));
    });

    it('when no retry is left, a preempted attempt throws PreemptedError (transient), not the cancel', async () => {
      const { knex, lockWaitShown, increment, endBlocker } = await heldCounter('preempt_last');
      const tm = new TransactionManager(knex, { logger: recordingLogger() });
      const outcome = tm.run(increment(1), { retries: 0 }).then(
        () => 'committed',
        (err: unknown) => err,
      );
      await lockWaitShown();
      const escalated = tm.run(conflictOnce(increment(10)));
      const err = await outcome;
      await endBlocker();
      await escalated;
      assert.ok(err instanceof PreemptedError, `got ${String(err)}`);
      assert.equal(tm.isTransient(err), true);
      assert.equal((err.cause as { code?: string }).code, '57014');
    });

    it('a statement_timeout of a contended process is the user’s error, not a preemption', async () => {
      const tm = new TransactionManager(database.knex(), { logger: recordingLogger() });
      await assert.rejects(tm.run(() => Promise.reject(new ConflictError()), { retries: 0 }), ConflictError);
      let attempts = 0;
      await assert.rejects(
        tm.run(async (tx) => {
          attempts++;
          await tx.db.raw("SET LOCAL statement_timeout = '100ms'");
          await tx.db.raw('SELECT pg_sleep(1)');
        }),
        (err: unknown) => (err as { code?: string }).code === '57014' && !(err instanceof PreemptedError),
      );
      assert.equal(attempts, 1, 'not retried');
    });
  },
  ['postgres'],
);

describe('the contention gate’s limits', () => {
  const memory = (extra: Partial<Knex.Config> = {}) =>
    knexFactory({ client: 'better-sqlite3', connection: { filename: ':memory:' }, useNullAsDefault: true, ...extra });
  const knex = memory({ acquireConnectionTimeout: 200 });
  const pooled = memory({ pool: { min: 1, max: 8 } }); // eight connections, eight in-memory databases: no locks between them
  after(() => Promise.all([knex.destroy(), pooled.destroy()]));

  /** Starts an attempt that begins its database transaction and holds it until `release` is resolved. */
  function holdingAttempt(tm: TransactionManager, began: () => void, release: Promise<void>) {
    return tm.run(async (tx) => {
      await tx.db.raw('SELECT 1');
      began();
      await release;
    });
  }

  it('a turn that does not come within acquireConnectionTimeout fails with ContentionTimeoutError (a 503 through Koa)', async () => {
    const tm = new TransactionManager(knex, { logger: recordingLogger() });
    const mayEnd = deferred();
    const began = deferred();
    const holding = holdingAttempt(tm, began.resolve, mayEnd.promise);
    await began.promise;
    const waiting = tm.run(conflictOnce((tx) => tx.db.raw('SELECT 1')));
    await assert.rejects(waiting, (err: unknown) => err instanceof ContentionTimeoutError && /waited 200 ms for a turn/.test(err.message));
    assert.equal(tm.isUnavailable(new ContentionTimeoutError(200)), true);
    mayEnd.resolve();
    await holding;
    await tm.run((tx) => tx.db.raw('SELECT 1')); // the gate is free again
  });

  it('a conflict halves the attempts allowed in flight; an idle gate resets the limit', async () => {
    const tm = new TransactionManager(pooled, { logger: recordingLogger(), retries: 0 });
    assert.equal(tm.contention!.concurrencyLimit, 8, 'the pool’s size');
    const mayEnd = deferred();
    let began = 0;
    const holding = Array.from({ length: 4 }, () => holdingAttempt(tm, () => began++, mayEnd.promise));
    await until(() => began === 4);
    await assert.rejects(tm.run(() => Promise.reject(new ConflictError())), ConflictError);
    assert.equal(tm.contention!.concurrencyLimit, 2, 'half of the five that were in flight');
    mayEnd.resolve();
    await Promise.all(holding);
    assert.equal(tm.contention!.concurrencyLimit, 8, 'reset once nothing is in flight or waiting');
  });

  it('a lowered limit doubles once a second has passed without a conflict', async () => {
    const clock = new ManualClock();
    const tm = new TransactionManager(pooled, { logger: recordingLogger(), clock, retries: 0 });
    await assert.rejects(tm.run(() => Promise.reject(new ConflictError())), ConflictError);
    assert.equal(tm.contention!.concurrencyLimit, 1, 'a conflict with nothing else in flight here: one at a time');
    const firstMayEnd = deferred();
    const firstBegan = deferred();
    const first = holdingAttempt(tm, firstBegan.resolve, firstMayEnd.promise);
    await firstBegan.promise;
    const inFlight: string[] = [];
    const othersMayEnd = deferred();
    const others = ['second', 'third'].map((name) => holdingAttempt(tm, () => inFlight.push(name), othersMayEnd.promise));
    await new Promise((resolve) => setImmediate(resolve)); // let them reach the gate
    assert.deepEqual(inFlight, [], 'the limit of one holds them back');
    await clock.advance(1000);
    firstMayEnd.resolve();
    await first;
    await until(() => inFlight.length === 2, 5000, 'both waiting attempts to be in flight at once');
    assert.equal(tm.contention!.concurrencyLimit, 2);
    othersMayEnd.resolve();
    await Promise.all(others);
  });

  it('the limit recovers with time alone, also when no attempt is held back by it', async () => {
    const clock = new ManualClock();
    const tm = new TransactionManager(pooled, { logger: recordingLogger(), clock, retries: 0 });
    await assert.rejects(tm.run(() => Promise.reject(new ConflictError())), ConflictError);
    assert.equal(tm.contention!.concurrencyLimit, 1);
    await clock.advance(2000);
    assert.equal(tm.contention!.concurrencyLimit, 4, 'doubled once for each second without a conflict');
    await clock.advance(5000);
    assert.equal(tm.contention!.concurrencyLimit, 8, 'never above the pool’s size');
  });

  it('refuses a RunOptions.escalate that is not a boolean', async () => {
    const tm = new TransactionManager(knex, { logger: recordingLogger() });
    await assert.rejects(tm.run(() => 1, { escalate: 1 as never }), /RunOptions.escalate must be true or false/);
  });
});
