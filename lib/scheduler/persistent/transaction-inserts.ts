/**
 * The rows each open transaction schedules, written in as few INSERTs as the
 * database allows just before it commits (so scheduling many jobs costs one
 * statement, not one each), and the rows with a dedupe key, written at once.
 */
import type { Dialect, Transaction } from '../../interfaces.js';
import { ConflictError } from '../../errors.js';
import type { NewJob } from './rows.js';
import type { JobStore } from './store.js';
import type { WakeUpChannel } from './wake-up.js';

export class TransactionInserts {
  private readonly unflushed = new WeakMap<Transaction, NewJob[]>();

  constructor(
    private readonly store: JobStore,
    private readonly dialect: Dialect,
    /** Tells this process's workers that jobs were committed. */
    private readonly wake: () => void,
    /** Tells the workers of other processes that serve the committed jobs' queues. */
    private readonly wakeUp: WakeUpChannel,
  ) {}

  /** Adds rows that `tx` writes before it commits. */
  add(tx: Transaction, rows: readonly NewJob[]): void {
    let pending = this.unflushed.get(tx);
    if (!pending) {
      const batch: NewJob[] = [];
      pending = batch;
      this.unflushed.set(tx, batch);
      tx.beforeCommit(async () => {
        this.unflushed.delete(tx); // later schedules of this transaction (after tx.commit()) start a new batch
        await this.store.insert(tx.db, batch);
        await this.wakeUp.beforeCommit(tx.db, dueQueues(batch));
      });
      tx.afterCommit((ok) => ok && this.committed(dueQueues(batch)));
      tx.afterAbort(() => this.unflushed.delete(tx)); // after tx.abort(), later schedules start a new batch too
    }
    pending.push(...rows);
  }

  /** How many rows `tx` will write before it commits. */
  count(tx: Transaction): number {
    return this.unflushed.get(tx)?.length ?? 0;
  }

  /** The row `id` that `tx` will write, if it has not yet. */
  find(tx: Transaction | undefined, id: string): NewJob | undefined {
    return tx && this.unflushed.get(tx)?.find((row) => row.id === id);
  }

  /** Takes row `id`, and the steps under it when it is a batch, out of what `tx` will write. */
  drop(tx: Transaction | undefined, id: string): void {
    const rows = (tx && this.unflushed.get(tx)) ?? [];
    if (!rows.some((row) => row.id === id)) return;
    // A batch's row comes before its steps', so one pass finds every row under it.
    const dropped = new Set([id]);
    for (const row of rows) if (row.parentId && dropped.has(row.parentId)) dropped.add(row.id);
    let kept = 0;
    for (const row of rows) if (!dropped.has(row.id)) rows[kept++] = row; // in place: a transaction may hold 100,000s of jobs
    rows.length = kept;
  }

  /** Inserts a job with a dedupe key at once, in a savepoint: a pending job of the same owner with the key wins. */
  async insertDeduped(tx: Transaction, row: NewJob): Promise<string> {
    const key = row.dedupeKey!;
    try {
      await tx.db.transaction(async (savepoint) => {
        await this.store.insert(savepoint, [row]);
        await this.wakeUp.beforeCommit(savepoint, [row.queue]);
      });
    } catch (err) {
      if (!this.dialect.isUniqueViolation(err)) throw err;
      const existing = await this.store.pendingWithKey(tx.db, row.owner, key);
      if (existing) return existing;
      // The holder started (and gave up its key) between the two statements: run the whole transaction again.
      throw new ConflictError(`the job holding dedupe key ${JSON.stringify(key)} started meanwhile`, { cause: err });
    }
    tx.afterCommit((ok) => ok && this.committed([row.queue]));
    return row.id;
  }

  private committed(queues: readonly string[]): void {
    this.wake();
    this.wakeUp.afterCommit(queues);
  }
}

/** The queues of the rows a worker may claim now (not those waiting for their batch's turn), once each. */
function dueQueues(rows: readonly NewJob[]): string[] {
  return [...new Set(rows.filter((row) => row.state !== 'waiting').map((row) => row.queue))];
}
