/**
 * Names and messages bench/compare.ts and bench/compare-server.ts share, and the
 * measuring helpers bench/compare.ts and bench/burn-down.ts share (the physical
 * limit, the server-wide commit counters, where the cores went, Redis cleanup).
 */
import { availableParallelism } from 'node:os';
import knexFactory, { type Knex } from 'knex';
import { Redis } from 'ioredis';
import { TICKS_PER_SECOND, machineTicks, processTicks, ticksOf } from './proc-cpu.js';
import { benchDatabaseUrl, measureCommitRate } from './support.js';

export const REQUESTS_TABLE = 'bench_cmp_requests';
export const JOB_ROWS_TABLE = 'bench_cmp_job_rows';
export const AFTERCOMMIT_PREFIX = 'bench_cmp_'; // tables bench_cmp_jobs, bench_cmp_schema
export const BULLMQ_PREFIX = 'bench_cmp_bull'; // Redis keys bench_cmp_bull:*
export const BULLMQ_QUEUE = 'bench-cmp';
export const PGBOSS_SCHEMA = 'bench_pgboss';
export const PGBOSS_QUEUE = 'bench-cmp';
export const GRAPHILE_SCHEMA = 'bench_graphile_worker';
export const SYSTEMS = ['aftercommit-mariadb', 'aftercommit-postgres', 'bullmq', 'pg-boss', 'graphile-worker'] as const;
export type SystemName = (typeof SYSTEMS)[number];
export type JobKind = 'noop' | 'rw';

/** Messages from bench/compare.ts. */
export type Command = { cmd: 'drain'; expected: number } | { cmd: 'reset' } | { cmd: 'stop' };
/** Messages to bench/compare.ts. */
export type Reply =
  | { type: 'ready'; port: number; settings: Record<string, string | number | boolean> }
  | {
      type: 'drained';
      /** From the first request of the cell to the poll that found every job done. */
      ms: number;
      /** Per job, ms from its request's COMMIT returning to the job function starting. */
      commitToStart: number[];
      /** Jobs that started before their request saw its COMMIT return (negative commitToStart). */
      startedBeforeCommitReturned: number;
      /** Jobs with no commit time recorded (excluded). */
      missing: number;
      /** Transactions retried (aftercommit). */
      retries: number;
      failedRequests: number;
      /** Claim queries sent (aftercommit's worker; 0 for the others). */
      claims: number;
    }
  | { type: 'reset' }
  | { type: 'stopped' }
  | { type: 'error'; message: string };

// ---- measuring helpers (bench/compare.ts, bench/burn-down.ts) ----------------------------

export type Family = 'mysql' | 'postgres';

/** One-row transactions per second from `connections` connections of a pool of its own (see measureCommitRate). */
export async function commitRate(family: Family, connections: number, { table, ms }: { table: string; ms: number }): Promise<number> {
  const db = knexFactory({
    client: family === 'mysql' ? 'mysql2' : 'pg',
    connection: benchDatabaseUrl(family),
    pool: { min: connections, max: connections },
  });
  try {
    return (await measureCommitRate(db, { table, connections, ms })).rate;
  } finally {
    await db.destroy();
  }
}

/** Busy cores, averaged over a measurement. */
export interface Cores {
  /** The processes measured (compare.ts: the server process; burn-down.ts: the worker processes), summed. */
  server: number;
  database: number;
  redis: number;
  /** This process. */
  loadgen: number;
  machine: number;
}

/** Starts measuring (Linux /proc); the function returned gives the cores used since, or undefined without /proc. */
export function cpuMeter(pids: readonly number[], family: Family): () => Cores | undefined {
  const dbNames = family === 'mysql' ? /^(mariadbd|mysqld)$/ : /^postgres$/;
  const processes = () => pids.reduce((sum, pid) => sum + processTicks(pid), 0);
  try {
    const start = { server: processes(), db: ticksOf(dbNames), redis: ticksOf(/^redis-server$/), machine: machineTicks(), loadgen: process.cpuUsage(), at: performance.now() };
    return () => {
      const seconds = (performance.now() - start.at) / 1000;
      const cores = (ticks: number) => ticks / TICKS_PER_SECOND / seconds;
      const machine = machineTicks();
      const loadgen = process.cpuUsage(start.loadgen);
      return {
        server: cores(processes() - start.server),
        database: cores(ticksOf(dbNames) - start.db),
        redis: cores(ticksOf(/^redis-server$/) - start.redis),
        loadgen: (loadgen.user + loadgen.system) / 1e6 / seconds,
        machine: ((machine.busy - start.machine.busy) / (machine.total - start.machine.total)) * availableParallelism(),
      };
    };
  } catch {
    return () => undefined; // no /proc
  }
}

/**
 * A reader of what the database server of `db` counted so far, server-wide (other clients
 * included): deadlocks, and commits: MariaDB's Com_commit (explicit COMMITs; autocommit
 * statements are not counted), PostgreSQL's transaction ids handed out (transactions that
 * wrote; read-only ones are not counted; the reader's own are subtracted). PostgreSQL's
 * deadlock counter lags (it may show in the next measurement).
 */
export function serverCounters(db: Knex, family: Family): () => Promise<{ commits: number; deadlocks: number }> {
  let ownXids = 0; // PostgreSQL: transaction ids this reader took itself
  return async () => {
    if (family === 'mysql') {
      const [rows] = (await db.raw("SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_commit', 'Innodb_deadlocks')")) as [{ Variable_name: string; Value: string }[]];
      const value = (name: string) => Number(rows.find((r) => r.Variable_name === name)?.Value ?? NaN);
      return { commits: value('Com_commit'), deadlocks: value('Innodb_deadlocks') };
    }
    const { rows } = (await db.raw('SELECT txid_current() AS xid, deadlocks FROM pg_stat_database WHERE datname = current_database()')) as {
      rows: { xid: string; deadlocks: string }[];
    };
    ownXids++; // this query took one itself
    return { commits: Number(rows[0]!.xid) - ownXids, deadlocks: Number(rows[0]!.deadlocks) };
  };
}

/** Deletes the local Redis's keys that match `pattern` (e.g. `prefix:*`). */
export async function deleteRedisKeys(pattern: string): Promise<void> {
  const redis = new Redis({ host: '127.0.0.1', port: 6379 });
  try {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      if (keys.length) await redis.del(...keys);
      cursor = next;
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}
