// Public types of `aftercommit`, the persistent scheduler: job options, its own
// options and statistics, scheduling with options, and its workers.
// Re-exported by lib/interfaces.ts: import them from there.
// Imports types of transactions.ts and schedulers.ts.
import type { JobFunction, JobProgress, JobSpec, JobState, SchedulerOptions, StepSpec, StoredError } from './schedulers.js';
import type { RetryDelay, TransactionMeta } from './transactions.js';

/** How and when one job runs (persistent scheduler): given to `define()` as defaults, or per schedule with `with()`. */
export interface JobOptions {
  /** Start no earlier than this (a Date, or ms since the epoch). Default: at once. */
  runAt?: Date | number;
  /** Start no earlier than this many ms after schedule(). Not together with `runAt`. */
  delay?: number;
  /** Lower runs first among due jobs of a queue; an integer. Default 0. */
  priority?: number;
  /** The queue; workers take the queues they are given. Default `default`. */
  queue?: string;
  /** Tries allowed for errors of the job's own (`job.attempt` counts them): 1 means a job that throws fails at once, without a retry. Default 1. */
  maxAttempts?: number;
  /** Delay before re-running a failed job: uniform(0, bound), the bound growing by factor. Default 1 s, ×2, up to 1 h. */
  backoff?: RetryDelay;
  /** Abort the job's signal after this many ms of running; it then fails with JobTimeoutError. Default: none. */
  timeout?: number;
  /** How long (ms) a claim lasts without a heartbeat; a crashed worker's job is taken over after it. Default: the scheduler's `lease`. */
  lease?: number;
  /** A second schedule with the same key, while the first has not started, returns the first id (`with({ dedupeKey })` resolves to it). */
  dedupeKey?: string;
  /** A job to schedule when this one (or this batch) is done, in the transaction that records that; it receives its own arguments, then `{ id, state: 'done', value }`. */
  onSuccess?: JobSpec;
  /** A job to schedule when this one (or this batch) fails for good, in the transaction that records that; it receives its own arguments, then `{ id, state: 'failed', error }`. */
  onFailure?: JobSpec;
  /** A serial batch stops at its first failed step: the steps after it are `skipped`. Default false (every step runs). */
  stopOnFailure?: boolean;
  /** Jobs of a queue with `concurrencyPerKey` run at most that many at once per key (e.g. a tenant or user id). */
  concurrencyKey?: string;
}

/** When a recurring job fires (persistent scheduler): `scheduler.recurring(key, options, name, ...args)`. See docs/recurring.md. */
export interface RecurringOptions {
  /** The cron pattern (croner's syntax): five fields from minute to day of week, or six with seconds first, e.g. `'0 30 9 * * MON-FRI'`. */
  cron: string;
  /** The IANA time zone the pattern's times are local to, e.g. `'Europe/Berlin'` (daylight-saving changes included). Default `'UTC'`, whatever the host's zone. */
  timezone?: string;
  /** What fires for the instants missed (not fired within `missedAfter` ms, e.g. while no worker ran): `'once'` one catch-up run for all of them, `'skip'` none. Default `'once'`. */
  missed?: 'skip' | 'once';
  /** How late (ms) an instant may still fire as on time; an instant later than that counts as missed. From 1,000; default 60,000. */
  missedAfter?: number;
}

/**
 * Limits of one queue (the persistent scheduler's `queues` option), kept where
 * jobs are claimed, across every worker of every process. A job taken over after
 * its lease ran out counts as it did while running; see docs/workers.md.
 */
export interface QueueOptions {
  /** At most this many running jobs of the queue at once; 1 runs them one at a time, in priority, run-at and submission order. */
  concurrency?: number;
  /** At most this many running jobs at once per `concurrencyKey` (a job option), while other keys go on; jobs without a key are not limited by it. */
  concurrencyPerKey?: number;
  /** At most `limit` claims of the queue within any `per` ms (counted from each job's last claim). */
  rate?: {
    /** Claims allowed within one window; an integer from 1. */
    limit: number;
    /** The window, in ms; an integer from 1. */
    per: number;
  };
}

/** Options of a {@link PersistentTransactionalScheduler}. */
export interface PersistentSchedulerOptions extends SchedulerOptions {
  /** Prefix of the scheduler's tables (`<prefix>jobs`, `<prefix>schema`). Default `aftercommit_`. */
  tablePrefix?: string;
  /** Default lease (ms) of a claimed job; renewed by a heartbeat every third of it. Default 30,000. */
  lease?: number;
  /**
   * Runs of a job that may end without saying anything about it (its worker died or lost its lease, a
   * conflict outlasted the transaction's retries, the database went away, its own COMMIT was lost, a
   * worker does not define it) before it fails for good. Default 5.
   */
  maxRuns?: number;
  /** Limits per queue name, e.g. `{ reports: { concurrency: 1 } }`, kept across all workers and processes. Default: none. */
  queues?: Record<string, QueueOptions>;
  /**
   * How long finished jobs' rows stay, fetched or not, for the dashboard and
   * `admin.find()`. Default `{ done: 0, failed: null }`: a done job's row goes
   * when its result is fetched (or after `ttl`), a failed one's stays until it
   * is retried or removed.
   */
  retention?: JobRetention;
  /**
   * How workers of other processes hear of the jobs this process's transactions
   * commit, so that they claim them at once instead of at their next poll (see
   * docs/workers.md, "Wake-up and the load of an idle worker"). PostgreSQL
   * carries wake-ups itself (LISTEN/NOTIFY) and reads nothing here but `false`.
   * On MySQL/MariaDB, a process with workers receives them as datagrams on
   * `address` and `port`, which its workers announce in the worker registry.
   * `false`: this process neither sends nor receives them; polling finds every
   * job anyway. Default `{ address: '127.0.0.1', port: 0 }` (any free port).
   */
  wakeUp?: WakeUpOptions | false;
}

/**
 * Where a MySQL/MariaDB process with workers receives wake-ups (UDP). The
 * default reaches the processes of one host; across hosts, give an address of
 * this host that the others reach (its private IP), and a fixed port to open
 * in a firewall.
 */
export interface WakeUpOptions {
  /** The IPv4 or IPv6 address to bind and announce; not 0.0.0.0 or ::, which other processes cannot send to. Default 127.0.0.1. */
  address?: string;
  /** The UDP port; 0 (the default): any free one. */
  port?: number;
}

/** How long finished jobs' rows stay (`PersistentSchedulerOptions.retention`); claims never read them, so kept rows do not slow them. */
export interface JobRetention {
  /** Ms a done job's row stays after it finished, even once its result was fetched. 0 (the default): until fetched, or `ttl`. */
  done?: number;
  /** Ms a failed job's row stays after it failed; null (the default): until an operator retries or removes it. */
  failed?: number | null;
}

/** Schedules with options: `scheduler.with({ runAt, priority, ... }).schedule(job, ...args)`. */
export interface Scheduling {
  schedule(job: string | JobFunction, ...args: unknown[]): string;
  /** Schedules a serial batch with these options; returns its id at once. */
  serial(...steps: StepSpec[]): string;
  /** Schedules a parallel batch with these options; returns its id at once. */
  parallel(...steps: StepSpec[]): string;
}

/** Schedules with a dedupe key: resolves to the id of the same owner's pending job with that key, or of the new one. */
export interface DedupedScheduling {
  schedule(job: string | JobFunction, ...args: unknown[]): Promise<string>;
}

/** Counts of the jobs in the table, by state, and the age (ms) of the oldest due pending job. */
export interface PersistentSchedulerStats {
  /** Batches whose steps run, and steps whose turn has not come. */
  waiting: number;
  pending: number;
  running: number;
  done: number;
  failed: number;
  oldestDueMs: number | null;
}

/** Options of `scheduler.worker()`. */
export interface WorkerOptions {
  /** Jobs this worker runs at once. Default: the scheduler's `concurrency`. */
  concurrency?: number;
  /** Queues it takes jobs from, in order of preference. Default `['default']`. */
  queues?: readonly string[];
  /** Shortest wait (ms) between claims while there is work. Default 50. */
  minPollInterval?: number;
  /** Longest wait (ms) between claims when idle (the wait doubles while claims come back empty). Default 2,000. */
  maxPollInterval?: number;
  /** How the worker names itself in `locked_by`. Default `<host>:<pid>:<random>`. */
  id?: string;
  /**
   * Ms a job whose signal was aborted (its timeout passed, it was removed, the
   * worker is stopping) has to end by itself; after that its transaction is ended
   * from outside (its connection closed, so the database rolls back and frees the
   * locks), its slot freed and its lease no longer renewed. Default 5,000.
   */
  grace?: number;
  /**
   * Ms within which short jobs share one transaction and one COMMIT (each in a
   * savepoint of its own, see "Groups of short jobs" in the README); 0 gives
   * every job a transaction of its own. Default 50.
   */
  groupWindow?: number;
  /** Most jobs a group runs (in one slot, one after the other), at most 100; 1 turns groups off. Default 8. */
  groupSize?: number;
}

/** Options of `worker.stop()`. */
export interface WorkerStopOptions {
  /** How long (ms) running jobs may go on; then their signal is aborted and they are handed back. Default 30,000. */
  timeout?: number;
}

/** A queue an operator paused or resumed (`scheduler.admin.queueStates()`). */
export interface QueueState {
  name: string;
  /** Whether workers claim none of its jobs. */
  paused: boolean;
  /** When it was last paused or resumed (ms since the epoch). */
  changedAt: number;
  /** Who paused or resumed it, as `pauseQueue(name, { by })` named them; null when not given. */
  changedBy: string | null;
}

/** A worker in the registry (`scheduler.admin.workers()`). */
export interface WorkerInfo {
  /** Its id, as the jobs it claims name it (`locked_by`). */
  id: string;
  host: string;
  pid: number;
  queues: string[];
  concurrency: number;
  startedAt: number;
  /** Its last heartbeat in the registry (renewed every 5 s while it runs). */
  heartbeatAt: number;
  /** Whether that heartbeat is recent (within 15 s): a worker that died stays listed, not alive, until it is removed. */
  alive: boolean;
}

/** Which jobs `scheduler.admin` finds, retries or removes; every field narrows, none: all jobs. */
export interface JobAdminFilter {
  state?: JobState;
  queue?: string;
  /** The job's defined name. */
  name?: string;
  /** The owner (the scheduling request's user id, as text). */
  owner?: string;
  /** The id of the request that scheduled it (`X-Request-Id`, or the one aftercommit made). */
  requestId?: string;
  /** Created at or after this (ms since the epoch). */
  since?: number;
  /** Created before this (ms since the epoch). */
  until?: number;
}

/** A job as `scheduler.admin.find()` lists it. */
export interface JobSummary {
  id: string;
  name: string;
  queue: string;
  state: JobState;
  owner: string | null;
  /** The scheduling transaction's note: `METHOD path` for a request guarded by aftercommit. */
  note: string | null;
  /** The id of the request that scheduled it (its `X-Request-Id`), when a request did. */
  requestId: string | null;
  /** When `schedule()` was called (ms since the epoch). */
  createdAt: number;
  /** When the transaction that committed the row wrote it: just before its COMMIT (at `schedule()` for a job with a `dedupeKey`; a callback's, in its parent's run); null for rows written before 0.2. */
  committedAt: number | null;
  runAt: number;
  /** The last claim's time, null before the first. */
  startedAt: number | null;
  finishedAt: number | null;
  runs: number;
  failures: number;
  progress?: JobProgress;
}

/** A recurring job this process declared, as `admin.recurring()` lists it. */
export interface RecurringStatus {
  key: string;
  /** The job's defined name. */
  job: string;
  cron: string;
  timezone: string;
  /** The last instant it fired for, by any process (ms since the epoch); null before its first tick. */
  lastInstant: number | null;
  /** The next instant it fires for; null when its pattern fires no more. */
  nextInstant: number | null;
}

/** One run of a job, as `admin.get(id).runLog` lists it (the newest 20). */
export interface JobRunRecord {
  /** The run's number: 1 for the first claim, one more for each later one. */
  run: number;
  /** The worker that claimed it (its `locked_by`). */
  worker: string;
  /** When it was claimed (ms since the epoch). */
  claimedAt: number;
  /** When its end was recorded; for `lease expired`, when another worker took the job over. */
  endedAt: number;
  /** `done`, `failed` (for good), `retried` (re-queued after the job's error), `handed back` (its worker stopped) or `lease expired` (its worker died or stalled). */
  outcome: 'done' | 'failed' | 'retried' | 'handed back' | 'lease expired';
  /** The error's name, for `failed` and `retried`. */
  error?: string;
}

/** A page of `scheduler.admin.find()`; pass `next` as `after` for the following one. */
export interface JobPage {
  jobs: JobSummary[];
  next?: string;
}

/** A job as `scheduler.admin.get()` shows it, whole. */
export interface JobDetail extends JobSummary {
  /** Its arguments as stored, with the fields the caller named in `redact` replaced by "[redacted]". */
  args: unknown[];
  /** The scheduling transaction's metadata (user, note, extension with the request id), redacted likewise. */
  meta: TransactionMeta;
  priority: number;
  maxAttempts: number;
  /** The worker that holds (or last held) its claim, and until when. */
  lockedBy: string | null;
  lockedUntil: number | null;
  /** The batch this job is a step of. */
  parentId: string | null;
  kind: 'job' | 'serial' | 'parallel';
  /** The attempt of the scheduling transaction that committed the job (1 unless its request was retried; steps and callbacks carry their origin's); null for recurring runs and rows written before 0.2. */
  committedAttempt: number | null;
  /** The scheduling request's W3C trace context, stored when `@opentelemetry/api` was active; null otherwise. */
  traceparent: string | null;
  /** Its runs so far (the newest 20), oldest first: who ran each, when, and how it ended. */
  runLog: JobRunRecord[];
  /** A batch's steps, in their order (a step that is a batch shows as one). */
  steps?: JobSummary[];
  /** A done job's value (redacted likewise). */
  result?: unknown;
  /** A failed job's stored error. */
  error?: StoredError;
}
