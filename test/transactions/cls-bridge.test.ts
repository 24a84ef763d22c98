/**
 * The cls-hooked bridge: code that looks its transaction up in an existing
 * cls-hooked namespace finds the current transaction's db there.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { createNamespace } from 'cls-hooked';
import knexFactory from 'knex';
import { TransactionManager, clsBridge } from '../../lib/index.js';
import { deferred } from '../support/helpers.js';

describe('clsBridge', () => {
  const knex = knexFactory({ client: 'better-sqlite3', connection: { filename: ':memory:' }, useNullAsDefault: true });
  const namespace = createNamespace('aftercommit-bridge-test');
  const tm = new TransactionManager(knex, { bridge: clsBridge(namespace) });

  it('puts each interleaved transaction’s db under "transaction", across awaits and timers', async () => {
    const late: Promise<unknown>[] = [];
    const results = await Promise.all(
      Array.from({ length: 20 }, () =>
        tm.run(async (tx) => {
          const seen = [namespace.get('transaction')];
          await sleep(Math.random() * 5);
          seen.push(await new Promise((r) => setTimeout(() => r(namespace.get('transaction')), Math.random() * 5)));
          seen.push((await tx.db.raw('select 1 as one').then(() => namespace.get('transaction'))) as unknown);
          const after = deferred<unknown>();
          setTimeout(() => after.resolve(namespace.get('transaction')), 20);
          late.push(after.promise);
          return { db: tx.db, seen };
        }),
      ),
    );
    for (const { db, seen } of results) for (const value of seen) assert.equal(value, db);
    for (const value of await Promise.all(late)) assert.equal(value, undefined, 'hidden once the transaction ended');
    await knex.destroy();
  });
});
