/**
 * Paused queues: a row per queue an operator paused or resumed, read by every
 * claim's search for due jobs (store.duePending), so a pause holds in all worker
 * processes from the claims that start after it committed.
 */
import type { Knex } from 'knex';
import type { QueueState } from '../../interfaces.js';
import type { TransactionManager } from '../../transactions/manager.js';
import { QUEUE } from './job-options.js';
import type { TableNames } from './schema.js';

type Db = Knex | Knex.Transaction;

/** Pauses or resumes `queue` (checked here), noting when and by whom, in a transaction of its own. */
export async function changeQueue(manager: TransactionManager, tables: TableNames, queue: string, paused: boolean, by: string | undefined): Promise<void> {
  const what = paused ? 'admin.pauseQueue' : 'admin.resumeQueue';
  if (typeof queue !== 'string' || !QUEUE.test(queue)) throw new TypeError(`${what}(queue): a queue name is 1-64 letters, digits, _ . : -, got ${JSON.stringify(queue)}`);
  if (by !== undefined && (typeof by !== 'string' || by.length > 191)) throw new TypeError(`${what}(queue, { by }): by must be a string of at most 191 characters`);
  const row = { name: queue, paused, changed_at: manager.clock.now(), changed_by: by ?? null };
  // Outside any transaction of the caller's: the pause holds even if the caller's work rolls back.
  await manager.outside(() => manager.run((tx) => tx.db(tables.queues).insert(row).onConflict('name').merge(), { name: what, escalate: false }));
}

/** Every queue that was ever paused or resumed, with its state. */
export async function queueStates(db: Db, tables: TableNames): Promise<QueueState[]> {
  const rows = (await db(tables.queues).select('name', 'paused', 'changed_at', 'changed_by').orderBy('name')) as {
    name: string;
    paused: unknown;
    changed_at: unknown;
    changed_by: string | null;
  }[];
  return rows.map((row) => ({ name: row.name, paused: Boolean(Number(row.paused)), changedAt: Number(row.changed_at), changedBy: row.changed_by }));
}
