/**
 * The database transactions of one attempt, one after the other (the words are
 * those of transaction.ts): each begins lazily, with the first statement, on a
 * connection from knex's pool, after the attempt's turn at the contention gate
 * when it takes one; its statements run in order; it ends with COMMIT or
 * ROLLBACK queued behind them, or is abandoned when the attempt is ended from
 * outside; then what it held under contention, its connection and its turn go
 * back. A doom is rolled back on our side at once.
 *
 * TransactionAttempt extends this class rather than owning an instance of it:
 * the attempt is the library's hottest path, and stays one object.
 */
import type { Knex } from 'knex';
import type { IsolationLevel, Logger } from '../interfaces.js';
import type { Dialect } from '../dialects/index.js';
import { CommitOutcomeUnknownError, CommitRolledBackError, PreemptedError } from '../errors.js';
import { acquirePooledConnection, discardOnRelease, releasePooledConnection, sendPastGate } from './knex-internals.js';
import type { GateTurn } from './contention-gate.js';
import { ContentionHold, type ContentionEnvironment } from './contention-hold.js';

/** What the database transactions of an attempt need from its manager. */
export interface DatabaseTransactionEnvironment {
  readonly knex: Knex;
  readonly dialect: Dialect;
  readonly logger: Logger;
  isTransient(err: unknown): boolean;
  /** Where attempts take turns under contention; undefined when the manager's `escalate` is off. */
  readonly contention: ContentionEnvironment | undefined;
}

/** The queue of a transaction that has sent nothing yet: shared, as most requests send nothing. */
const SETTLED: Promise<unknown> = Promise.resolve();

export abstract class DatabaseTransactions {
  /** The connection of the open database transaction (BEGIN sent), while one is open. */
  private connection: Promise<unknown> | undefined;
  /** The connection statements may use: the one BEGIN was sent on, until its COMMIT/ROLLBACK is queued. */
  protected liveConnection: unknown;
  /** Statements of this attempt run one after the other, so a doom is seen before the next one is sent. */
  private queue: Promise<unknown> = SETTLED;
  /** The error after which the database had rolled the transaction back, if any. */
  doomedBy: unknown;
  /** The ROLLBACK sent on our side after the doom, while it is under way. */
  private doomRollback: Promise<void> | undefined;
  /** What the open database transaction holds under contention (its turn at the gate, ...), if anything. */
  private hold: ContentionHold | undefined;
  /** The COMMIT/ROLLBACK of the previous database transaction (a checkpoint), while it is under way; it never rejects. */
  private previousClosing: Promise<void> | undefined;
  /** Why the attempt was ended from outside (see terminate()), if it was. */
  terminatedBy: Error | undefined;
  /** The next BEGIN first waits until this node has applied every commit of its cluster (see beginCausally()). */
  private causal = false;

  constructor(
    protected readonly env: DatabaseTransactionEnvironment,
    private readonly isolation: IsolationLevel | undefined,
    /** How this attempt takes turns at the contention gate; undefined: it takes no part. */
    protected readonly turn: GateTurn | undefined,
    /**
     * The attempt this one was started from with `tm.outside()`, if any: while
     * that one holds a turn it waits for this one, so this one must not wait for
     * a turn behind it.
     */
    private readonly startedBy: DatabaseTransactions | undefined,
  ) {}

  /** The attempt's `db`, which sends the statements that open and close its database transactions too. */
  abstract get db(): Knex.Transaction;

  /** True while a database transaction of this attempt holds a turn at the gate. */
  get holdsTurn(): boolean {
    return this.hold !== undefined;
  }

  /** A database transaction is open: its BEGIN is sent, or under way. */
  get began(): boolean {
    return this.connection !== undefined;
  }

  /**
   * On a node of a cluster (MariaDB Galera): makes the next BEGIN wait until the
   * node has applied every commit the cluster had made, so that this transaction
   * sees commits made through other nodes just before. Nothing to do when a
   * database transaction is open already: its reads see what it began with. @internal
   */
  beginCausally(): void {
    if (!this.began) this.causal = true;
  }

  /** The connection of the open database transaction, beginning one if none is open. */
  protected currentConnection(): Promise<unknown> {
    // A statement sent while the previous database transaction is still closing begins the next one after it.
    this.connection ??= this.previousClosing ? this.previousClosing.then(() => this.begin()) : this.begin();
    return this.connection;
  }

  protected enqueue<T>(run: () => Promise<T>): Promise<T> {
    const result = this.queue.then(run).catch(async (err: unknown) => {
      if (this.env.isTransient(err)) this.doom(err);
      else if (this.hold && (await this.hold.wasPreempted(err))) this.doom(new PreemptedError(err));
      throw err;
    });
    this.queue = result.catch(() => undefined);
    return result;
  }

  private async begin(): Promise<unknown> {
    let connection: unknown;
    let hold: ContentionHold | undefined;
    try {
      // The turn comes before the connection: whoever holds a turn can get one once the attempts before it end.
      const taking = this.takeTurn();
      hold = taking instanceof Promise ? await taking : taking;
      connection = await acquirePooledConnection(this.env.knex);
    } catch (err) {
      this.connection = undefined; // the next statement may try again
      hold?.leave();
      throw err;
    }
    if (this.terminatedBy) {
      // Ended from outside while it waited for its turn or its connection.
      await releasePooledConnection(this.env.knex, connection);
      hold?.leave();
      throw this.terminatedBy;
    }
    this.hold = hold;
    this.liveConnection = connection;
    try {
      const locking = hold?.connected(connection, (sql) => this.send(connection, sql));
      if (locking) await locking;
      const causal = this.causal;
      this.causal = false;
      for (const sql of this.env.dialect.begin(this.isolation, causal)) await this.enqueue(() => this.send(connection, sql));
    } catch (err) {
      if (this.terminatedBy) throw this.terminatedBy; // terminate() has given everything back
      this.connection = undefined;
      this.liveConnection = undefined;
      this.hold = undefined;
      await this.giveConnectionBack(connection, hold);
      throw err;
    }
    return connection;
  }

  private takeTurn(): ContentionHold | Promise<ContentionHold> | undefined {
    const contention = this.env.contention;
    if (!contention || !this.turn || this.startedBy?.holdsTurn) return undefined;
    return ContentionHold.take(contention, this.turn);
  }

  /** Gives back what the database transaction held under contention, the connection, then the turn. */
  private async giveConnectionBack(connection: unknown, hold: ContentionHold | undefined): Promise<void> {
    try {
      const ending = hold?.ending(connection, (sql) => this.send(connection, sql));
      if (ending) await ending;
      await releasePooledConnection(this.env.knex, connection);
    } finally {
      hold?.leave();
    }
  }

  /** Sends a statement that opens or closes the database transaction: as one of `db`'s, so knex's query events see it too. */
  private send(connection: unknown, sql: string): Promise<unknown> {
    return sendPastGate(this.db, connection, sql);
  }

  /**
   * The database has rolled the transaction back: roll it back on our side at once so
   * no later statement of this attempt reaches the server, where MySQL would run
   * it in autocommit mode.
   */
  private doom(err: unknown): void {
    if (this.doomedBy !== undefined) return;
    this.doomedBy = err;
    this.doomRollback = this.closeDatabaseTransaction('ROLLBACK');
  }

  /** ROLLBACK, after the one sent on a doom (if any) is done. */
  protected async rollBackDatabaseTransaction(): Promise<void> {
    await this.doomRollback;
    this.doomRollback = undefined;
    await this.closeDatabaseTransaction('ROLLBACK');
  }

  /**
   * Closes the current database transaction with `sql` (queued behind the
   * statements already sent) and returns its connection to the pool. A failed
   * ROLLBACK is logged; a failed COMMIT is rolled back and thrown.
   */
  protected closeDatabaseTransaction(sql: 'COMMIT' | 'ROLLBACK'): Promise<void> {
    const pending = this.connection;
    if (pending === undefined) return SETTLED as Promise<void>;
    this.connection = undefined;
    const closing = this.sendClose(pending, sql);
    this.previousClosing = closing.then(
      () => undefined,
      () => undefined,
    );
    return closing;
  }

  private async sendClose(pending: Promise<unknown>, sql: 'COMMIT' | 'ROLLBACK'): Promise<void> {
    let connection: unknown;
    try {
      connection = await pending;
    } catch {
      return; // BEGIN failed: there is no transaction to close
    }
    // Still this database transaction's: the next one begins only once this one is closed.
    const hold = this.hold;
    this.hold = undefined;
    const close = (statement: string) =>
      this.enqueue(() => {
        // From here on, statements meant for this database transaction are refused.
        if (this.liveConnection === connection) this.liveConnection = undefined;
        return this.send(connection, statement);
      });
    let result: unknown;
    try {
      result = await close(sql);
    } catch (err) {
      if (sql === 'ROLLBACK') {
        // A broken connection cannot roll back, and the server already has; knex's pool validates it away.
        if (this.env.dialect.isConnectionFailure(err)) this.env.logger.debug({ err }, 'ROLLBACK on a broken connection');
        else this.env.logger.warn({ err }, 'ROLLBACK failed; the connection goes back to the pool as it is');
        return;
      }
      // A failed COMMIT may leave the transaction open (SQLITE_BUSY): roll it back first.
      await close('ROLLBACK').catch(() => undefined);
      throw this.env.dialect.isConnectionFailure(err) ? new CommitOutcomeUnknownError(err) : err;
    } finally {
      await this.giveConnectionBack(connection, hold);
    }
    if (sql === 'COMMIT' && this.env.dialect.committedAsRollback(result)) throw new CommitRolledBackError();
  }

  /**
   * For terminate(), once `terminatedBy` is set: closes the database transaction
   * without waiting for anything queued on its connection and gives back what
   * it held. Undefined when none was open.
   */
  protected abandonDatabaseTransaction(reason: Error): Promise<void> | undefined {
    const connection = this.liveConnection;
    this.connection = undefined;
    this.liveConnection = undefined;
    return connection === undefined ? undefined : this.abandonConnection(connection, reason);
  }

  /** Closes the database transaction on `connection` from outside and lets the pool have the connection (or drop it). */
  private async abandonConnection(connection: unknown, reason: Error): Promise<void> {
    const hold = this.hold;
    this.hold = undefined;
    try {
      // The escalation lock, if held, goes with the closed session.
      if (this.env.dialect.abortTransaction(connection)) discardOnRelease(connection, reason);
      hold?.abandon();
      await releasePooledConnection(this.env.knex, connection);
    } catch (err) {
      this.env.logger.warn({ err }, 'ending a transaction from outside: giving its connection back failed');
    } finally {
      hold?.leave();
    }
  }
}
