/**
 * Counting jobs for monitoring: by state (`stats()`) and, for metrics, the
 * unfinished ones by queue. Kept apart from the store's other statements, which
 * move single jobs.
 */
import type { Knex } from 'knex';
import type { JobState, QueueGauges } from '../../interfaces.js';
import { numOrNull } from './rows.js';
import type { JobStore } from './store.js';

type Db = Knex | Knex.Transaction;

/**
 * Unfinished jobs by queue and state, and each queue's oldest due pending job:
 * range scans of the claim index (state first), so finished rows, however
 * many are kept, are never read.
 */
export async function queueGauges(store: JobStore, db: Db, now: number): Promise<Record<string, QueueGauges>> {
  const gauges: Record<string, QueueGauges> = {};
  const of = (queue: string) => (gauges[queue] ??= { waiting: 0, pending: 0, running: 0, oldestDueMs: null });
  const counts = (await store.jobs(db)
    .select('queue', 'state')
    .count({ n: '*' })
    .whereIn('state', ['waiting', 'pending', 'running'])
    .groupBy('queue', 'state')) as { queue: string; state: 'waiting' | 'pending' | 'running'; n: unknown }[];
  for (const row of counts) of(row.queue)[row.state] = Number(row.n);
  const due = (await store.jobs(db).select('queue').min({ at: 'run_at' }).where({ state: 'pending' }).andWhere('run_at', '<=', now).groupBy('queue')) as {
    queue: string;
    at: unknown;
  }[];
  for (const row of due) {
    const at = numOrNull(row.at);
    of(row.queue).oldestDueMs = at === null ? null : now - at;
  }
  // The queues workers serve report zeros when nothing waits in them (absent would read as unknown).
  const served = (await db(store.tables.workers).select('queues')) as { queues: string }[];
  for (const row of served) for (const queue of JSON.parse(row.queues) as string[]) of(queue);
  return gauges;
}

/** Counts by state, and the age of the oldest due pending job. */
export async function stateCounts(store: JobStore, db: Db, now: number): Promise<{ counts: Record<JobState, number>; oldestDueMs: number | null }> {
  const counts: Record<JobState, number> = { waiting: 0, pending: 0, running: 0, done: 0, failed: 0 };
  const rows = (await store.jobs(db).select('state').count({ n: '*' }).groupBy('state')) as { state: JobState; n: unknown }[];
  for (const row of rows) counts[row.state] = Number(row.n);
  const oldest = await store.jobs(db).where({ state: 'pending' }).andWhere('run_at', '<=', now).min({ at: 'run_at' }).first();
  const at = numOrNull(oldest?.at);
  return { counts, oldestDueMs: at === null ? null : now - at };
}
