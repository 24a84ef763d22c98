/**
 * Retry delays: uniform(0, bound), the bound growing by `factor` up to `max`,
 * measured through an injected clock and random source, never wall time. They
 * apply to plain retries (`escalate: false`); an escalated retry waits for its
 * turn instead.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import knexFactory from 'knex';
import { ConflictError, TransactionManager, type RetryEvent } from '../../lib/index.js';
import { ManualClock, recordingLogger } from '../support/helpers.js';

// No statement is sent in these tests; an in-memory SQLite knex is enough.
const knex = knexFactory({ client: 'better-sqlite3', connection: { filename: ':memory:' }, useNullAsDefault: true });

async function delaysOf(options: ConstructorParameters<typeof TransactionManager>[1], random: () => number) {
  const clock = new ManualClock({ auto: true });
  const tm = new TransactionManager(knex, { logger: recordingLogger(), escalate: false, ...options, clock, random });
  const events: RetryEvent[] = [];
  await assert.rejects(
    tm.run(
      async () => {
        throw new ConflictError();
      },
      { onRetry: (event) => events.push(event) },
    ),
    ConflictError,
  );
  assert.deepEqual(
    events.map((e) => e.delay),
    clock.sleeps,
  );
  return clock.sleeps;
}

describe('retry delays', () => {
  it('escalated retries (the default) run at once and alone: no delay, and the event says so', async () => {
    const clock = new ManualClock({ auto: true });
    const tm = new TransactionManager(knex, { logger: recordingLogger(), clock, random: () => 1 });
    const events: RetryEvent[] = [];
    const escalatedAttempts: boolean[] = [];
    await assert.rejects(
      tm.run(
        async (tx) => {
          escalatedAttempts.push(tx.escalated);
          throw new ConflictError();
        },
        { onRetry: (event) => events.push(event) },
      ),
      ConflictError,
    );
    assert.deepEqual(clock.sleeps, []);
    assert.deepEqual(
      events.map((e) => [e.delay, e.escalated]),
      [
        [0, true],
        [0, true],
        [0, true],
      ],
    );
    assert.deepEqual(escalatedAttempts, [false, true, true, true]);
    assert.equal(tm.contention?.escalations, 3);
  });

  it('a call with escalate: false keeps plain delays under an escalating manager', async () => {
    const clock = new ManualClock({ auto: true });
    const tm = new TransactionManager(knex, { logger: recordingLogger(), clock, random: () => 1 });
    await assert.rejects(
      tm.run(async () => {
        throw new ConflictError();
      }, { escalate: false }),
      ConflictError,
    );
    assert.deepEqual(clock.sleeps, [50, 100, 200]);
    assert.equal(tm.contention?.escalations, 0);
  });

  it('default: bounds 50, 100, 200 ms before the three retries', async () => {
    assert.deepEqual(await delaysOf({}, () => 1), [50, 100, 200]);
  });

  it('are uniform in [0, bound): the random draw scales the bound', async () => {
    assert.deepEqual(await delaysOf({}, () => 0.5), [25, 50, 100]);
    assert.deepEqual(await delaysOf({}, () => 0), [0, 0, 0]);
  });

  it('grow by factor and stop growing at max', async () => {
    const delays = await delaysOf({ retries: 6, delay: { initial: 100, factor: 3, max: 2000 } }, () => 1);
    assert.deepEqual(delays, [100, 300, 900, 2000, 2000, 2000]);
  });

  it('a schedule without a cap: 1 s initial, factor 2, max Infinity', async () => {
    const delays = await delaysOf({ delay: { initial: 1000, factor: 2, max: Infinity } }, () => 1);
    assert.deepEqual(delays, [1000, 2000, 4000]);
  });

  it('no delay before the first attempt, none after the last', async () => {
    assert.equal((await delaysOf({ retries: 0 }, () => 1)).length, 0);
  });

  it('refuse nonsense with a message naming the option', () => {
    assert.throws(() => new TransactionManager(knex, { delay: { factor: 0.5 } }), /delay.factor must be >= 1/);
    assert.throws(() => new TransactionManager(knex, { delay: { initial: -1 } }), /delay.initial must be a finite number >= 0/);
    assert.throws(() => new TransactionManager(knex, { retries: 1.5 }), /retries must be an integer from 0 to 2147483647, got 1.5/);
    assert.throws(() => new TransactionManager(knex, { escalate: 'yes' as never }), /escalate must be true or false/);
  });
});
