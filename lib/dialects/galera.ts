/**
 * MariaDB Galera: a cluster of nodes, each a MariaDB server, that certify every
 * commit against the others' (the loser gets ER_LOCK_DEADLOCK, retried as any
 * conflict). Two things of a single server do not hold across its nodes:
 * - GET_LOCK is local to one node, so the escalation lock, a limited queue's
 *   lock and the migration lock are rows of `aftercommit_locks` instead, taken
 *   and given back by committed (certified) writes, with a lease that ends the
 *   hold of a process that died;
 * - a node applies the others' commits a little later, so a read right after a
 *   commit on another node may not see it yet: reads that must (a poll of a job
 *   just scheduled) wait for the node to catch up first (`wsrep_sync_wait`).
 * Whether a knex instance talks to a Galera node is asked once, the first time
 * one of these is needed.
 */
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import type { ClusterSupport, EscalationLock, QueueLock, SendStatement } from '../interfaces.js';
import { errorField } from '../support/error-field.js';
import { closeRawConnection, openRawConnection, queryOn } from '../transactions/knex-internals.js';

/** The table of the cluster's locks, one per database. */
export const CLUSTER_LOCKS_TABLE = 'aftercommit_locks';

const ER_NO_SUCH_TABLE = 1146;
const ER_UNKNOWN_SYSTEM_VARIABLE = 1193;
/** Certification lost to another node's write of the lock row (or the lock row's insert). */
const ER_LOCK_DEADLOCK = 1213;

/** A holder is this process and the connection's id: unique across the cluster while the session lives. */
const HOLDER = `CONCAT('${randomBytes(6).toString('hex')}:', CONNECTION_ID())`;

/** How long a hold lasts unless given back (the holder died): escalated attempts and claims are short. */
const SHORT_LEASE_MS = 15_000;
/** How long between two tries of a lock another node holds. */
const RETRY_MS = 5;

const galeraNodes = new WeakMap<Knex, Promise<boolean>>();

/**
 * Whether `knex` talks to a Galera node (`@@wsrep_on`). Asked once per knex
 * instance; an answer that could not be had (the server is down) is asked again
 * next time, and counts as no meanwhile.
 */
function isGaleraNode(knex: Knex): Promise<boolean> {
  const client = (knex.client as { dialect?: string }).dialect;
  if (client !== 'mysql') return Promise.resolve(false);
  let asked = galeraNodes.get(knex);
  if (!asked) {
    asked = knex.raw('SELECT @@wsrep_on AS wsrep').then(
      ([rows]: [{ wsrep: unknown }[]]) => Number(rows[0]?.wsrep) === 1,
      (err: unknown) => {
        if (errorField(err, 'errno') === ER_UNKNOWN_SYSTEM_VARIABLE) return false; // MySQL: no wsrep
        galeraNodes.delete(knex);
        return false;
      },
    );
    galeraNodes.set(knex, asked);
  }
  return asked;
}

/** Lock names are written into the statements: only characters that need no quoting. */
function checkedName(name: string): string {
  if (!/^[A-Za-z0-9_.:-]{1,191}$/.test(name)) throw new TypeError(`a lock name is 1 to 191 letters, digits and _ . : - only, got ${JSON.stringify(name)}`);
  return name;
}

/** Rows changed (matched) by an UPDATE or INSERT sent with `send`. */
function rowsChanged(answer: unknown): number {
  return (answer as { response: [{ affectedRows?: number }] }).response[0].affectedRows ?? 0;
}

/**
 * Takes lock `name` for this session, waiting up to `waitMs`; false when the
 * time ran out. Sent in autocommit (never inside a transaction): a hold counts
 * only once it is certified.
 */
async function take(send: SendStatement, name: string, waitMs: number, leaseMs: number): Promise<boolean> {
  const lock = checkedName(name);
  const until = `NOW(6) + INTERVAL ${Math.ceil(leaseMs)} * 1000 MICROSECOND`;
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      const taken = await send(
        `UPDATE ${CLUSTER_LOCKS_TABLE} SET holder = ${HOLDER}, expires_at = ${until} WHERE name = '${lock}' AND (holder IS NULL OR holder = ${HOLDER} OR expires_at < NOW(6))`,
      );
      if (rowsChanged(taken) === 1) return true;
      // No row yet: the first taker inserts it.
      if (rowsChanged(await send(`INSERT IGNORE INTO ${CLUSTER_LOCKS_TABLE} (name, holder, expires_at) VALUES ('${lock}', ${HOLDER}, ${until})`)) === 1) return true;
    } catch (err) {
      const errno = errorField(err, 'errno');
      if (errno === ER_NO_SUCH_TABLE) await createLocksTable(send);
      else if (errno !== ER_LOCK_DEADLOCK) throw err; // another node's write won: try again
    }
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, RETRY_MS * (1 + Math.random())));
  }
}

/** Gives lock `name` back; true when this session held it. */
async function giveBack(send: SendStatement, name: string): Promise<boolean> {
  for (let attempt = 1; ; attempt++) {
    try {
      return rowsChanged(await send(`UPDATE ${CLUSTER_LOCKS_TABLE} SET holder = NULL WHERE name = '${checkedName(name)}' AND holder = ${HOLDER}`)) === 1;
    } catch (err) {
      // Lost to a taker on another node that found the hold expired: this session held it till then.
      if (errorField(err, 'errno') !== ER_LOCK_DEADLOCK || attempt === 3) throw err;
    }
  }
}

/** DDL is replicated in total order (TOI): nodes that create it at once agree, IF NOT EXISTS makes the later ones no-ops. */
function createLocksTable(send: SendStatement): Promise<unknown> {
  return send(
    `CREATE TABLE IF NOT EXISTS ${CLUSTER_LOCKS_TABLE} (name VARCHAR(191) NOT NULL PRIMARY KEY, holder VARCHAR(64) NULL, expires_at DATETIME(6) NULL) ENGINE=InnoDB`,
  );
}

/** The escalation lock of a Galera cluster: one row per database, so escalated attempts take turns on every node. */
const escalationLock: EscalationLock = {
  shared: false,
  acquire: (send, _mode, waitMs) => take(send, 'escalated', waitMs, SHORT_LEASE_MS),
  release: (send) => giveBack(send, 'escalated'),
};

/** A limited queue's lock on a Galera cluster: a claim holds it from before its transaction until that ended. */
const queueLock: QueueLock = {
  session: true,
  acquire: (send, name, waitMs) => take(send, `queue:${name}`, waitMs, SHORT_LEASE_MS),
  release: (send, name) => giveBack(send, `queue:${name}`),
};

/**
 * Runs `work` holding lock `name` of the cluster, taken on a connection of its
 * own (waiting up to `waitMs`; the hold lasts `leaseMs` at most if this process
 * dies); rejects with `timedOut()` when the wait ran out.
 */
async function holdingLock<T>(knex: Knex, name: string, waitMs: number, leaseMs: number, timedOut: () => Error, work: () => Promise<T>): Promise<T> {
  const connection = await openRawConnection(knex);
  const send: SendStatement = (sql) => queryOn(knex, connection, sql, []);
  try {
    if (!(await take(send, name, waitMs, leaseMs))) throw timedOut();
    try {
      return await work();
    } finally {
      await giveBack(send, name);
    }
  } finally {
    await closeRawConnection(knex, connection);
  }
}

/**
 * `query` (a SELECT) as a causal read: the node first applies every commit the
 * cluster had made when the read was sent. Resolves to the rows.
 */
async function causalRows<T>(db: Knex | Knex.Transaction, query: Knex.QueryBuilder): Promise<T[]> {
  const { sql, bindings } = query.toSQL().toNative();
  const [rows] = (await db.raw(`SET STATEMENT wsrep_sync_wait = 1 FOR ${sql}`, bindings as readonly unknown[] as Knex.RawBinding[])) as [T[]];
  return rows;
}

export const galera: ClusterSupport = { isNode: isGaleraNode, escalationLock, queueLock, holdingLock, causalRows };
