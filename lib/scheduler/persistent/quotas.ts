/**
 * Quotas and concurrency limits of the persistent scheduler's queues (its
 * `queues` option), enforced where jobs are claimed, across every worker of
 * every process: at most `concurrency` running jobs of a queue, at most
 * `concurrencyPerKey` of one concurrency key, and at most `rate.limit` claims
 * within any `rate.per` ms.
 *
 * Exactness comes from turns: the claimers of a limited queue take its lock
 * (the dialect's queue lock) and hold it until their claim's transaction has
 * ended, so each one counts the running jobs after the previous claim
 * committed, then claims at most what is left. PostgreSQL's lock is an advisory
 * lock of the claim's transaction; MySQL's named locks belong to a session, so
 * they are taken on a connection of their own, before the claim's transaction
 * begins, and given back after it ended. SQLite has one writer: a claim is
 * alone already. Queues without limits take no lock and send no extra statement.
 */
import type { Knex } from 'knex';
import { askingOn, clusterOf, type ClusterHeld, type Dialect, type QueueLock, type SendStatement } from '../../dialects/index.js';
import type { Logger } from '../../interfaces.js';
import { closeRawConnection, openRawConnection, queryOn } from '../../transactions/knex-internals.js';
import { integerIn } from '../../support/validate.js';
import type { JobRow } from './rows.js';
import type { JobStore } from './store.js';
import { QUEUE } from './job-options.js';

type Db = Knex | Knex.Transaction;

/** A queue's limits, checked. */
export interface QueueLimits {
  readonly concurrency?: number;
  readonly concurrencyPerKey?: number;
  readonly rate?: { readonly limit: number; readonly per: number };
}

/** The queue names job options accept (job-options.ts checks them the same way). */
const QUEUE_OPTIONS = new Set(['concurrency', 'concurrencyPerKey', 'rate']);
const RATE_OPTIONS = new Set(['limit', 'per']);

/** The longest a claimer waits for a queue's lock: a claim holds it for a few statements, so a wait this long means a stuck claimer. */
const LOCK_WAIT_MS = 5000;
/** How long the connection MySQL's queue locks are taken on stays open without a claim. */
const SESSION_IDLE_MS = 30_000;

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

function checkKeys(value: Record<string, unknown>, known: ReadonlySet<string>, what: string): void {
  for (const key of Object.keys(value)) {
    if (!known.has(key)) throw new TypeError(`${what} has no option ${JSON.stringify(key)} (it takes ${[...known].join(', ')})`);
  }
}

/** Checks the scheduler's `queues` option where it enters; the limits of each queue that has any. */
export function checkQueueOptions(queues: unknown): ReadonlyMap<string, QueueLimits> {
  const limits = new Map<string, QueueLimits>();
  if (queues === undefined) return limits;
  if (!isPlainObject(queues)) throw new TypeError(`queues must be an object of queue names to { concurrency?, concurrencyPerKey?, rate? }, got ${String(queues)}`);
  for (const [queue, options] of Object.entries(queues)) {
    if (!QUEUE.test(queue)) throw new TypeError(`queues: a queue name is 1-64 letters, digits, _ . : -, got ${JSON.stringify(queue)}`);
    const at = `queues.${queue}`;
    if (options === undefined) continue;
    if (!isPlainObject(options)) throw new TypeError(`${at} must be { concurrency?, concurrencyPerKey?, rate? }, got ${String(options)}`);
    checkKeys(options, QUEUE_OPTIONS, at);
    const checked: { concurrency?: number; concurrencyPerKey?: number; rate?: { limit: number; per: number } } = {};
    if (options.concurrency !== undefined) checked.concurrency = integerIn(options.concurrency, `${at}.concurrency`, 1);
    if (options.concurrencyPerKey !== undefined) checked.concurrencyPerKey = integerIn(options.concurrencyPerKey, `${at}.concurrencyPerKey`, 1);
    if (options.rate !== undefined) {
      const rate = options.rate;
      if (!isPlainObject(rate)) throw new TypeError(`${at}.rate must be { limit, per } (claims per ms), got ${String(rate)}`);
      checkKeys(rate, RATE_OPTIONS, `${at}.rate`);
      checked.rate = { limit: integerIn(rate.limit, `${at}.rate.limit`, 1), per: integerIn(rate.per, `${at}.rate.per (ms)`, 1) };
    }
    if (Object.keys(checked).length > 0) limits.set(queue, Object.freeze(checked));
  }
  return limits;
}

/** How one worker's claim takes its turns: on the limited queues among the worker's, in one order for every process. */
export interface ClaimTurn {
  /** Runs `claim` (the claim's whole transaction) in turn: MySQL's session locks are held around it. */
  around<T>(claim: () => Promise<T>): Promise<T>;
  /** The first statements of the claim's transaction: PostgreSQL's locks; nothing elsewhere. */
  lock(db: Db): Promise<void>;
}

const NO_TURN: ClaimTurn = { around: (claim) => claim(), lock: () => Promise.resolve() };

/** The limits of a scheduler's queues, and the claim-time rule that keeps them. */
export class QueueQuotas {
  private readonly turns = new WeakMap<readonly string[], ClaimTurn>();
  private readonly lock: QueueLock | undefined;
  /** MySQL's: the connection its locks are taken on. */
  private readonly session: LockSession | undefined;

  constructor(
    private readonly limits: ReadonlyMap<string, QueueLimits>,
    private readonly store: JobStore,
    knex: Knex,
    dialect: Dialect,
    logger: Logger,
  ) {
    this.lock = dialect.queueLock;
    this.session = this.lock?.session && limits.size > 0 ? new LockSession(knex, this.lock, dialect, logger) : undefined;
  }

  /** How a worker taking `queues` claims: without any turn when none of them is limited. */
  turn(queues: readonly string[]): ClaimTurn {
    let turn = this.turns.get(queues);
    if (!turn) {
      turn = this.makeTurn(queues);
      this.turns.set(queues, turn);
    }
    return turn;
  }

  private makeTurn(queues: readonly string[]): ClaimTurn {
    const lock = this.lock;
    // Sorted, so that claimers of several limited queues never wait for each other in a circle.
    const names = [...new Set(queues.filter((q) => this.limits.has(q)))].sort().map((q) => `${this.store.tables.jobs}:${q}`);
    if (names.length === 0 || !lock) return NO_TURN; // no limited queue, or one writer at a time (SQLite)
    if (this.session) {
      const session = this.session;
      return { around: (claim) => session.around(names, claim), lock: () => Promise.resolve() };
    }
    return {
      around: (claim) => claim(),
      async lock(db) {
        const send: SendStatement = async (sql) => db.raw(sql);
        for (const name of names) {
          if (!(await lock.acquire(send, name, LOCK_WAIT_MS))) throw new QueueLockTimeout(name);
        }
      },
    };
  }

  /**
   * Due pending jobs of `queue` that may start now, at most `free`, locked for
   * the claim. A limited queue's must be asked while its turn is held: the room
   * is its limits less what runs (and, for a rate, what started lately); with a
   * limit per key, jobs of a full key are passed over, so other keys go on.
   */
  async due(db: Db, queue: string, now: number, free: number): Promise<JobRow[]> {
    const limits = this.limits.get(queue);
    if (!limits) return this.store.duePending(db, queue, now, free);
    let room = free;
    let running: Map<string | null, number> | undefined;
    if (limits.concurrency !== undefined || limits.concurrencyPerKey !== undefined) {
      running = await this.store.runningByKey(db, queue);
      if (limits.concurrency !== undefined) room = Math.min(room, limits.concurrency - sum(running.values()));
    }
    if (room > 0 && limits.rate) room = Math.min(room, limits.rate.limit - (await this.store.startedSince(db, queue, now - limits.rate.per)));
    if (room <= 0) return [];
    if (limits.concurrencyPerKey === undefined) return this.store.duePending(db, queue, now, room);
    return this.duePerKey(db, queue, now, room, limits.concurrencyPerKey, running!);
  }

  /**
   * The first due jobs, in claim order, whose key has room. Each round asks for
   * what is still free, passing over full keys and the jobs taken already; a
   * round that had to leave a job out (its key filled up in that round) is
   * followed by another, so rounds end after at most `room` of them.
   */
  private async duePerKey(db: Db, queue: string, now: number, room: number, perKey: number, running: Map<string | null, number>): Promise<JobRow[]> {
    const full = new Set<string>();
    for (const [key, n] of running) if (key !== null && n >= perKey) full.add(key);
    const taken: JobRow[] = [];
    while (taken.length < room) {
      const rows = await this.store.duePending(db, queue, now, room - taken.length, { keys: [...full], ids: taken.map((row) => row.id) });
      let leftOut = false;
      for (const row of rows) {
        const key = row.concurrencyKey;
        if (key === null) {
          taken.push(row); // a job without a key has only the queue's limits
          continue;
        }
        const n = running.get(key) ?? 0;
        if (n >= perKey) {
          leftOut = true;
          continue;
        }
        taken.push(row);
        running.set(key, n + 1);
        if (n + 1 >= perKey) full.add(key);
      }
      if (!leftOut) break; // every job offered was taken: the queue had no more, or the room is filled
    }
    return taken;
  }

  /** Closes the connection MySQL's locks are taken on, if open (it opens again when needed). */
  close(): void {
    this.session?.close();
  }
}

function sum(values: Iterable<number>): number {
  let total = 0;
  for (const n of values) total += n;
  return total;
}

/** A claimer waited LOCK_WAIT_MS for a queue's lock: another claimer holds it and seems stuck. */
class QueueLockTimeout extends Error {
  constructor(name: string) {
    super(`waited ${LOCK_WAIT_MS} ms for the claim lock of ${name}: another claimer holds it; claiming again later`);
    this.name = 'QueueLockTimeout';
  }
}

/**
 * MySQL's queue locks: a connection of this scheduler's own, outside the pool,
 * which takes the locks before a claim's transaction begins and gives them back
 * after it ended. The workers of this process take turns on it (a named lock is
 * the session's, so two workers sharing it would both hold it).
 */
class LockSession {
  private connection: Promise<unknown> | undefined;
  /** The end of the last turn: the next one starts after it. */
  private tail: Promise<void> = Promise.resolve();
  private idleTimer: NodeJS.Timeout | undefined;
  /** On a node of a cluster: this session's holder of the cluster's queue locks (rows, which a closed session does not give back). */
  private clusterLock: ClusterHeld<QueueLock> | undefined;

  constructor(
    private readonly knex: Knex,
    private readonly lock: QueueLock,
    private readonly dialect: Dialect,
    private readonly logger: Logger,
  ) {}

  async around<T>(names: readonly string[], claim: () => Promise<T>): Promise<T> {
    const previous = this.tail;
    let done!: () => void;
    this.tail = new Promise<void>((resolve) => (done = resolve));
    await previous;
    clearTimeout(this.idleTimer);
    try {
      return await this.holding(names, claim);
    } finally {
      this.idleTimer = setTimeout(() => this.close(), SESSION_IDLE_MS).unref();
      done();
    }
  }

  private async holding<T>(names: readonly string[], claim: () => Promise<T>): Promise<T> {
    let send: SendStatement;
    let lock: QueueLock;
    try {
      this.connection ??= openRawConnection(this.knex);
      const connection = await this.connection;
      send = (sql) => queryOn(this.knex, connection, sql, []);
      // On a node of a cluster the dialect's lock would be this node's alone: the cluster's is taken instead.
      const cluster = await clusterOf(this.knex, this.dialect, askingOn(send));
      lock = cluster ? (this.clusterLock ??= cluster.queueLock()) : this.lock;
    } catch (err) {
      this.close();
      throw err;
    }
    const held: string[] = [];
    let failed = false;
    try {
      for (const name of names) {
        let acquired: boolean;
        try {
          acquired = await lock.acquire(send, name, LOCK_WAIT_MS);
        } catch (err) {
          failed = true;
          throw err;
        }
        if (!acquired) throw new QueueLockTimeout(name);
        held.push(name);
      }
      return await claim();
    } finally {
      // A lock statement that failed may mean a broken connection: closing it gives back what it held.
      if (failed) this.close();
      else await this.release(lock, send, held);
    }
  }

  private async release(lock: QueueLock, send: SendStatement, held: readonly string[]): Promise<void> {
    for (const name of [...held].reverse()) {
      try {
        if (!(await lock.release(send, name))) throw new Error('the lock was not held any more');
      } catch (err) {
        // Its connection failed, and the server gave its locks back (or, on a cluster, the hold's lease ran out), maybe before the claim ended.
        this.logger.warn(
          { err, lock: name },
          `the claim lock of ${name} was lost while claiming (its connection failed, or its hold ran out): that claim may have gone past the queue's limits; the connection is closed`,
        );
        this.close();
        return;
      }
    }
  }

  close(): void {
    clearTimeout(this.idleTimer);
    // A cluster's lock rows outlive the session: given back through a pooled connection, else their lease ends them.
    this.clusterLock?.giveAllBack(this.knex).catch((err: unknown) => this.logger.warn({ err }, 'giving back the claim locks of the cluster failed; they are free again when their lease runs out'));
    const connection = this.connection;
    this.connection = undefined;
    void connection?.then((c) => closeRawConnection(this.knex, c)).catch(() => undefined);
  }
}
