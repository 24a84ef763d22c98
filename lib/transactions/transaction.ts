/**
 * One attempt of a transaction: the lazily-begun database transaction, its
 * hooks, and the rules for what may still reach the server.
 *
 * Words used here:
 * - the *database transaction* is one BEGIN … COMMIT/ROLLBACK on one
 *   connection; an attempt may run several, one after the other;
 * - a *checkpoint* (`tx.commit()`, `tx.abort()`) commits or rolls back the
 *   database transaction and leaves the attempt open: the next statement begins
 *   a fresh one;
 * - the attempt *ends* once: `end('commit')` after its function returned,
 *   `end('rollback')` after it failed, `terminate()` from outside. Its state
 *   goes from open through ending to committed or rolled back;
 * - a *doomed* attempt is one whose database transaction the database rolled
 *   back (a deadlock, ...): it stays open, but refuses statements, until it ends.
 */
import type { Knex } from 'knex';
import type { AfterCommitHook, Hook, IsolationLevel, Logger, Transaction, TransactionMeta } from '../interfaces.js';
import type { Dialect } from '../dialects/index.js';
import { CommitOutcomeUnknownError, CommitRolledBackError, PreemptedError, TransactionDoomedError, TransactionEndedError } from '../errors.js';
import { acquirePooledConnection, discardOnRelease, releasePooledConnection, sendPastGate, type StatementGate } from './knex-internals.js';
import type { GateTurn } from './contention-gate.js';
import { ContentionHold, type ContentionEnvironment } from './contention-hold.js';
import { HookList } from './hooks.js';

/** What an attempt needs from its manager. */
export interface AttemptEnvironment {
  readonly knex: Knex;
  readonly dialect: Dialect;
  readonly logger: Logger;
  isTransient(err: unknown): boolean;
  /** Makes the `db` of an attempt. */
  bindDb(gate: StatementGate): Knex.Transaction;
  /** Where attempts take turns under contention; undefined when the manager's `escalate` is off. */
  readonly contention: ContentionEnvironment | undefined;
}

type State = 'open' | 'ending' | 'committed' | 'rolled back';

/** The queue of a transaction that has sent nothing yet: shared, as most requests send nothing. */
const SETTLED: Promise<unknown> = Promise.resolve();

export class TransactionAttempt implements Transaction, StatementGate {
  private boundDb: Knex.Transaction | undefined;
  private state: State = 'open';
  /** The connection of the open database transaction (BEGIN sent), while one is open. */
  private connection: Promise<unknown> | undefined;
  /** The connection statements may use: the one BEGIN was sent on, until its COMMIT/ROLLBACK is queued. */
  private liveConnection: unknown;
  /** Statements of this attempt run one after the other, so a doom is seen before the next one is sent. */
  private queue: Promise<unknown> = SETTLED;
  /** The error after which the database had rolled the transaction back, if any. */
  doomedBy: unknown;
  /** The ROLLBACK sent on our side after the doom, while it is under way. */
  private doomRollback: Promise<void> | undefined;
  private savepoints = 0;
  /** What the open database transaction holds under contention (its turn at the gate, ...), if anything. */
  private hold: ContentionHold | undefined;
  /** The COMMIT/ROLLBACK of the previous database transaction (a checkpoint), while it is under way; it never rejects. */
  private previousClosing: Promise<void> | undefined;
  /** Why the attempt was ended from outside (see terminate()), if it was. */
  terminatedBy: Error | undefined;
  private controller: AbortController | undefined;
  private readonly beforeCommitHooks = new HookList();
  private readonly afterCommitHooks = new HookList();
  private readonly afterAbortHooks = new HookList();
  rollbackOnly = false;

  constructor(
    private readonly env: AttemptEnvironment,
    readonly attempt: number,
    readonly meta: TransactionMeta,
    private readonly isolation: IsolationLevel | undefined,
    /** How this attempt takes turns at the contention gate; undefined: it takes no part. */
    private readonly turn: GateTurn | undefined,
    /**
     * The attempt this one was started from with `tm.outside()`, if any: while
     * that one holds a turn it waits for this one, so this one must not wait for
     * a turn behind it.
     */
    private readonly startedBy: TransactionAttempt | undefined,
  ) {
  }

  /** True while a database transaction of this attempt holds a turn at the gate. */
  get holdsTurn(): boolean {
    return this.hold !== undefined;
  }

  /** Aborted when the attempt is ended from outside; made on first use. */
  get signal(): AbortSignal {
    this.controller ??= new AbortController();
    if (this.terminatedBy && !this.controller.signal.aborted) this.controller.abort(this.terminatedBy);
    return this.controller.signal;
  }

  /**
   * Ends the attempt from outside, whatever its function is doing: a statement
   * in progress, or an await that never settles. The database transaction is
   * closed without waiting for anything queued on its connection (a server's
   * connection is closed, so the server rolls back and frees its locks), the
   * turn and the connection go back, the after-abort hooks run, and everything
   * the attempt tries later fails with `reason`.
   */
  async terminate(reason: Error): Promise<void> {
    if (this.ended || this.terminatedBy) return;
    this.terminatedBy = reason;
    this.controller?.abort(reason);
    this.state = 'ending';
    const connection = this.liveConnection;
    this.connection = undefined;
    this.liveConnection = undefined;
    if (connection !== undefined) await this.abandonConnection(connection, reason);
    this.state = 'rolled back';
    await this.runAfterAbortHooks();
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

  get escalated(): boolean {
    return this.turn === 'escalated';
  }

  /** Built on first use: a request that never queries does not pay for it. */
  get db(): Knex.Transaction {
    return (this.boundDb ??= this.env.bindDb(this));
  }

  get began(): boolean {
    return this.connection !== undefined;
  }

  /** Open: statements, hooks and nested calls are still accepted. */
  get isOpen(): boolean {
    return this.state === 'open';
  }

  get ended(): boolean {
    return this.state === 'committed' || this.state === 'rolled back';
  }

  // ---- hooks -------------------------------------------------------------

  afterCommit<A extends unknown[]>(hook: AfterCommitHook<A>, ...args: A): void {
    this.assertOpen('afterCommit()');
    this.afterCommitHooks.add(hook, args);
  }

  afterAbort<A extends unknown[]>(hook: Hook<A>, ...args: A): void {
    this.assertOpen('afterAbort()');
    this.afterAbortHooks.add(hook, args);
  }

  beforeCommit<A extends unknown[]>(hook: Hook<A>, ...args: A): void {
    this.assertOpen('beforeCommit()');
    this.beforeCommitHooks.add(hook, args);
  }

  setRollbackOnly(): void {
    this.rollbackOnly = true;
  }

  // ---- statements (StatementGate) ------------------------------------------

  acquire(): Promise<unknown> {
    try {
      this.assertUsable('a statement');
    } catch (err) {
      return Promise.reject(err);
    }
    // A statement sent while the previous database transaction is still closing begins the next one after it.
    this.connection ??= this.previousClosing ? this.previousClosing.then(() => this.begin()) : this.begin();
    return this.connection;
  }

  statement<T>(connection: unknown, execute: () => Promise<T>): Promise<T> {
    return this.enqueue(() => {
      this.assertUsable('a statement');
      if (connection !== this.liveConnection) {
        // The builder took its connection before a checkpoint closed that database transaction.
        throw new TransactionEndedError('a statement of an earlier database transaction of this attempt');
      }
      return execute();
    });
  }

  async savepoint<T>(fn: (db: Knex.Transaction) => Promise<T> | T): Promise<T> {
    const name = `aftercommit_sp${++this.savepoints}`;
    await this.db.raw(`SAVEPOINT ${name}`);
    try {
      const value = await fn(this.db);
      await this.db.raw(`RELEASE SAVEPOINT ${name}`);
      return value;
    } catch (err) {
      // After a doom the savepoint is gone with the transaction: nothing to roll back to.
      if (this.doomedBy === undefined && this.isOpen) await this.db.raw(`ROLLBACK TO SAVEPOINT ${name}`);
      throw err;
    }
  }

  private enqueue<T>(run: () => Promise<T>): Promise<T> {
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
      for (const sql of this.env.dialect.begin(this.isolation)) await this.enqueue(() => this.send(connection, sql));
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

  private assertOpen(what: string): void {
    if (!this.isOpen) throw new TransactionEndedError(what);
  }

  private assertUsable(what: string): void {
    if (this.terminatedBy) throw this.terminatedBy;
    this.assertOpen(what);
    if (this.doomedBy !== undefined) throw new TransactionDoomedError(this.doomedBy);
  }

  /**
   * Closes the current database transaction with `sql` (queued behind the
   * statements already sent) and returns its connection to the pool. A failed
   * ROLLBACK is logged; a failed COMMIT is rolled back and thrown.
   */
  private closeDatabaseTransaction(sql: 'COMMIT' | 'ROLLBACK'): Promise<void> {
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

  // ---- checkpoints and the end -------------------------------------------

  /** Runs the before-commit hooks; inside the transaction, while it is still current. */
  // prepare() and end() return undefined when there is nothing to wait for: with
  // AsyncLocalStorage on, every promise costs, and most requests have no hooks.
  prepare(): Promise<void> | undefined {
    return this.hasWorkBeforeCommit ? this.runBeforeCommitHooks() : undefined;
  }

  /** True when prepare() has something to do: before-commit hooks, or a doom to report. */
  get hasWorkBeforeCommit(): boolean {
    return !this.beforeCommitHooks.isEmpty || this.doomedBy !== undefined;
  }

  private async runBeforeCommitHooks(): Promise<void> {
    await this.beforeCommitHooks.runAll();
    if (this.doomedBy !== undefined) throw new TransactionDoomedError(this.doomedBy);
  }

  /** The commit checkpoint: commits the work so far and goes on in a fresh database transaction. */
  async commit(): Promise<void> {
    this.assertUsable('tx.commit()');
    if (this.rollbackOnly) throw new Error('tx.commit() after setRollbackOnly(): the work so far must not be committed; use tx.abort()');
    await this.prepare();
    await this.commitDatabaseTransaction();
    this.afterAbortHooks.clear(); // what they were for is committed now
    await this.afterCommitHooks.runLogged(this.env.logger, 'after-commit', true);
  }

  /** The abort checkpoint: rolls back the work so far and goes on in a fresh database transaction. */
  async abort(): Promise<void> {
    this.assertOpen('tx.abort()');
    await this.rollBackDatabaseTransaction();
    this.doomedBy = undefined;
    await this.runAfterAbortHooks();
  }

  /**
   * Ends the attempt (once; later calls do nothing).
   * - `'commit'`, after its function returned: COMMIT, or ROLLBACK after
   *   setRollbackOnly(). A failed COMMIT is rolled back, runs the after-commit
   *   hooks with `false` and the after-abort hooks, and throws. A doomed attempt
   *   throws TransactionDoomedError and stays open, for `end('rollback')`.
   * - `'rollback'`, after its function failed: ROLLBACK, then the after-abort hooks.
   */
  end(outcome: 'commit' | 'rollback'): Promise<void> | undefined {
    if (this.ended) return undefined;
    if (outcome === 'rollback' || this.rollbackOnly) return this.endWithRollback();
    if (this.doomedBy === undefined && this.connection === undefined && this.afterCommitHooks.isEmpty) {
      this.state = 'committed'; // nothing began and nobody waits: the commit is a formality
      this.afterAbortHooks.clear();
      return undefined;
    }
    return this.endWithCommit();
  }

  private async endWithCommit(): Promise<void> {
    if (this.doomedBy !== undefined) throw new TransactionDoomedError(this.doomedBy);
    this.state = 'ending';
    try {
      await this.commitDatabaseTransaction();
    } catch (err) {
      this.state = 'rolled back';
      throw err;
    }
    this.state = 'committed';
    await this.afterCommitHooks.runLogged(this.env.logger, 'after-commit', true);
  }

  private async endWithRollback(): Promise<void> {
    this.state = 'ending';
    await this.rollBackDatabaseTransaction();
    this.state = 'rolled back';
    await this.runAfterAbortHooks();
  }

  /** COMMIT; when it fails, the after-commit hooks learn so, the after-abort hooks run, and the error is thrown. */
  private async commitDatabaseTransaction(): Promise<void> {
    try {
      await this.closeDatabaseTransaction('COMMIT');
    } catch (err) {
      await this.afterCommitHooks.runLogged(this.env.logger, 'after-commit', false);
      await this.runAfterAbortHooks();
      throw err;
    }
  }

  private async rollBackDatabaseTransaction(): Promise<void> {
    await this.doomRollback;
    this.doomRollback = undefined;
    await this.closeDatabaseTransaction('ROLLBACK');
  }

  private async runAfterAbortHooks(): Promise<void> {
    this.beforeCommitHooks.clear();
    this.afterCommitHooks.clear();
    await this.afterAbortHooks.runLogged(this.env.logger, 'after-abort');
  }
}
