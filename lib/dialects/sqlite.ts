import type { Dialect } from './index.js';
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
  escalationLock: undefined, // BEGIN IMMEDIATE already admits one writer at a time
  lockWaitCancel: undefined,
};
