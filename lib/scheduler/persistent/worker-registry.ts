/**
 * The registry of running workers: a row per worker, written when it starts,
 * its heartbeat renewed now and then by its loop, deleted when it stops. A
 * worker that died leaves its row, which `workers()` reports as not alive once
 * its heartbeat is older than three intervals, until a worker starting an hour
 * later removes it.
 */
import type { Knex } from 'knex';
import type { FinishedPerMinute, WorkerInfo } from '../../interfaces.js';
import { sumHours } from '../finished-history.js';
import type { TableNames } from './schema.js';

type Db = Knex | Knex.Transaction;

/** How often (ms) a worker renews its heartbeat in the registry. */
export const HEARTBEAT_MS = 5000;

export interface RegisteredWorker {
  id: string;
  host: string;
  pid: number;
  queues: readonly string[];
  concurrency: number;
  /** Its process's jobs finished per minute in the last hour, as JSON (finished-history.ts). */
  finished: string;
  /** `host:port` its process receives wake-up datagrams on (wake-up.ts); null: none. */
  wakeAddress: string | null;
}

/** How long (ms) the row of a worker that died stays listed. */
const FORGET_AFTER_MS = 3_600_000;

export async function register(db: Db, tables: TableNames, worker: RegisteredWorker, now: number): Promise<void> {
  await db(tables.workers).where('heartbeat_at', '<', now - FORGET_AFTER_MS).delete();
  const { wakeAddress, ...columns } = worker;
  const row = { ...columns, queues: JSON.stringify(worker.queues), wake_address: wakeAddress, started_at: now, heartbeat_at: now };
  await db(tables.workers).insert(row).onConflict('id').merge();
}

/** Renews the heartbeat; a row that is gone (deleted, or never written because the database was away) is written again. */
export async function heartbeat(db: Db, tables: TableNames, worker: RegisteredWorker, now: number): Promise<void> {
  const renewed = await db(tables.workers).where({ id: worker.id }).update({ heartbeat_at: now, finished: worker.finished });
  if (renewed === 0) await register(db, tables, worker, now);
}

export async function unregister(db: Db, tables: TableNames, id: string): Promise<void> {
  await db(tables.workers).where({ id }).delete();
}

/** The registered workers, the most recently started first. */
export async function registeredWorkers(db: Db, tables: TableNames, now: number): Promise<WorkerInfo[]> {
  const rows = (await db(tables.workers).select('*').orderBy('started_at', 'desc')) as Record<string, unknown>[];
  return rows.map((row) => {
    const heartbeatAt = Number(row.heartbeat_at);
    return {
      id: String(row.id),
      host: String(row.host),
      pid: Number(row.pid),
      queues: JSON.parse(String(row.queues)) as string[],
      concurrency: Number(row.concurrency),
      startedAt: Number(row.started_at),
      heartbeatAt,
      alive: now - heartbeatAt <= 3 * HEARTBEAT_MS,
    };
  });
}

/**
 * Jobs finished per minute in the last hour, summed over the schedulers in the
 * registry: all workers of a scheduler write its counts, and the latest of them
 * counts once. A scheduler whose workers stopped took its counts with it; one
 * whose process died counts until its row is removed.
 */
export async function finishedPerMinute(db: Db, tables: TableNames, now: number): Promise<FinishedPerMinute> {
  const rows = (await db(tables.workers).select('heartbeat_at', 'finished')) as Record<string, unknown>[];
  const latest = new Map<string, { at: number; hour: unknown }>();
  for (const row of rows) {
    const hour = parsed(row.finished);
    const source = (hour as { source?: unknown } | undefined)?.source;
    if (typeof source !== 'string') continue;
    const at = Number(row.heartbeat_at);
    if (at >= (latest.get(source)?.at ?? -Infinity)) latest.set(source, { at, hour });
  }
  return sumHours([...latest.values()].map(({ hour }) => hour), now);
}

function parsed(text: unknown): unknown {
  try {
    return typeof text === 'string' ? JSON.parse(text) : undefined;
  } catch {
    return undefined;
  }
}
