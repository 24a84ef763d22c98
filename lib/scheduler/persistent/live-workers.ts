/**
 * Which live workers serve which queue, as the worker registry says, read at most
 * every few seconds and shared by the commits meanwhile: whom a commit wakes up
 * (wake-up.ts). A worker that registered since the last read is missed until
 * the next one; it finds the jobs by polling meanwhile.
 */
import type { Knex } from 'knex';
import type { Clock } from '../../interfaces.js';
import { HEARTBEAT_MS } from './worker-registry.js';
import type { TableNames } from './schema.js';

/** How long (ms) a read of the registry is used before it is read again. */
const TTL_MS = 3000;

/** A registry row, as far as wake-ups need it. */
export interface LiveWorkerRow {
  id: string;
  queues: string;
  wake_address: string | null;
}

export class LiveWorkers {
  /** The targets by queue, as read at `readAt`. */
  private read: { readAt: number; byQueue: Map<string, string[]> | undefined } | undefined;
  /** The read in progress, which commits meanwhile share. */
  private reading: Promise<Map<string, string[]> | undefined> | undefined;

  constructor(
    private readonly host: { knex: Knex; tables: TableNames; clock: Clock },
    /** What to know a live worker by (its id, its address); null: leave it out. */
    private readonly targetOf: (row: LiveWorkerRow) => string | null,
  ) {}

  /**
   * The targets of live workers, by queue they serve, read through `db` when the last read is too old;
   * undefined when that read failed (it is not tried again at once, for each commit).
   */
  async byQueue(db: Knex | Knex.Transaction = this.host.knex): Promise<Map<string, string[]> | undefined> {
    const now = this.host.clock.now();
    if (this.read && now - this.read.readAt < TTL_MS) return this.read.byQueue;
    this.reading ??= this.readNow(db, now).finally(() => (this.reading = undefined));
    return this.reading;
  }

  private async readNow(db: Knex | Knex.Transaction, now: number): Promise<Map<string, string[]> | undefined> {
    let byQueue: Map<string, string[]> | undefined;
    try {
      const rows = (await db(this.host.tables.workers)
        .select('id', 'queues', 'wake_address')
        .where('heartbeat_at', '>=', now - 3 * HEARTBEAT_MS)) as LiveWorkerRow[];
      byQueue = new Map();
      for (const row of rows) {
        const target = this.targetOf(row);
        if (target === null) continue;
        for (const queue of parsedQueues(row.queues)) byQueue.set(queue, [...(byQueue.get(queue) ?? []), target]);
      }
    } catch {
      // What the read was for falls back on polling, or on waking everyone: the caller decides.
    } finally {
      this.read = { readAt: now, byQueue };
    }
    return byQueue;
  }
}

function parsedQueues(text: string): string[] {
  try {
    const queues: unknown = JSON.parse(text);
    return Array.isArray(queues) ? queues.filter((queue): queue is string => typeof queue === 'string') : [];
  } catch {
    return [];
  }
}
