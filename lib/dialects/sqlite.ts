import type { Dialect } from '../interfaces.js';
import { errorField } from '../support/error-field.js';

export const sqlite: Dialect = {
  name: 'sqlite',
  // Take the write lock at BEGIN: a deferred transaction that reads and then
  // writes cannot upgrade its lock while another writer is active, and fails at
  // once with SQLITE_BUSY instead of waiting for the busy timeout. SQLite's
  // transactions are serializable whatever level is asked for.
  begin: () => ['BEGIN IMMEDIATE'],
  isTransient(err) {
    const code = errorField(err, 'code');
    return typeof code === 'string' && code.startsWith('SQLITE_BUSY');
  },
  isConnectionFailure() {
    return false; // an embedded database has no connection to lose
  },
  committedAsRollback: () => false,
  isUnavailable() {
    return false;
  },
  isUniqueViolation(err) {
    const code = errorField(err, 'code');
    return code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
  },
  // A single writer: BEGIN IMMEDIATE already makes the claim exclusive.
  lockForClaim: (query) => query,
  lockingRead: (query) => query, // one writer: there is nothing newer to see
  migrationLock: () => ({}),
  singleWriter: true,
  // knex writes a multi-row INSERT as a compound SELECT: at most SQLITE_MAX_COMPOUND_SELECT (500) rows and
  // SQLITE_MAX_VARIABLE_NUMBER (32,766 since SQLite 3.32) values. Values are bound in-process: no bytes travel.
  insertLimits: { bindings: 32_766, rows: 500, bytes: Number.POSITIVE_INFINITY },
  exactUtf8Text: async () => undefined, // text is UTF-8, and columns compare with BINARY unless declared otherwise
  async hasIndex(db, table, index) {
    const rows = (await db.raw("SELECT 1 AS found FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND name = ? LIMIT 1", [table, index])) as unknown[];
    return rows.length > 0;
  },
  escalationLock: undefined, // BEGIN IMMEDIATE already admits one writer at a time
  cluster: undefined,
  queueLock: undefined, // likewise: a claim counts and claims alone
  lockWaitCancel: undefined,
  commitNotifications: undefined, // one process uses a database file: its workers are woken in-process
  // Synchronous: nothing runs on the connection while JavaScript runs this, so it rolls back in place.
  abortTransaction: (connection) => {
    const db = connection as { inTransaction: boolean; exec(sql: string): unknown };
    if (db.inTransaction) db.exec('ROLLBACK');
    return false;
  },
};
