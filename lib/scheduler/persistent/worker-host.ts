/** What a worker, and each job it claims, uses of its scheduler. */
import type { JobFunction, Logger, SchedulerEvents, StoredError, Transaction, TransactionMeta } from '../../interfaces.js';
import type { TransactionManager } from '../../transactions/manager.js';
import type { JobOutcome, JobRun } from '../base.js';
import type { SourcedHour } from '../finished-history.js';
import type { JobDurations } from './job-durations.js';
import type { LocalRuns } from './local-runs.js';
import type { Outcomes } from './outcomes.js';
import type { RecurringTicker } from './recurring.js';
import type { QueueQuotas } from './quotas.js';
import type { JobStore } from './store.js';

export interface WorkerHost {
  manager: TransactionManager;
  store: JobStore;
  /** The limits of the scheduler's queues, kept at claim time. */
  quotas: QueueQuotas;
  /** Emits a scheduler event; a listener that throws is logged, never fails the job or the worker. */
  emitSafely<K extends keyof SchedulerEvents>(event: K, ...args: SchedulerEvents[K]): void;
  logger: Logger;
  ttl: number;
  maxRuns: number;
  concurrency: number;
  localRuns: LocalRuns;
  /** How long each job took here: which jobs are short enough to share a transaction. */
  jobDurations: JobDurations;
  /** Writes what follows a recorded outcome (callbacks, batch progress) in the same transaction. */
  outcomes: Outcomes;
  /** The recurring jobs declared in this process: the loop fires them when due. */
  recurring: RecurringTicker;
  job(name: string): JobFunction;
  decodeMeta(meta: string): TransactionMeta;
  /** This process's jobs finished per minute in the last hour, for the registry. */
  finishedHour(): SourcedHour;
  runJob(run: JobRun): Promise<JobOutcome>;
  /** Runs a job of a group in the group's open transaction `tx`. */
  runJobInGroup(run: JobRun, tx: Transaction): Promise<JobOutcome & { durationMs: number }>;
  /** Emits `succeeded` for a run whose result committed. */
  jobSucceeded(run: Pick<JobRun, 'id' | 'name' | 'queue' | 'attempt' | 'run'>, transactionAttempt: number, durationMs: number): void;
  /** Rows of jobs that `tx` schedules, not written yet: a job of a group that scheduled some cannot be rolled back alone. */
  scheduledIn(tx: Transaction): number;
  reportFailure(job: { id: string; name: string; queue: string }, failure: { error: StoredError; cause: unknown; attempt: number; run: number }): void;
  /** Counts `worker` among this process's; resolves, once it is not, when what served them alone is closed. */
  register(worker: { wake(): void; readonly id: string; readonly queues: readonly string[] }): () => Promise<void>;
  /** Starts receiving wake-ups from other processes; resolves to the address workers announce in the registry, if any. */
  wakeAddress(): Promise<string | null>;
}
