/**
 * The locks a Galera cluster uses in place of GET_LOCK (rows of
 * aftercommit_locks, taken and given back by holder), checked on the shared
 * MariaDB: their SQL is plain InnoDB, only their point (certification across
 * nodes) needs a cluster, which test/reliability/cluster/ has.
 * - a hold keeps other holders out until it is given back, and the same holder
 *   takes it again;
 * - a hold whose lease ran out (its holder died) is taken over;
 * - holds are given back from any connection, by holder;
 * - holdingLock() runs its work alone and gives up after its wait;
 * - names that would need quoting are refused;
 * - a plain MariaDB is no Galera node, and neither is a PostgreSQL or SQLite.
 */
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import { dialectOf } from '../../lib/dialects/index.js';
import { galera } from '../../lib/dialects/galera.js';
import type { SendStatement } from '../../lib/interfaces.js';
import { closeRawConnection, openRawConnection, queryOn } from '../../lib/transactions/knex-internals.js';
import { eachDialect } from '../support/databases.js';

eachDialect(
  'the cluster’s row locks',
  (database) => {
    let knex: Knex;
    const connections: unknown[] = [];
    /** A session of its own, as a lock's holder has. */
    const session = async (): Promise<SendStatement> => {
      const connection = await openRawConnection(knex);
      connections.push(connection);
      return (sql) => queryOn(knex, connection, sql, []);
    };
    const name = () => `test:${randomBytes(4).toString('hex')}`;

    before(() => {
      knex = database.knex();
    });
    after(async () => {
      for (const connection of connections) await closeRawConnection(knex, connection);
      await knex.schema.dropTableIfExists('aftercommit_locks');
    });

    it('a hold keeps other holders out until it is given back; its holder takes it again', async () => {
      const [a, b] = [galera.queueLock(), galera.queueLock()];
      const [sendA, sendB] = [await session(), await session()];
      const lock = name();
      assert.equal(await a.acquire(sendA, lock, 1000), true);
      assert.equal(await b.acquire(sendB, lock, 50), false, 'another holder waits, then gives up');
      assert.equal(await a.acquire(sendA, lock, 50), true, 'the holder takes it again');
      assert.equal(await b.release(sendB, lock), false, 'only the holder gives it back');
      assert.equal(await a.release(sendA, lock), true);
      assert.equal(await b.acquire(sendB, lock, 1000), true, 'free again');
      await b.release(sendB, lock);
    });

    it('a hold whose lease ran out (its holder died) is taken over', async () => {
      const [dead, alive] = [galera.queueLock(), galera.queueLock()];
      const lock = name();
      assert.equal(await dead.acquire(await session(), lock, 1000), true);
      await knex('aftercommit_locks')
        .where({ name: `queue:${lock}` })
        .update({ expires_at: knex.raw('UTC_TIMESTAMP(6) - INTERVAL 1 SECOND') });
      const send = await session();
      assert.equal(await alive.acquire(send, lock, 1000), true);
      await alive.release(send, lock);
    });

    it('holds are given back from any connection, by holder (the one they were taken on broke)', async () => {
      const [a, b] = [galera.escalationLock(), galera.escalationLock()];
      const sendA = await session();
      assert.equal(await a.acquire(sendA, 'exclusive', 1000), true);
      const sendB = await session();
      assert.equal(await b.acquire(sendB, 'exclusive', 50), false);
      await a.giveAllBack(knex);
      assert.equal(await b.acquire(sendB, 'exclusive', 1000), true);
      await b.release(sendB, 'exclusive');
    });

    it('holdingLock() runs the work of two callers one after the other, and gives up after its wait', async () => {
      const lock = name();
      const spans: [number, number][] = [];
      let inside = 0;
      let most = 0;
      const work = async () => {
        most = Math.max(most, ++inside);
        const from = performance.now();
        await new Promise((resolve) => setTimeout(resolve, 50));
        spans.push([from, performance.now()]);
        inside--;
      };
      const timedOut = () => new Error('waited too long');
      await Promise.all([galera.holdingLock(knex, lock, 5000, timedOut, work), galera.holdingLock(knex, lock, 5000, timedOut, work)]);
      assert.equal(most, 1, 'never both at once');
      assert.equal(spans.length, 2);
      let release!: () => void;
      let entered!: () => void;
      const holds = new Promise<void>((resolve) => (entered = resolve));
      const holding = galera.holdingLock(knex, lock, 5000, timedOut, () => {
        entered();
        return new Promise<void>((resolve) => (release = resolve));
      });
      await holds; // the first has it
      await assert.rejects(galera.holdingLock(knex, lock, 50, timedOut, work), /waited too long/);
      release();
      await holding;
    });

    it('names that would need quoting are refused', async () => {
      const send = await session();
      await assert.rejects(galera.queueLock().acquire(send, "x'; DROP TABLE t; --", 50), /a lock name is 1 to 191 letters, digits and _ \. : - only/);
    });

    it('a plain MariaDB server is no Galera node', async () => {
      assert.equal(await galera.isNode(knex), false);
    });
  },
  ['mysql'],
);

eachDialect(
  'no cluster',
  (database) => {
    it('a PostgreSQL or SQLite knex is no Galera node, and its dialect has no cluster support', async () => {
      const knex = database.knex();
      assert.equal(dialectOf(knex).cluster, undefined);
      assert.equal(await galera.isNode(knex), false);
    });
  },
  ['sqlite', 'postgres'],
);
