/**
 * Which errors are transient, per dialect: decided by errno, SQLSTATE or code,
 * never by the message text. (The deadlock tests prove the same on live servers.)
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import knexFactory from 'knex';
import { ConflictError, TransactionManager, TransientError } from '../../lib/index.js';

const managerFor = (client: string, retryLockWaitTimeout = false) =>
  new TransactionManager(knexFactory({ client, useNullAsDefault: true }), { retryLockWaitTimeout });
const error = (fields: Record<string, unknown>, message = 'some failure') => Object.assign(new Error(message), fields);

describe('transient error classification', () => {
  it('application errors: TransientError and ConflictError on every dialect', () => {
    for (const client of ['mysql2', 'pg', 'better-sqlite3']) {
      const tm = managerFor(client);
      assert.ok(tm.isTransient(new TransientError()));
      assert.ok(tm.isTransient(new ConflictError()));
      assert.ok(!tm.isTransient(new Error('deadlock detected')), 'message text never counts');
    }
  });

  it('MySQL/MariaDB: 1213, SQLSTATE 40001, 1020, 3101; 1205 only when enabled', () => {
    const tm = managerFor('mysql2');
    assert.ok(tm.isTransient(error({ errno: 1213, sqlState: '40001', code: 'ER_LOCK_DEADLOCK' })));
    assert.ok(tm.isTransient(error({ errno: 9999, sqlState: '40001' })));
    assert.ok(tm.isTransient(error({ errno: 1020, sqlState: 'HY000', code: 'ER_CHECKREAD' })));
    assert.ok(tm.isTransient(error({ errno: 3101, code: 'ER_TRANSACTION_ROLLBACK_DURING_COMMIT' })));
    assert.ok(!tm.isTransient(error({ errno: 1205, sqlState: 'HY000', code: 'ER_LOCK_WAIT_TIMEOUT' })));
    assert.ok(managerFor('mysql2', true).isTransient(error({ errno: 1205, sqlState: 'HY000' })));
    assert.ok(!tm.isTransient(error({ errno: 1062, sqlState: '23000', code: 'ER_DUP_ENTRY' })));
    assert.ok(!tm.isTransient(error({ code: 'PROTOCOL_CONNECTION_LOST', fatal: true }, 'Deadlock found')));
  });

  it('PostgreSQL: 40001 and 40P01', () => {
    const tm = managerFor('pg');
    assert.ok(tm.isTransient(error({ code: '40001' })));
    assert.ok(tm.isTransient(error({ code: '40P01' })));
    assert.ok(!tm.isTransient(error({ code: '23505' }, 'could not serialize access')));
    assert.ok(!tm.isTransient(error({ code: '57P01' })));
  });

  it('SQLite: SQLITE_BUSY and its extended codes', () => {
    const tm = managerFor('better-sqlite3');
    assert.ok(tm.isTransient(error({ code: 'SQLITE_BUSY' })));
    assert.ok(tm.isTransient(error({ code: 'SQLITE_BUSY_SNAPSHOT' })));
    assert.ok(!tm.isTransient(error({ code: 'SQLITE_CONSTRAINT_UNIQUE' })));
  });

  it('database unavailable: refused or lost connections, server shutdown, pool timeouts; not statement errors', () => {
    const mysql = managerFor('mysql2');
    assert.ok(mysql.isUnavailable(error({ code: 'ECONNREFUSED', syscall: 'connect', fatal: true })));
    assert.ok(mysql.isUnavailable(error({ code: 'PROTOCOL_CONNECTION_LOST', fatal: true })));
    assert.ok(!mysql.isUnavailable(error({ errno: 1213, sqlState: '40001' })));
    const pg = managerFor('pg');
    assert.ok(pg.isUnavailable(error({ code: 'ECONNREFUSED', syscall: 'connect' })));
    assert.ok(pg.isUnavailable(error({ code: '57P01' })));
    assert.ok(!pg.isUnavailable(new TypeError('a bug, not an outage')));
    assert.ok(!pg.isUnavailable(error({ code: '23505' })));
    const timeout = Object.assign(new Error('Knex: Timeout acquiring a connection. The pool is probably full.'), { name: 'KnexTimeoutError' });
    assert.ok(managerFor('better-sqlite3').isUnavailable(timeout));
  });

  it('refuses a database it does not support, saying which ones it does', () => {
    assert.throws(() => managerFor('mssql'), /supports MySQL\/MariaDB .* PostgreSQL .* SQLite .*; this knex instance uses 'mssql'/);
  });
});
