/** Names and messages bench/compare.ts and bench/compare-server.ts share. */

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
