import type { CommitNotifications, Dialect, EscalationLock, InsertLimits, LockWaitCancel, QueueLock } from '../interfaces.js';
import { errorField } from '../support/error-field.js';

const ROLLED_BACK_SQLSTATES = new Set(['40001' /* serialization_failure */, '40P01' /* deadlock_detected */]);
const SQLSTATE = /^[0-9A-Z]{5}$/;
const SOCKET_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
/**
 * Class 08 (connection_exception) codes that are the server's verdict on what
 * this client sent, not a lost or refused connection: the same request fails the
 * same way however often and however late it is sent again, so they are neither
 * a broken connection nor the database being unavailable (no 503, no re-queue).
 * The rest of the class (08000, 08001, 08003, 08006, 08007) is a connection that
 * could not be made or was lost.
 */
const VERDICTS_IN_CLASS_08 = new Set([
  '08P01', // protocol_violation: e.g. a Bind message with more than 65,535 parameters
  '08004', // sqlserver_rejected_establishment_of_sqlconnection: refused by the server's rules, not for want of capacity
]);

/** A connection that broke or could not be made (class 08 but its verdicts), or the server going down under us (57P0x). */
const isLostConnection = (sqlState: string) => (sqlState.startsWith('08') && !VERDICTS_IN_CLASS_08.has(sqlState)) || sqlState.startsWith('57P0');

/** node-postgres's own errors for a connection that broke (they carry no code; knex prefixes the SQL). */
const LOST_CONNECTION_MESSAGES = /\b(Connection terminated|Client has encountered a connection error|Client was closed and is not queryable)/;

/**
 * The Bind message counts parameters in 16 bits. It is built whole in memory on
 * both sides (the server takes up to 1 GB): 16 MiB of values bounds that.
 */
const insertLimits: InsertLimits = { bindings: 65_535, rows: Number.POSITIVE_INFINITY, bytes: 16 * 1024 * 1024 };

/** Advisory locks are per database already. */
const ESCALATION_LOCK_KEY = "hashtext('aftercommit.escalated')";

const lockFunctions = {
  exclusive: { tryLock: 'pg_try_advisory_lock', lock: 'pg_advisory_lock', unlock: 'pg_advisory_unlock' },
  shared: { tryLock: 'pg_try_advisory_lock_shared', lock: 'pg_advisory_lock_shared', unlock: 'pg_advisory_unlock_shared' },
};

const escalationLock: EscalationLock = {
  shared: true,
  async acquire(send, mode, waitMs) {
    const { tryLock, lock } = lockFunctions[mode];
    const tried = (await send(`SELECT ${tryLock}(${ESCALATION_LOCK_KEY}) AS acquired`)) as { response: { rows: { acquired: boolean }[] } };
    if (tried.response.rows[0]?.acquired) return true;
    // Held (or awaited) in a conflicting mode: wait in a transaction of its own, where SET LOCAL can
    // bound the wait; a session-level lock outlives that COMMIT.
    await send('BEGIN');
    try {
      // The wait is bounded by lock_timeout alone, whatever statement_timeout the role has.
      await send(`SET LOCAL lock_timeout = ${Math.max(1, Math.ceil(waitMs))}`);
      await send('SET LOCAL statement_timeout = 0');
      await send(`SELECT ${lock}(${ESCALATION_LOCK_KEY})`);
      await send('COMMIT');
      return true;
    } catch (err) {
      await send('ROLLBACK');
      const code = errorField(err, 'code');
      if (code === '55P03' || code === '57014') return false; // the wait ran out, or was cancelled: go on without
      throw err;
    }
  },
  release: (send, mode) => send(`SELECT ${lockFunctions[mode].unlock}(${ESCALATION_LOCK_KEY})`),
};

/**
 * A queue's lock: an advisory lock of the claim's transaction, given back by its end. The two-key form keeps
 * these apart from the escalation lock's one-key space; two names that hash alike only take turns together.
 */
const queueLock: QueueLock = {
  session: false,
  async acquire(send, name, waitMs) {
    if (!/^[A-Za-z0-9_.:-]+$/.test(name)) throw new TypeError(`a lock name is letters, digits and _ . : - only, got ${JSON.stringify(name)}`);
    // The claim's other statements never wait (SKIP LOCKED, then rows it holds): the bound is this wait's alone.
    await send(`SET LOCAL lock_timeout = ${Math.max(1, Math.ceil(waitMs))}`);
    try {
      await send(`SELECT pg_advisory_xact_lock(hashtext('aftercommit.queue'), hashtext('${name}'))`);
      return true;
    } catch (err) {
      if (errorField(err, 'code') === '55P03') return false; // lock_not_available: the wait ran out
      throw err;
    }
  },
  release: async () => true, // the transaction's end gives it back
};

const lockWaitCancel: LockWaitCancel = {
  sessionId: (connection) => (connection as { processID?: number }).processID,
  // OFFSET 0 keeps the filter inside the subquery, so only sessions waiting for a row or table lock (not
  // for the escalation lock itself) for at least the given milliseconds are cancelled.
  sql:
    'SELECT pid AS id, pg_cancel_backend(pid) AS cancelled FROM (SELECT pid FROM pg_stat_activity ' +
    "WHERE pid = ANY(?) AND wait_event_type = 'Lock' AND wait_event <> 'advisory' " +
    "AND clock_timestamp() - query_start >= ? * interval '1 millisecond' OFFSET 0) AS waiting",
  isCancelled: (err) => errorField(err, 'code') === '57014', // query_canceled
  unref: (connection) => (connection as { connection?: { stream?: { unref?(): void } } }).connection?.stream?.unref?.(),
};

/** A node-postgres client, as far as notifications go. */
interface NotifyingClient {
  on(event: 'notification', listener: (message: { channel: string; payload?: string }) => void): void;
  on(event: 'error' | 'end', listener: (err?: unknown) => void): void;
}

const commitNotifications: CommitNotifications = {
  notifySql: 'SELECT pg_notify(?, ?)',
  listenSql(channel) {
    if (!/^[A-Za-z0-9_]+$/.test(channel)) throw new TypeError(`a notification channel is letters, digits and _ only, got ${JSON.stringify(channel)}`);
    return `LISTEN "${channel}"`; // quoted: pg_notify() names the channel exactly, case and all
  },
  subscribe(connection, deliver, ended) {
    const client = connection as NotifyingClient;
    let over = false;
    const end = (err?: unknown) => {
      if (over) return;
      over = true;
      ended(err);
    };
    client.on('notification', (message) => deliver(message.channel, message.payload ?? ''));
    client.on('error', end);
    client.on('end', end);
  },
};

export const postgres: Dialect = {
  name: 'postgresql',
  begin: (isolation) => [isolation ? `BEGIN ISOLATION LEVEL ${isolation.toUpperCase()}` : 'BEGIN'],
  isTransient(err) {
    const code = errorField(err, 'code');
    return typeof code === 'string' && ROLLED_BACK_SQLSTATES.has(code);
  },
  isConnectionFailure(err) {
    const code = errorField(err, 'code');
    // No SQLSTATE means the error did not come from the server's verdict
    // ("Connection terminated unexpectedly", ECONNRESET, ...).
    if (typeof code !== 'string' || !SQLSTATE.test(code)) return true;
    return isLostConnection(code);
  },
  // knex's pg client resolves with { response: pg.Result }; the command tag is the server's answer.
  committedAsRollback: (result) => (result as { response?: { command?: string } } | undefined)?.response?.command === 'ROLLBACK',
  isUnavailable(err) {
    const code = errorField(err, 'code');
    if (code === undefined) return err instanceof Error && LOST_CONNECTION_MESSAGES.test(err.message);
    if (typeof code !== 'string') return false;
    return typeof errorField(err, 'syscall') === 'string' || isLostConnection(code) || SOCKET_ERRORS.has(code);
  },
  isUniqueViolation: (err) => errorField(err, 'code') === '23505',
  lockForClaim: (query) => query.forUpdate().skipLocked(),
  lockingRead: (query) => query.forShare(),
  // Released by the COMMIT; DDL is transactional in PostgreSQL.
  migrationLock: (name) => ({ acquire: `SELECT pg_advisory_xact_lock(hashtext('${name}'))` }),
  singleWriter: false,
  insertLimits,
  // The encoding is the database's, chosen when it was created: no table can have another. A database's
  // default collation is deterministic, and deterministic collations tell apart strings that differ in any byte.
  exactUtf8Text: async () => undefined,
  async hasIndex(db, table, index) {
    const { rows } = (await db.raw('SELECT 1 AS found FROM pg_indexes WHERE schemaname = current_schema() AND tablename = ? AND indexname = ? LIMIT 1', [table, index])) as { rows: unknown[] };
    return rows.length > 0;
  },
  escalationLock,
  cluster: undefined, // no cluster of PostgreSQL servers certifies writes across nodes
  queueLock,
  lockWaitCancel,
  commitNotifications,
  abortTransaction: (connection) => {
    // Closing the socket: end() would wait for the query in progress.
    (connection as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
    return true;
  },
};
