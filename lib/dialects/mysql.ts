import type { Dialect, EscalationLock, InsertLimits, QueueLock } from '../interfaces.js';
import { errorField } from '../support/error-field.js';
import { galera } from './galera.js';

/** errno values after which InnoDB has rolled back the whole transaction. */
const ROLLED_BACK_ERRNOS = new Set([
  1213, // ER_LOCK_DEADLOCK (also raised at COMMIT by Galera certification)
  1020, // ER_CHECKREAD, MariaDB innodb_snapshot_isolation
  3101, // ER_TRANSACTION_ROLLBACK_DURING_COMMIT, Group Replication
]);
const ER_LOCK_WAIT_TIMEOUT = 1205;
/** Server errors that end the connection itself. */
const CONNECTION_ERRNOS = new Set([1053 /* ER_SERVER_SHUTDOWN */, 1927 /* ER_CONNECTION_KILLED */]);

/** One lock per database (lock names are server-wide); names are at most 64 characters. */
const ESCALATION_LOCK_NAME = "LEFT(CONCAT_WS('.', 'aftercommit.escalated', DATABASE()), 64)";

const escalationLock: EscalationLock = {
  shared: false, // named locks have one mode
  async acquire(send, _mode, waitMs) {
    // Both modes take the one named lock.
    // GET_LOCK answers 1 when taken, 0 when the wait ran out; the wait is rounded up to whole seconds.
    const answer = (await send(`SELECT GET_LOCK(${ESCALATION_LOCK_NAME}, ${Math.max(1, Math.ceil(waitMs / 1000))}) AS acquired`)) as {
      response: [{ acquired: number | null }[]];
    };
    return answer.response[0][0]?.acquired === 1;
  },
  release: (send) => send(`DO RELEASE_LOCK(${ESCALATION_LOCK_NAME})`),
};

/** A queue's lock: names are server-wide and at most 64 characters, so the database's and the queue's are hashed. */
const queueLockName = (name: string) => `CONCAT('aftercommit:', SHA1(CONCAT_WS(':', DATABASE(), '${checkedLockName(name)}')))`;

/** Lock names are written into the statement: only characters that need no quoting. */
function checkedLockName(name: string): string {
  if (!/^[A-Za-z0-9_.:-]+$/.test(name)) throw new TypeError(`a lock name is letters, digits and _ . : - only, got ${JSON.stringify(name)}`);
  return name;
}

/** Named locks are session locks, which no COMMIT gives back: taken on a connection of their own. */
const queueLock: QueueLock = {
  session: true,
  async acquire(send, name, waitMs) {
    // 1 when taken, 0 when the wait ran out; the wait is rounded up to whole seconds.
    const answer = (await send(`SELECT GET_LOCK(${queueLockName(name)}, ${Math.max(1, Math.ceil(waitMs / 1000))}) AS acquired`)) as {
      response: [{ acquired: number | null }[]];
    };
    return answer.response[0][0]?.acquired === 1;
  },
  async release(send, name) {
    // 1 when this session held it; 0 or NULL when it did not (its connection broke and reconnected, or it was never taken).
    const answer = (await send(`SELECT RELEASE_LOCK(${queueLockName(name)}) AS released`)) as { response: [{ released: number | null }[]] };
    return answer.response[0][0]?.released === 1;
  },
};

/**
 * A statement travels as one packet, at most max_allowed_packet: 16 MiB by
 * default on MariaDB 10.6+, 64 MiB on MySQL 8. Values are sent as escaped text,
 * up to twice their size, so 4 MiB of values stays within half the smaller
 * default. 65,535 is the most placeholders a prepared statement takes.
 */
const insertLimits: InsertLimits = { bindings: 65_535, rows: Number.POSITIVE_INFINITY, bytes: 4 * 1024 * 1024 };

/**
 * Binary utf8mb4 collations that do not pad: utf8mb4_bin ignores trailing spaces
 * (PAD SPACE), so 'key' and 'key ' would still be one key. MySQL 8.0.17+ has the
 * first, MariaDB 10.2+ the second.
 */
const EXACT_COLLATIONS = ['utf8mb4_0900_bin', 'utf8mb4_nopad_bin'];

export const mysql: Dialect = {
  name: 'mysql',
  // SET TRANSACTION applies to the next transaction only. Galera waits for causality at BEGIN, never inside a transaction.
  begin: (isolation, causal) => {
    const start = causal ? 'SET STATEMENT wsrep_sync_wait = 1 FOR START TRANSACTION' : 'START TRANSACTION';
    return isolation ? [`SET TRANSACTION ISOLATION LEVEL ${isolation.toUpperCase()}`, start] : [start];
  },
  isTransient(err, { retryLockWaitTimeout }) {
    const errno = errorField(err, 'errno');
    if (typeof errno === 'number' && ROLLED_BACK_ERRNOS.has(errno)) return true;
    if (errorField(err, 'sqlState') === '40001') return true;
    return retryLockWaitTimeout && errno === ER_LOCK_WAIT_TIMEOUT;
  },
  isConnectionFailure(err) {
    const errno = errorField(err, 'errno');
    return (
      errorField(err, 'fatal') === true ||
      typeof errorField(err, 'syscall') === 'string' ||
      errorField(err, 'code') === 'PROTOCOL_CONNECTION_LOST' ||
      (typeof errno === 'number' && CONNECTION_ERRNOS.has(errno))
    );
  },
  committedAsRollback: () => false,
  isUnavailable(err) {
    return this.isConnectionFailure(err);
  },
  isUniqueViolation: (err) => errorField(err, 'errno') === 1062, // ER_DUP_ENTRY
  // MySQL 8.0.1+ / MariaDB 10.6+.
  lockForClaim: (query) => query.forUpdate().skipLocked(),
  lockingRead: (query) => query.forShare(),
  // A session lock: it outlives the implicit commits that DDL causes in MySQL.
  migrationLock: (name) => ({ acquire: `SELECT GET_LOCK('${name}', 120) AS acquired`, release: `SELECT RELEASE_LOCK('${name}')` }),
  singleWriter: false,
  insertLimits,
  async exactUtf8Text(db, table) {
    const [rows] = (await db.raw(
      `SELECT COLLATION_NAME AS name FROM information_schema.COLLATIONS WHERE COLLATION_NAME IN (${EXACT_COLLATIONS.map(() => '?').join(', ')})`,
      EXACT_COLLATIONS,
    )) as [{ name: string }[]];
    const collation = EXACT_COLLATIONS.find((name) => rows.some((row) => row.name === name));
    if (!collation) {
      throw new Error(`${table} needs a binary utf8mb4 collation without padding (${EXACT_COLLATIONS.join(' or ')}): MySQL 8.0.17+ or MariaDB 10.2+`);
    }
    // Every text column and the table's default (for columns added later). From a smaller character set
    // (latin1), MySQL widens TEXT to MEDIUMTEXT and MEDIUMTEXT to LONGTEXT so that they hold as many characters.
    await db.raw(`ALTER TABLE ?? CONVERT TO CHARACTER SET utf8mb4 COLLATE ${collation}`, [table]);
  },
  async hasIndex(db, table, index) {
    const [rows] = (await db.raw('SELECT 1 AS found FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND INDEX_NAME = ? LIMIT 1', [table, index])) as [unknown[]];
    return rows.length > 0;
  },
  escalationLock,
  cluster: galera,
  queueLock,
  lockWaitCancel: undefined, // InnoDB finds a deadlock the moment it forms
  commitNotifications: undefined, // no NOTIFY: the persistent scheduler sends its wake-ups as datagrams
  // destroy(), not end(): end() waits behind the statement in progress.
  abortTransaction: (connection) => {
    (connection as { destroy(): void }).destroy();
    return true;
  },
};
