/**
 * One attempt of a transaction: its hooks, its checkpoints and its end, and
 * the rules for what may still reach the server. Its lazily-begun database
 * transactions are in database-transaction.ts.
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
import type { AfterCommitHook, Hook, IsolationLevel, Transaction, TransactionMeta } from '../interfaces.js';
import { TransactionDoomedError, TransactionEndedError } from '../errors.js';
import { sendPastGate, type StatementGate } from './knex-internals.js';
import type { GateTurn } from './contention-gate.js';
import { DatabaseTransactions, type DatabaseTransactionEnvironment } from './database-transaction.js';
import { HookList } from './hooks.js';
import type { AttemptSpan } from '../support/tracing.js';

/** What an attempt needs from its manager. */
export interface AttemptEnvironment extends DatabaseTransactionEnvironment {
  /** Makes the `db` of an attempt. */
  bindDb(gate: StatementGate): Knex.Transaction;
}

type State = 'open' | 'ending' | 'committed' | 'rolled back';

/**
 * One attempt. It extends its database transactions (database-transaction.ts):
 * their BEGIN, the order of their statements, their doom, their COMMIT/ROLLBACK,
 * and `began`, `doomedBy` and `terminatedBy`.
 */
export class TransactionAttempt extends DatabaseTransactions implements Transaction, StatementGate {
  protected declare readonly env: AttemptEnvironment;
  private boundDb: Knex.Transaction | undefined;
  private state: State = 'open';
  private savepoints = 0;
  /** A savepoint to send before the next statement, if one comes (see markSavepoint()). */
  private deferredSavepoint: string | undefined;
  /** Why checkpoints are refused in this attempt (a group of jobs shares it), and whether one was tried. */
  private checkpointBan: { reason: string; tried: boolean } | undefined;
  private controller: AbortController | undefined;
  private readonly beforeCommitHooks = new HookList();
  private readonly afterCommitHooks = new HookList();
  private readonly afterAbortHooks = new HookList();
  rollbackOnly = false;

  constructor(
    env: AttemptEnvironment,
    readonly attempt: number,
    readonly meta: TransactionMeta,
    isolation: IsolationLevel | undefined,
    /** How this attempt takes turns at the contention gate; undefined: it takes no part. */
    turn: GateTurn | undefined,
    /** The attempt this one was started from with `tm.outside()`, if any. */
    startedBy: TransactionAttempt | undefined,
    /** This attempt's span, while OpenTelemetry traces. */
    readonly span: AttemptSpan | undefined,
  ) {
    super(env, isolation, turn, startedBy);
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
    const abandoning = this.abandonDatabaseTransaction(reason);
    if (abandoning) await abandoning;
    this.state = 'rolled back';
    await this.runAfterAbortHooks();
  }

  get escalated(): boolean {
    return this.turn === 'escalated';
  }

  /** Built on first use: a request that never queries does not pay for it. */
  override get db(): Knex.Transaction {
    return (this.boundDb ??= this.env.bindDb(this));
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
    return this.currentConnection();
  }

  statement<T>(connection: unknown, execute: () => Promise<T>): Promise<T> {
    return this.enqueue(() => {
      this.assertUsable('a statement');
      if (connection !== this.liveConnection) {
        // The builder took its connection before a checkpoint closed that database transaction.
        throw new TransactionEndedError('a statement of an earlier database transaction of this attempt');
      }
      if (this.deferredSavepoint === undefined) return execute();
      const name = this.deferredSavepoint;
      this.deferredSavepoint = undefined;
      return sendPastGate(this.db, connection, `SAVEPOINT ${name}`).then(execute);
    });
  }

  /**
   * Marks a point to roll back to with {@link rollBackToMark}. Its SAVEPOINT is
   * sent just before the next statement, so work that sends none (a no-op job
   * of a group) costs no round trip. @internal
   */
  markSavepoint(): string {
    this.deferredSavepoint = `aftercommit_sp${++this.savepoints}`;
    return this.deferredSavepoint;
  }

  /** Rolls back what was sent since `mark`; nothing to do when nothing was. @internal */
  async rollBackToMark(mark: string): Promise<void> {
    if (this.deferredSavepoint === mark) {
      this.deferredSavepoint = undefined;
      return;
    }
    await this.db.raw(`ROLLBACK TO SAVEPOINT ${mark}`);
  }

  /** Makes tx.commit() and tx.abort() throw `reason` from now on: work of several owners shares this attempt. @internal */
  refuseCheckpoints(reason: string): void {
    this.checkpointBan = { reason, tried: false };
  }

  /** Whether a checkpoint was refused (and what tried it may have gone on as if it had been made). @internal */
  get checkpointRefused(): boolean {
    return this.checkpointBan?.tried === true;
  }

  /** Hooks registered so far, of every kind: a change tells that some work left something for the end. @internal */
  get hookCount(): number {
    return this.beforeCommitHooks.size + this.afterCommitHooks.size + this.afterAbortHooks.size;
  }

  private assertCheckpointAllowed(what: string): void {
    if (!this.checkpointBan) return;
    this.checkpointBan.tried = true;
    throw new Error(`${what} is refused here: ${this.checkpointBan.reason}`);
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

  private assertOpen(what: string): void {
    if (!this.isOpen) throw new TransactionEndedError(what);
  }

  private assertUsable(what: string): void {
    if (this.terminatedBy) throw this.terminatedBy;
    this.assertOpen(what);
    if (this.doomedBy !== undefined) throw new TransactionDoomedError(this.doomedBy);
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
    this.assertCheckpointAllowed('tx.commit()');
    if (this.rollbackOnly) throw new Error('tx.commit() after setRollbackOnly(): the work so far must not be committed; use tx.abort()');
    await this.prepare();
    await this.commitDatabaseTransaction();
    this.afterAbortHooks.clear(); // what they were for is committed now
    await this.afterCommitHooks.runLogged(this.env.logger, 'after-commit', true);
  }

  /** The abort checkpoint: rolls back the work so far and goes on in a fresh database transaction. */
  async abort(): Promise<void> {
    this.assertOpen('tx.abort()');
    this.assertCheckpointAllowed('tx.abort()');
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
    if (this.doomedBy === undefined && !this.began && this.afterCommitHooks.isEmpty) {
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
    const endCommitSpan = this.began ? this.span?.startCommit() : undefined;
    try {
      await this.closeDatabaseTransaction('COMMIT');
    } catch (err) {
      endCommitSpan?.(err);
      await this.afterCommitHooks.runLogged(this.env.logger, 'after-commit', false);
      await this.runAfterAbortHooks();
      throw err;
    }
    endCommitSpan?.();
  }

  private async runAfterAbortHooks(): Promise<void> {
    this.beforeCommitHooks.clear();
    this.afterCommitHooks.clear();
    await this.afterAbortHooks.runLogged(this.env.logger, 'after-abort');
  }
}
