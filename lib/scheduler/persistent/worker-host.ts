/** What a worker, and each job it claims, uses of its scheduler. */
import type { JobFunction, Logger, SchedulerEvents, StoredError, TransactionMeta } from '../../interfaces.js';
import type { TransactionManager } from '../../transactions/manager.js';
import type { JobOutcome, JobRun } from '../base.js';
import type { SourcedHour } from '../finished-history.js';
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
  /** Writes what follows a recorded outcome (callbacks, batch progress) in the same transaction. */
  outcomes: Outcomes;
  /** The recurring jobs declared in this process: the loop fires them when due. */
  recurring: RecurringTicker;
  job(name: string): JobFunction;
  decodeMeta(meta: string): TransactionMeta;
  /** This process's jobs finished per minute in the last hour, for the registry. */
  finishedHour(): SourcedHour;
  runJob(run: JobRun): Promise<JobOutcome>;
  reportFailure(job: { id: string; name: string; queue: string }, failure: { error: StoredError; cause: unknown; attempt: number; run: number }): void;
  /** Counts `worker` among this process's; resolves, once it is not, when what served them alone is closed. */
  register(worker: { wake(): void; readonly queues: readonly string[] }): () => Promise<void>;
  /** Starts receiving wake-ups from other processes; resolves to the address workers announce in the registry, if any. */
  wakeAddress(): Promise<string | null>;
}
