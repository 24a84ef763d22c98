/**
 * PersistentTransactionalScheduler: schedules are rows in the database, written
 * by the scheduling transaction itself (a transactional outbox), so a schedule
 * exists if and only if that transaction commits. Any process can report on a
 * schedule, and workers in any process, on any host, run the jobs.
 */
import type { Knex } from 'knex';
import type {
  DedupedScheduling,
  GetResultOptions,
  JobFunction,
  JobOptions,
  PersistentSchedulerOptions,
  PersistentSchedulerStats,
  QueueGauges,
  RecurringOptions,
  ScheduleResult,
  Scheduler,
  Scheduling,
  StepSpec,
  StoredError,
  Transaction,
  TransactionMeta,
  WorkerOptions,
} from '../../interfaces.js';
import type { TransactionManager } from '../../transactions/manager.js';
import type { TransactionAttempt } from '../../transactions/transaction.js';
import { clusterOf } from '../../dialects/index.js';
import { SchedulerBase, visibleTo } from '../base.js';
import { isScheduleId } from '../ids.js';
import { queueGauges, stateCounts } from './job-counts.js';
import { JobAdmin } from './job-admin.js';
import { checkBatchOptions, checkJobOnlyOptions, checkJobOptions } from './job-options.js';
import { migrate, migrationSource, tableNames } from './schema.js';
import { LocalRuns } from './local-runs.js';
import { QueueQuotas, checkQueueOptions } from './quotas.js';
import { RecurringJobs } from './recurring.js';
import type { NewJob } from './rows.js';
import { Outcomes } from './outcomes.js';
import { originOf } from './origin.js';
import { checkRetention, type Retention } from './retention.js';
import { NewRows } from './new-rows.js';
import { TransactionInserts } from './transaction-inserts.js';
import { JobDurations } from './job-durations.js';
import { wakeUpChannel, type WakeUpChannel } from './wake-up.js';
import { StoredBatchSpec, checkSteps } from '../specs.js';
import { JobStore } from './store.js';
import { Worker } from './worker.js';
import type { WorkerHost } from './worker-host.js';
import { integerIn } from '../../support/validate.js';

export class PersistentTransactionalScheduler extends SchedulerBase implements Scheduler {
  private readonly store: JobStore;
  /** Makes the rows schedules write. */
  private readonly newRows: NewRows;
  /** What follows a recorded outcome: callbacks and batches. */
  private readonly outcomes: Outcomes;
  /** How long finished rows stay. */
  private readonly retention: Retention;
  /** Jobs running in this process: remove() and, with SQLite, getResult() reach them at once. */
  private readonly localRuns = new LocalRuns();
  /** Jobs scheduled by each open transaction, inserted just before it commits. */
  private readonly inserts: TransactionInserts;
  private readonly localWorkers = new Set<{ wake(): void; readonly id: string; readonly queues: readonly string[] }>();
  /** How commits here wake the workers of other processes, and theirs wake this one's. */
  private readonly wakeUp: WakeUpChannel;
  /** What an operator does: find, look at, retry, run now and remove jobs; pause queues; list workers (trusted code; no owner rule). */
  readonly admin: JobAdmin;
  /** What this scheduler's workers use of it. */
  private readonly host: WorkerHost;
  /** The recurring jobs declared in this process; its workers fire them. */
  private readonly recurringJobs: RecurringJobs;

  constructor(manager: TransactionManager, options: PersistentSchedulerOptions = {}) {
    super(manager, options);
    this.store = new JobStore(tableNames(options.tablePrefix ?? 'aftercommit_'), manager.dialect, manager.clock);
    this.admin = new JobAdmin({
      manager,
      tables: this.store.tables,
      decodeArguments: (text) => this.codec.decodeArguments(text),
      decodeValue: (text) => this.codec.decodeValue(text),
      recurring: () => this.recurringJobs.status(),
      wake: () => this.wake(),
    });
    this.wakeUp = wakeUpChannel(
      {
        knex: manager.knex,
        tables: this.store.tables,
        clock: manager.clock,
        logger: this.logger,
        wake: (queue) => this.wake(queue),
        isLocalWorker: (id) => [...this.localWorkers].some((worker) => worker.id === id),
      },
      { notifications: manager.dialect.commitNotifications, singleWriter: manager.dialect.singleWriter },
      options.wakeUp,
    );
    this.inserts = new TransactionInserts(this.store, manager.dialect, () => this.wake(), this.wakeUp);
    this.newRows = new NewRows(manager.clock, integerIn(options.lease ?? 30_000, 'lease (ms)', 100));
    const maxRuns = integerIn(options.maxRuns ?? 5, 'maxRuns', 1);
    this.retention = checkRetention(options.retention);
    const quotas = new QueueQuotas(checkQueueOptions(options.queues), this.store, manager.knex, manager.dialect, this.logger);
    this.outcomes = new Outcomes(
      this.store,
      this.codec,
      manager.clock,
      this.ttl,
      this.retention,
      (name, args, jobOptions, origin) => this.newRows.job(name, args, jobOptions, origin),
      this.logger,
    );
    this.recurringJobs = new RecurringJobs({
      manager,
      store: this.store,
      logger: this.logger,
      encodeArguments: (name, args) => {
        this.definedJob(name); // define() the job first
        return this.codec.encodeArguments(name, args);
      },
      row: (name, args, runAt) => this.newRows.job(name, args, { runAt }, { meta: this.codec.encodeMeta(name, {}), owner: null, requestId: null }),
      wake: () => this.wake(),
    });
    this.host = {
      manager,
      store: this.store,
      quotas,
      emitSafely: (event, ...args) => this.emitSafely(event, ...args),
      logger: this.logger,
      ttl: this.ttl,
      maxRuns,
      concurrency: integerIn(options.concurrency ?? 4, 'concurrency', 1),
      localRuns: this.localRuns,
      jobDurations: new JobDurations(),
      outcomes: this.outcomes,
      recurring: this.recurringJobs,
      job: (name) => this.definedJob(name),
      decodeMeta: (meta) => this.codec.decodeValue(meta) as TransactionMeta,
      finishedHour: () => this.runMetrics.finishedHour(),
      runJob: (run) => this.runJob(run),
      runJobInGroup: (run, tx) => this.runJobInGroup(run, tx),
      jobSucceeded: (run, transactionAttempt, durationMs) => this.jobSucceeded(run, transactionAttempt, durationMs),
      scheduledIn: (tx) => this.inserts.count(tx),
      reportFailure: (run, outcome) => this.reportFailure(run, outcome),
      register: (worker) => {
        this.localWorkers.add(worker);
        return async () => {
          this.localWorkers.delete(worker);
          if (this.localWorkers.size > 0) return;
          quotas.close(); // the connection MySQL's queue locks are taken on, if open
          await this.wakeUp.close();
        };
      },
      wakeAddress: () => this.wakeUp.open(),
    };
  }

  /** Creates or upgrades the scheduler's tables; idempotent, safe from several processes at once. */
  async migrate(): Promise<void> {
    await migrate(this.manager, this.store.tables);
  }

  /** The same schema as a knex migration source: `knex.migrate.latest({ migrationSource: scheduler.migrationSource() })`. */
  migrationSource(): Knex.MigrationSource<unknown> {
    return migrationSource(this.store.tables);
  }

  /** Registers `fn` as the job called `name`, with default options for its schedules. */
  override define<A extends any[]>(name: string, fn: JobFunction<A>, options: JobOptions = {}): this {
    super.define(name, fn);
    if (options.dedupeKey !== undefined) throw new TypeError(`define('${name}'): dedupeKey is given per schedule, with with({ dedupeKey })`);
    if (options.stopOnFailure !== undefined) throw new TypeError(`define('${name}'): stopOnFailure is given to a serial batch, with with({ stopOnFailure }).serial()`);
    this.newRows.defaults.set(name, checkJobOptions(this, options, `define('${name}')`));
    return this;
  }

  /** Schedules `job` to start once the current transaction commits; returns the id at once. */
  schedule(job: string | JobFunction, ...args: unknown[]): string {
    return this.with({}).schedule(job, ...args);
  }

  /**
   * Schedules a serial batch: its steps run one after another, each in its own
   * transaction, in the order given; the next becomes due in the transaction
   * that records the previous one's outcome. Returns the batch's id at once.
   */
  serial(...steps: StepSpec[]): string {
    return this.with({}).serial(...steps);
  }

  /** Schedules a parallel batch: every step due at once; it ends in the transaction that records its last step. */
  parallel(...steps: StepSpec[]): string {
    return this.with({}).parallel(...steps);
  }

  /** Schedules with options; with a `dedupeKey`, `schedule()` resolves to the id (the owner's first one's while it is pending). */
  with(options: JobOptions & { dedupeKey: string }): DedupedScheduling;
  with(options: JobOptions): Scheduling;
  with(options: JobOptions): Scheduling | DedupedScheduling {
    checkJobOptions(this, options, 'with()');
    if (options.dedupeKey !== undefined) {
      return {
        schedule: (job, ...args) => {
          checkJobOnlyOptions(options);
          const tx = this.schedulingTransaction();
          return this.inserts.insertDeduped(tx, this.newJob(tx, options, job, args));
        },
      };
    }
    return {
      schedule: (job, ...args) => {
        checkJobOnlyOptions(options);
        const tx = this.schedulingTransaction();
        const row = this.newJob(tx, options, job, args);
        this.inserts.add(tx, [row]);
        return row.id;
      },
      serial: (...steps) => this.scheduleBatch(options, 'serial', steps),
      parallel: (...steps) => this.scheduleBatch(options, 'parallel', steps),
    };
  }

  /**
   * What became of schedule `id`. A done or failed result fetched inside a
   * transaction is deleted right after that transaction commits (unless
   * `consume: false`).
   */
  async getResult(id: string, options: GetResultOptions = {}): Promise<ScheduleResult> {
    if (!isScheduleId(id)) return { state: 'unknown' };
    const tx = this.manager.current;
    const unflushed = this.inserts.find(tx, id);
    if (unflushed) return visibleTo({ user: unflushed.owner ?? undefined }, options) ? { state: 'pending' } : { state: 'unknown' };
    // Running here, with SQLite: answer without a query (the job's transaction may hold the only
    // connection). A server is always asked: it knows of a commit before this process does.
    const local = this.manager.dialect.singleWriter ? this.localRuns.live(id) : undefined;
    if (local) {
      if (!visibleTo({ user: local.owner ?? undefined }, options)) return { state: 'unknown' };
      return local.progress ? { state: 'pending', progress: local.progress } : { state: 'pending' };
    }
    const db = tx?.db ?? this.manager.knex;
    const viewer = options.visibleTo === undefined || options.visibleTo === null ? options.visibleTo : String(options.visibleTo);
    // Asked through the transaction's connection when it holds one: the pool may have no other.
    const attempt = tx as TransactionAttempt | undefined;
    const cluster = await clusterOf(this.manager.knex, this.manager.dialect, attempt?.began ? (sql) => attempt.db.raw(sql) : undefined);
    // On a node of a cluster, a job scheduled through another node a moment ago is seen once this node has applied its
    // commit: a read outside a transaction waits for that, and so does the BEGIN of a transaction that has not begun (a
    // read inside an open transaction never waits: it sees what the transaction began with).
    if (cluster && attempt) attempt.beginCausally();
    const status = await this.store.status(db, id, viewer, attempt ? undefined : cluster);
    if (!status || (status.expiresAt !== null && status.expiresAt <= this.manager.clock.now())) return { state: 'unknown' };
    // The query checked the owner already; checked again here, the same way as for jobs not yet written, so that
    // a table whose owner column still ignores case (before migration 2) cannot widen what a caller sees.
    if (!visibleTo({ user: status.owner ?? undefined }, options)) return { state: 'unknown' };
    if (status.state === 'waiting' || status.state === 'pending' || status.state === 'running') {
      return status.progress ? { state: 'pending', progress: status.progress } : { state: 'pending' };
    }
    // Only now, for whoever may see it, the result or error itself.
    const outcome = await this.store.outcome(db, id);
    if (!outcome) return { state: 'unknown' }; // fetched and deleted by another transaction, or expired, meanwhile
    if (tx && options.consume !== false && this.retention[outcome.state] !== null) tx.afterCommit((ok) => ok && this.consume(id, outcome.state));
    return outcome.state === 'done'
      ? { state: 'done', value: this.codec.decodeValue(outcome.result!) }
      : { state: 'failed', error: JSON.parse(outcome.error!) as StoredError };
  }

  /**
   * Deletes schedule `id`: a job that has not started never will; a running
   * one is signalled, and its writes roll back (its completion is fenced on its
   * claim, which is gone). A batch goes with its steps that have not started; a
   * step of a batch fails instead (JobCancelledError), so its batch goes on.
   * Inside a transaction, that happens when it commits.
   */
  async remove(id: string): Promise<void> {
    if (!isScheduleId(id)) return;
    const tx = this.manager.current;
    this.inserts.drop(tx, id);
    const cancel = () => this.localRuns.cancel(id);
    if (!tx) cancel(); // first: with SQLite, the job's transaction may hold the lock the DELETE needs
    const db = tx?.db ?? this.manager.knex;
    await this.outcomes.remove(db, id);
    if (tx) tx.afterCommit((ok) => ok && cancel());
  }

  /** Counts by state and the oldest due job's age, for monitoring. */
  async stats(): Promise<PersistentSchedulerStats> {
    const { counts, oldestDueMs } = await stateCounts(this.store, this.manager.knex, this.manager.clock.now());
    return { ...counts, oldestDueMs };
  }

  /** @internal */
  protected queueGauges(): Promise<Record<string, QueueGauges>> {
    return queueGauges(this.store, this.manager.knex, this.manager.clock.now());
  }

  /** A worker that claims and runs this scheduler's jobs; `start()` it. */
  worker(options: WorkerOptions = {}): Worker {
    return new Worker(this.host, options);
  }

  /**
   * Declares a recurring job: at each instant of `options.cron`, the defined job
   * `name` runs with `args`, once across all processes and hosts. Declare it at
   * start-up in every process that runs workers, after `define(name)`. See docs/recurring.md.
   */
  recurring(key: string, options: RecurringOptions, name: string, ...args: unknown[]): this {
    this.recurringJobs.declare(key, options, name, args);
    return this;
  }

  private newJob(tx: Transaction, options: JobOptions, job: string | JobFunction, args: unknown[]): NewJob {
    const name = typeof job === 'function' ? this.nameOf(job) : job;
    if (name === undefined) {
      throw new TypeError('PersistentTransactionalScheduler runs jobs by name: define(name, fn) the function and schedule its name');
    }
    this.definedJob(name); // unknown names fail here, in the request
    return this.newRows.job(name, this.codec.encodeArguments(name, args), options, originOf(this.codec, tx, name));
  }

  /** Schedules a batch: a row for it (waiting until its steps end) and one per step, due in turn. */
  private scheduleBatch(options: JobOptions, kind: 'serial' | 'parallel', steps: StepSpec[]): string {
    checkBatchOptions(kind, options);
    const tx = this.schedulingTransaction();
    const batch = new StoredBatchSpec(kind, checkSteps(this, steps, `${kind}(...steps)`));
    const rows = this.newRows.batch(batch, options, originOf(this.codec, tx, kind), true);
    this.inserts.add(tx, rows);
    return rows[0]!.id;
  }

  /** Wakes this process's workers that serve `queue`, or all of them. */
  private wake(queue?: string): void {
    for (const worker of this.localWorkers) if (queue === undefined || worker.queues.includes(queue)) worker.wake();
  }

  /** Deletes a fetched result after the fetching transaction committed, retrying a few times; else it expires. */
  private async consume(id: string, state: 'done' | 'failed'): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.store.consume(this.manager.knex, id, state, this.retention);
        return;
      } catch (err) {
        if (attempt === 3) {
          this.logger.warn({ err, id }, `could not delete the fetched result of ${id}; it is deleted when it expires`);
          return;
        }
        await this.manager.clock.sleep(50 * attempt);
      }
    }
  }
}
