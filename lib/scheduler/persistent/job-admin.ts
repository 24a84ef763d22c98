/**
 * What an operator does (`scheduler.admin`): find jobs by state, queue, name,
 * owner and creation time, page by page; look at one, its arguments with fields
 * redacted; retry failed ones, run delayed ones now, remove them, one by one or
 * all that match a filter; pause and resume queues; list the workers. Trusted
 * code only: no owner rule applies here (the polling route has its own).
 */
import type { Knex } from 'knex';
import type { FinishedPerMinute, RecurringStatus, JobAdminFilter, JobDetail, JobPage, JobState, JobSummary, QueueState, StoredError, TransactionMeta, WorkerInfo } from '../../interfaces.js';
import type { TransactionManager } from '../../transactions/manager.js';
import { lineageOf } from '../lineage.js';
import { QUEUE } from './job-options.js';
import { REQUEST_ID } from '../../support/validate.js';
import { num, numOrNull, progressOf } from './rows.js';
import type { TableNames } from './schema.js';
import { changeQueue, queueStates } from './queue-control.js';
import { finishedPerMinute, registeredWorkers } from './worker-registry.js';
import { runsOf } from './run-log.js';

/** What the admin needs of its scheduler. @internal */
export interface AdminHost {
  manager: TransactionManager;
  tables: TableNames;
  decodeArguments(text: string): unknown[];
  decodeValue(text: string): unknown;
  /** The recurring jobs this process declared, with their last and next instants. */
  recurring(): Promise<RecurringStatus[]>;
  /** Wakes this process's workers: jobs became due. */
  wake(): void;
}

const STATES: readonly JobState[] = ['waiting', 'pending', 'running', 'done', 'failed'];
const SUMMARY = ['id', 'name', 'queue', 'state', 'owner', 'meta', 'created_at', 'committed_at', 'run_at', 'started_at', 'finished_at', 'runs', 'failures', 'progress_fraction', 'progress_message'];
const CURSOR = /^(\d{1,16}):([0-9a-z]{1,32})$/; // ids are 32 hex; any short token is a safe bound

function checkFilter(filter: JobAdminFilter, what: string): void {
  if (typeof filter !== 'object' || filter === null) throw new TypeError(`${what}: the filter must be an object, got ${String(filter)}`);
  const { state, queue, name, owner, requestId, since, until } = filter;
  if (state !== undefined && !STATES.includes(state)) throw new TypeError(`${what}: state must be one of ${STATES.join(', ')}, got ${JSON.stringify(state)}`);
  if (queue !== undefined && (typeof queue !== 'string' || !QUEUE.test(queue))) throw new TypeError(`${what}: queue must be a queue name, got ${JSON.stringify(queue)}`);
  if (requestId !== undefined && (typeof requestId !== 'string' || !REQUEST_ID.test(requestId))) {
    throw new TypeError(`${what}: requestId must be a request id (1-128 letters, digits and ._:@/+=-), got ${JSON.stringify(requestId)}`);
  }
  for (const [key, value] of Object.entries({ name, owner })) {
    if (value !== undefined && (typeof value !== 'string' || value.length > 191)) throw new TypeError(`${what}: ${key} must be a string of at most 191 characters`);
  }
  for (const [key, value] of Object.entries({ since, until })) {
    if (value !== undefined && !Number.isSafeInteger(value)) throw new TypeError(`${what}: ${key} must be ms since the epoch (an integer), got ${String(value)}`);
  }
}

/**
 * Replaces the value of every field named in `redact` (lower case: names match
 * regardless of case), at any depth of arrays and plain objects, with
 * "[redacted]"; other values stay (a BigInt as its text, for JSON).
 */
function redacted(value: unknown, redact: ReadonlySet<string>): unknown {
  if (typeof value === 'bigint') return value.toString();
  if (Array.isArray(value)) return value.map((item) => redacted(item, redact));
  if (typeof value !== 'object' || value === null) return value;
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return value; // a Date, a Buffer: as they are
  return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, redact.has(key.toLowerCase()) ? '[redacted]' : redacted(item, redact)]));
}

export class JobAdmin {
  /** @internal */
  constructor(private readonly host: AdminHost) {}

  private jobs(db: Knex | Knex.Transaction = this.host.manager.knex) {
    return db(this.host.tables.jobs);
  }

  /**
   * Runs an action's statement in a transaction of its own, retried on a
   * deadlock with the workers' claims (a bulk UPDATE or DELETE on MySQL locks
   * index ranges they insert into). Outside the caller's transaction: an action
   * holds even if the caller's work rolls back. READ COMMITTED, as the claims:
   * no gap locks.
   */
  private act<T>(name: string, statement: (db: Knex.Transaction) => Promise<T>): Promise<T> {
    const { manager } = this.host;
    return manager.outside(() => manager.run((tx) => statement(tx.db), { name, isolationLevel: 'read committed', escalate: false }));
  }

  private filtered(db: Knex | Knex.Transaction, filter: JobAdminFilter, what: string) {
    checkFilter(filter, what);
    const query = this.jobs(db);
    const { state, queue, name, owner, requestId, since, until } = filter;
    if (state !== undefined) query.where({ state });
    if (queue !== undefined) query.where({ queue });
    if (name !== undefined) query.where({ name });
    if (owner !== undefined) query.where({ owner });
    if (requestId !== undefined) query.where({ request_id: requestId });
    if (since !== undefined) query.where('created_at', '>=', since);
    if (until !== undefined) query.where('created_at', '<', until);
    return query;
  }

  private summary(row: Record<string, unknown>): JobSummary {
    const meta = this.host.decodeValue(String(row.meta)) as TransactionMeta;
    const requestId = (meta.extension as { requestId?: unknown } | undefined)?.requestId;
    return {
      id: String(row.id),
      name: String(row.name),
      queue: String(row.queue),
      state: row.state as JobState,
      owner: (row.owner as string | null) ?? null,
      note: typeof meta.note === 'string' ? meta.note : null,
      requestId: typeof requestId === 'string' ? requestId : null,
      createdAt: num(row.created_at),
      committedAt: numOrNull(row.committed_at),
      runAt: num(row.run_at),
      startedAt: numOrNull(row.started_at),
      finishedAt: numOrNull(row.finished_at),
      runs: num(row.runs),
      failures: num(row.failures),
      ...progressOf(row),
    };
  }

  /** Jobs matching `filter`, newest first, `limit` (1-500, default 50) at a time; `page.next` continues. */
  async find(filter: JobAdminFilter = {}, page: { limit?: number; after?: string } = {}): Promise<JobPage> {
    const limit = page.limit ?? 50;
    if (!Number.isInteger(limit) || limit < 1 || limit > 500) throw new TypeError(`admin.find(filter, { limit }): limit must be an integer from 1 to 500, got ${String(limit)}`);
    const query = this.filtered(this.host.manager.knex, filter, 'admin.find(filter)').select(SUMMARY);
    if (page.after !== undefined) {
      const cursor = typeof page.after === 'string' ? CURSOR.exec(page.after) : null;
      if (!cursor) throw new TypeError('admin.find(filter, { after }): after must be the `next` of an earlier page');
      const [, at, id] = cursor;
      query.where((q) => q.where('created_at', '<', Number(at)).orWhere((same) => same.where('created_at', Number(at)).andWhere('id', '<', id!)));
    }
    const rows = (await query.orderBy([{ column: 'created_at', order: 'desc' }, { column: 'id', order: 'desc' }]).limit(limit + 1)) as Record<string, unknown>[];
    const jobs = rows.slice(0, limit).map((row) => this.summary(row));
    const last = jobs[jobs.length - 1];
    return rows.length > limit && last ? { jobs, next: `${last.createdAt}:${last.id}` } : { jobs };
  }

  /** One job, whole: its arguments (fields named in `redact` replaced), metadata, result or error, lease. */
  async get(id: string, options: { redact?: readonly string[] } = {}): Promise<JobDetail | undefined> {
    if (typeof id !== 'string' || !/^[0-9a-f]{32}$/.test(id)) return undefined;
    const row = (await this.jobs().where({ id }).first()) as Record<string, unknown> | undefined;
    if (!row) return undefined;
    const redact = new Set((options.redact ?? []).map((name) => name.toLowerCase()));
    const meta = this.host.decodeValue(String(row.meta)) as TransactionMeta;
    let args: unknown[];
    try {
      args = this.host.decodeArguments(String(row.args));
    } catch {
      args = ['[arguments that no longer decode]'];
    }
    const summary = this.summary(row);
    const steps = row.kind === 'job' || row.kind === undefined ? undefined : await this.stepsOf(summary.id);
    const lineage = lineageOf(String(row.meta));
    return {
      ...summary,
      ...(redact.has('note') && summary.note !== null ? { note: '[redacted]' } : {}),
      args: redacted(args, redact) as unknown[],
      meta: redacted(meta, redact) as TransactionMeta,
      priority: num(row.priority),
      maxAttempts: num(row.max_attempts),
      lockedBy: (row.locked_by as string | null) ?? null,
      lockedUntil: numOrNull(row.locked_until),
      parentId: (row.parent_id as string | null) ?? null,
      kind: ((row.kind as JobDetail['kind'] | undefined) ?? 'job'),
      committedAttempt: lineage?.attempt ?? null,
      traceparent: lineage?.traceparent ?? null,
      runLog: runsOf((row.run_log as string | null) ?? null),
      ...(steps ? { steps } : {}),
      ...(row.state === 'done' && row.result != null ? { result: redacted(this.host.decodeValue(String(row.result)), redact) } : {}),
      ...(row.state === 'failed' && row.error != null ? { error: JSON.parse(String(row.error)) as StoredError } : {}),
    };
  }

  private async stepsOf(batchId: string): Promise<JobSummary[]> {
    const rows = (await this.jobs().where({ parent_id: batchId }).orderBy('step_index').select(SUMMARY)) as Record<string, unknown>[];
    return rows.map((step) => this.summary(step));
  }

  /** The recurring jobs this process declared (as every process declares them), with the last instant fired for and the next. */
  recurring(): Promise<RecurringStatus[]> {
    return this.host.recurring();
  }

  /** Runs failed jobs again (from their first try, due now); returns how many. */
  async retry(id: string): Promise<number> {
    return this.retryWhere({}, 'admin.retry(id)', id);
  }

  /** Runs every failed job matching `filter` again; returns how many. */
  async retryAll(filter: JobAdminFilter = {}): Promise<number> {
    return this.retryWhere(filter, 'admin.retryAll(filter)');
  }

  private async retryWhere(filter: JobAdminFilter, what: string, id?: string): Promise<number> {
    const changed = await this.act(what, (db) => {
      const now = this.host.manager.clock.now();
      const query = this.filtered(db, filter, what).where({ state: 'failed' }).whereNull('parent_id');
      if (id !== undefined) query.where({ id });
      return query.update({ state: 'pending', run_at: now, runs: 0, failures: 0, error: null, finished_at: null, expires_at: null, lease: null, locked_by: null, locked_until: null });
    });
    if (changed > 0) this.host.wake();
    return changed;
  }

  /** Makes a pending job that waits for its `runAt` due now; returns 1, or 0 when it is not such a job. */
  async runNow(id: string): Promise<number> {
    const changed = await this.act('admin.runNow(id)', (db) => {
      const now = this.host.manager.clock.now();
      return this.jobs(db).where({ id, state: 'pending' }).andWhere('run_at', '>', now).update({ run_at: now });
    });
    if (changed > 0) this.host.wake();
    return changed;
  }

  /**
   * Deletes the jobs matching `filter` that are not running (use
   * `scheduler.remove(id)` to cancel a running one), and neither batches nor
   * their steps (`scheduler.remove(batchId)` removes a batch with its steps);
   * returns how many.
   */
  async removeAll(filter: JobAdminFilter = {}): Promise<number> {
    return this.act('admin.removeAll(filter)', (db) => this.filtered(db, filter, 'admin.removeAll(filter)').whereNot({ state: 'running' }).whereNull('parent_id').where({ kind: 'job' }).delete());
  }

  /**
   * Pauses `queue` in every process: claims that start after this resolves take
   * none of its jobs (running ones go on); they stay pending until
   * `resumeQueue`. `by` notes who paused it.
   */
  pauseQueue(queue: string, options: { by?: string } = {}): Promise<void> {
    return changeQueue(this.host.manager, this.host.tables, queue, true, options.by);
  }

  /** Resumes a paused queue: workers claim its due jobs again at their next claim. */
  resumeQueue(queue: string, options: { by?: string } = {}): Promise<void> {
    return changeQueue(this.host.manager, this.host.tables, queue, false, options.by);
  }

  /** The queues that were ever paused or resumed, with their state. */
  queueStates(): Promise<QueueState[]> {
    return queueStates(this.host.manager.knex, this.host.tables);
  }

  /**
   * Jobs finished (done, failed for good) per minute in the last hour, by the
   * workers in the registry: each process's counts as of its last heartbeat.
   */
  finishedLastHour(): Promise<FinishedPerMinute> {
    return finishedPerMinute(this.host.manager.knex, this.host.tables, this.host.manager.clock.now());
  }

  /** The workers in the registry (every process's), with their last heartbeat. */
  workers(): Promise<WorkerInfo[]> {
    return registeredWorkers(this.host.manager.knex, this.host.tables, this.host.manager.clock.now());
  }
}
