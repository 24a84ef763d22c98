/**
 * MariaDB Galera: a cluster of nodes, each a MariaDB server, that certify every
 * commit against the others' (the loser gets ER_LOCK_DEADLOCK, retried as any
 * conflict). Two things of a single server do not hold across its nodes:
 * - GET_LOCK is local to one node, so the escalation lock, a limited queue's
 *   lock and the migration lock are rows of `aftercommit_locks` instead, taken
 *   and given back by committed (certified) writes. A hold names its holder (a
 *   random token, not the session: sessions are numbered per node) and has a
 *   lease, which ends the hold of a process that died;
 * - a node applies the others' commits a little later, so a read right after a
 *   commit on another node may not see it yet: reads that must (a poll of a job
 *   just scheduled) wait for the node to catch up first (`wsrep_sync_wait`).
 * Whether a knex instance talks to a Galera node is asked once, the first time
 * one of these is needed.
 */
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import type { AskServer, ClusterHeld, ClusterSupport, EscalationLock, QueueLock, SendStatement } from '../interfaces.js';
import { errorField } from '../support/error-field.js';
import { closeRawConnection, openRawConnection, queryOn } from '../transactions/knex-internals.js';

/** The table of the cluster's locks, one per database. */
const LOCKS = 'aftercommit_locks';

const ER_NO_SUCH_TABLE = 1146;
const ER_UNKNOWN_SYSTEM_VARIABLE = 1193;
/** Certification lost to another node's write of the lock row (or the lock row's insert). */
const ER_LOCK_DEADLOCK = 1213;

/** How long a hold lasts unless given back or renewed: the escalation lock's and a queue's holders are short transactions, migrate() renews. */
const LEASE_MS = 15_000;
/** Lease time is the servers' UTC clock: sessions' time zones do not matter. */
const NOW = 'UTC_TIMESTAMP(6)';
/** The end of a hold taken or renewed now. */
const UNTIL = `${NOW} + INTERVAL ${LEASE_MS * 1000} MICROSECOND`;
/** The first and the longest pause between two tries of a lock another holder has. */
const FIRST_RETRY_MS = 5;
const LONGEST_RETRY_MS = 100;

const galeraNodes = new WeakMap<Knex, Promise<boolean>>();

/**
 * Whether `knex` talks to a Galera node (`@@wsrep_on`), asked through `ask` (a
 * connection the caller holds) or else a pooled connection. Asked once per knex
 * instance; when the server could not be asked, this rejects and the next call
 * asks again.
 */
function isGaleraNode(knex: Knex, ask: AskServer = (sql) => knex.raw(sql)): Promise<boolean> {
  if ((knex.client as { dialect?: string }).dialect !== 'mysql') return Promise.resolve(false);
  let asked = galeraNodes.get(knex);
  if (!asked) {
    asked = ask('SELECT @@wsrep_on AS wsrep').then(
      (answer) => Number((answer as [{ wsrep: unknown }[]])[0][0]?.wsrep) === 1,
      (err: unknown) => {
        if (errorField(err, 'errno') === ER_UNKNOWN_SYSTEM_VARIABLE) return false; // MySQL: no wsrep
        galeraNodes.delete(knex);
        throw err;
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

/** Rows matched by an UPDATE or INSERT sent with `send` (mysql2 counts found rows, not changed ones). */
function rowsMatched(answer: unknown): number {
  return (answer as { response: [{ affectedRows?: number }] }).response[0].affectedRows ?? 0;
}

/** The holds of one holder: every statement names it, so they can be given back from any connection. */
class RowLocks {
  private readonly holder = randomBytes(16).toString('hex');

  /** Takes lock `name`, waiting up to `waitMs`; false when the time ran out. Sent in autocommit: a hold counts once it is certified. */
  async take(send: SendStatement, name: string, waitMs: number): Promise<boolean> {
    const lock = checkedName(name);
    const deadline = Date.now() + waitMs;
    let pause = FIRST_RETRY_MS;
    let rowMayBeMissing = true;
    for (;;) {
      try {
        const taken = await send(
          `UPDATE ${LOCKS} SET holder = '${this.holder}', expires_at = ${UNTIL} WHERE name = '${lock}' AND (holder IS NULL OR holder = '${this.holder}' OR expires_at < ${NOW})`,
        );
        if (rowsMatched(taken) === 1) return true;
        if (rowMayBeMissing) {
          // The first taker of a name inserts its row; once it is there, only the UPDATE is tried.
          rowMayBeMissing = false;
          if (rowsMatched(await send(`INSERT IGNORE INTO ${LOCKS} (name, holder, expires_at) VALUES ('${lock}', '${this.holder}', ${UNTIL})`)) === 1) return true;
        }
      } catch (err) {
        const errno = errorField(err, 'errno');
        if (errno === ER_NO_SUCH_TABLE) await createLocksTable(send);
        else if (errno !== ER_LOCK_DEADLOCK) throw err; // else another node's write won: try again
      }
      if (Date.now() >= deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, pause * (0.5 + Math.random())));
      pause = Math.min(pause * 2, LONGEST_RETRY_MS);
    }
  }

  /** Gives lock `name` back; true when this holder held it. */
  giveBack(send: SendStatement, name: string): Promise<boolean> {
    return this.write(send, `UPDATE ${LOCKS} SET holder = NULL WHERE name = '${checkedName(name)}' AND holder = '${this.holder}'`);
  }

  /** Makes the hold of `name` last another lease from now; false when it was lost (it ran out, and another holder took it). */
  renew(send: SendStatement, name: string): Promise<boolean> {
    return this.write(send, `UPDATE ${LOCKS} SET expires_at = ${UNTIL} WHERE name = '${checkedName(name)}' AND holder = '${this.holder}'`);
  }

  /** Gives back every hold of this holder through a pooled connection: after the connection they were taken on broke. */
  async giveAllBack(knex: Knex): Promise<void> {
    await knex.raw(`UPDATE ${LOCKS} SET holder = NULL WHERE holder = ?`, [this.holder]);
  }

  private async write(send: SendStatement, sql: string): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      try {
        return rowsMatched(await send(sql)) === 1;
      } catch (err) {
        // Lost to a taker on another node that found the hold expired: this holder held it till then.
        if (errorField(err, 'errno') !== ER_LOCK_DEADLOCK || attempt === 3) throw err;
      }
    }
  }
}

/** DDL is replicated in total order (TOI): nodes that create it at once agree, IF NOT EXISTS makes the later ones no-ops. */
function createLocksTable(send: SendStatement): Promise<unknown> {
  return send(`CREATE TABLE IF NOT EXISTS ${LOCKS} (name VARCHAR(191) NOT NULL PRIMARY KEY, holder VARCHAR(64) NULL, expires_at DATETIME(6) NULL) ENGINE=InnoDB`);
}

function escalationLock(): ClusterHeld<EscalationLock> {
  const locks = new RowLocks();
  return {
    shared: false,
    acquire: (send, _mode, waitMs) => locks.take(send, 'escalated', waitMs),
    release: (send) => locks.giveBack(send, 'escalated'),
    giveAllBack: (knex) => locks.giveAllBack(knex),
  };
}

function queueLock(): ClusterHeld<QueueLock> {
  const locks = new RowLocks();
  return {
    session: true,
    acquire: (send, name, waitMs) => locks.take(send, `queue:${name}`, waitMs),
    release: (send, name) => locks.giveBack(send, `queue:${name}`),
    giveAllBack: (knex) => locks.giveAllBack(knex),
  };
}

/**
 * Runs `work` holding lock `name` of the cluster, taken on a connection of its
 * own (waiting up to `waitMs`) and renewed while `work` runs, so that it
 * ends with its lease only if this process dies; rejects with `timedOut()` when
 * the wait ran out.
 */
async function holdingLock<T>(knex: Knex, name: string, waitMs: number, timedOut: () => Error, work: () => Promise<T>): Promise<T> {
  const locks = new RowLocks();
  const connection = await openRawConnection(knex);
  const send: SendStatement = (sql) => queryOn(knex, connection, sql, []);
  try {
    if (!(await locks.take(send, name, waitMs))) throw timedOut();
    // A renewal that fails (the connection broke) leaves the hold to its lease.
    const renewing = setInterval(() => void locks.renew(send, name).catch(() => undefined), LEASE_MS / 3);
    try {
      return await work();
    } finally {
      clearInterval(renewing);
      // Given back here, or by its lease if this connection broke.
      await locks.giveBack(send, name).catch(() => undefined);
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
