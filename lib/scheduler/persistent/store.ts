/**
 * Every statement the persistent scheduler sends, one function per operation.
 * Times are milliseconds since the epoch from the scheduler's clock, stored as
 * integers, so no database's date handling is involved. Statements that finish
 * or renew a claimed job are fenced on its lease token: they change nothing once
 * another worker has claimed the job.
 */
import type { Knex } from 'knex';
import type { ClusterSupport, Dialect } from '../../dialects/index.js';
import type { Clock, JobProgress, JobState, StoredError } from '../../interfaces.js';
import { fromRow, numOrNull, progressOf, statementsOf, type JobRow, type JobStatus, type NewJob } from './rows.js';
import type { Retention } from './retention.js';
import type { TableNames } from './schema.js';

type Db = Knex | Knex.Transaction;

/** Who asks about a job: trusted code that sees every job (undefined), an anonymous caller who sees jobs without an owner (null), or a user who also sees their own. */
export type Viewer = string | null | undefined;

/** What ends a job's run for good, beside its result or error. */
interface RunEnding {
  now: number;
  /** When the finished row expires; null: kept until acted on. */
  expiresAt: number | null;
  /** Its runs, this one added (run-log.ts). */
  runLog: string;
}

export class JobStore {
  constructor(
    readonly tables: TableNames,
    private readonly dialect: Dialect,
    private readonly clock: Clock,
  ) {}

  /** The jobs table, for the statements of this store and of the counts (job-counts.ts). */
  jobs(db: Db) {
    return db(this.tables.jobs);
  }

  /** Writes new jobs (in the scheduling transaction), in as few INSERTs as the database's limits allow. */
  async insert(db: Db, jobs: readonly NewJob[]): Promise<void> {
    const committedAt = this.clock.now(); // the scheduling transaction writes its rows just before its COMMIT (a dedupe-keyed one at once)
    const rows = jobs.map((j) => ({
      id: j.id,
      name: j.name,
      queue: j.queue,
      state: j.state ?? 'pending',
      priority: j.priority,
      run_at: j.runAt,
      args: j.args,
      meta: j.meta,
      owner: j.owner,
      request_id: j.requestId,
      runs: 0,
      failures: 0,
      max_attempts: j.maxAttempts,
      backoff: j.backoff,
      timeout_ms: j.timeoutMs,
      lease_ms: j.leaseMs,
      dedupe_key: j.dedupeKey,
      anonymous_dedupe_key: j.owner === null ? j.dedupeKey : null,
      created_at: j.createdAt,
      committed_at: committedAt,
      seq: j.seq,
      kind: j.kind ?? 'job',
      parent_id: j.parentId ?? null,
      step_index: j.stepIndex ?? null,
      steps_total: j.stepsTotal ?? null,
      steps_done: j.stepsTotal === undefined || j.stepsTotal === null ? null : 0,
      stop_on_failure: j.stopOnFailure ?? false,
      callbacks: j.callbacks ?? null,
      concurrency_key: j.concurrencyKey ?? null,
      recurring_key: j.recurringKey ?? null,
      recurring_instant: j.recurringInstant ?? null,
    }));
    for (const statement of statementsOf(rows, this.dialect.insertLimits)) await this.jobs(db).insert(statement);
  }

  /** The id of `owner`'s pending job holding `key`, if any: the latest committed row, not the transaction's snapshot. */
  async pendingWithKey(db: Db, owner: string | null, key: string): Promise<string | undefined> {
    const holder = owner === null ? { anonymous_dedupe_key: key } : { owner, dedupe_key: key };
    const row = await this.dialect.lockingRead(this.jobs(db).where(holder).first('id'));
    return (row as { id?: string } | undefined)?.id;
  }

  /**
   * Due pending jobs of `queue`, locked against other claimers (SKIP LOCKED): `ORDER BY priority, run_at, seq`
   * (submission order), which the claim index follows. None while the queue is paused: the same statement reads
   * the queues table (a subquery, which the locking read does not lock), so a pause holds from the next claim on.
   */
  async duePending(db: Db, queue: string, now: number, limit: number, skip?: { keys: readonly string[]; ids: readonly string[] }): Promise<JobRow[]> {
    const query = this.jobs(db)
      .select('*')
      .where({ state: 'pending', queue })
      .andWhere('run_at', '<=', now)
      .whereNotExists((paused) => paused.select(db.raw('1')).from(this.tables.queues).where({ name: queue, paused: true }))
      .orderBy([{ column: 'priority' }, { column: 'run_at' }, { column: 'seq' }])
      .limit(limit);
    // A queue with a limit per key passes over the jobs of keys that are full, and those it took already.
    if (skip?.keys.length) query.andWhere((q) => q.whereNull('concurrency_key').orWhereNotIn('concurrency_key', skip.keys));
    if (skip?.ids.length) query.whereNotIn('id', skip.ids);
    return (await this.dialect.lockForClaim(query)).map(fromRow);
  }

  /** Running jobs of `queue` (leases run out or not: each is running until taken over), by concurrency key (null: without one). */
  async runningByKey(db: Db, queue: string): Promise<Map<string | null, number>> {
    const rows = (await this.jobs(db).select('concurrency_key').count({ n: '*' }).where({ state: 'running', queue }).groupBy('concurrency_key')) as {
      concurrency_key: string | null;
      n: unknown;
    }[];
    return new Map(rows.map((row) => [row.concurrency_key, Number(row.n)]));
  }

  /** Jobs of `queue` claimed after `since` (by started_at, the last claim of each; in any state). */
  async startedSince(db: Db, queue: string, since: number): Promise<number> {
    const row = await this.jobs(db).where({ queue }).andWhere('started_at', '>', since).count({ n: '*' }).first();
    return Number((row as { n?: unknown } | undefined)?.n ?? 0);
  }

  /**
   * Running jobs whose lease ran out (their worker died or stalled), locked against other claimers; not those of
   * `running` (jobs running in this process: their worker is alive even if a heartbeat is late).
   */
  async expiredLeases(db: Db, now: number, limit: number, running: readonly string[]): Promise<JobRow[]> {
    const query = this.jobs(db)
      .select('*')
      .where({ state: 'running' })
      .andWhere('locked_until', '<', now)
      .orderBy('locked_until')
      .limit(limit);
    if (running.length > 0) query.whereNotIn('id', running);
    return (await this.dialect.lockForClaim(query)).map(fromRow);
  }

  /**
   * The state of job `id` if `viewer` may see it. The owner check is part of the
   * WHERE clause, and no large column is read, so a job of someone else's costs
   * what an unknown id does.
   */
  async status(db: Db, id: string, viewer: Viewer, cluster?: ClusterSupport): Promise<JobStatus | undefined> {
    const query = this.jobs(db).where({ id });
    if (viewer !== undefined) query.andWhere((q) => (viewer === null ? q.whereNull('owner') : q.whereNull('owner').orWhere({ owner: viewer })));
    query.first('owner', 'state', 'expires_at', 'progress_fraction', 'progress_message');
    // On a node of a cluster, a job scheduled through another node is seen once this node has applied its commit.
    const row = cluster ? (await cluster.causalRows<Record<string, unknown>>(db, query))[0] : ((await query) as unknown as Record<string, unknown> | undefined);
    if (!row) return undefined;
    return { owner: (row.owner as string | null) ?? null, state: row.state as JobState, expiresAt: numOrNull(row.expires_at), ...progressOf(row) };
  }

  /** What a finished job left: its stored result or error; undefined once the row is gone or not finished. */
  async outcome(db: Db, id: string): Promise<{ state: 'done' | 'failed'; result: string | null; error: string | null } | undefined> {
    return this.jobs(db).where({ id }).whereIn('state', ['done', 'failed']).first('state', 'result', 'error');
  }

  /** Marks claimed jobs running under a new lease, started now; a pending job gives up its dedupe key. */
  async claim(db: Db, rows: readonly JobRow[], lease: { token: string; worker: string; now: number }): Promise<void> {
    // One UPDATE per lease length (usually one): the expiry is computed here, not by SQL arithmetic.
    const byLease = new Map<number, JobRow[]>();
    for (const row of rows) byLease.set(row.leaseMs, [...(byLease.get(row.leaseMs) ?? []), row]);
    for (const [leaseMs, group] of byLease) {
      await this.jobs(db)
        .whereIn('id', group.map((row) => row.id))
        .update({
          state: 'running',
          lease: lease.token,
          locked_by: lease.worker,
          locked_until: lease.now + leaseMs,
          started_at: lease.now, // for rate limits
          dedupe_key: null,
          anonymous_dedupe_key: null,
          runs: db.raw('runs + 1'),
        });
    }
  }

  /** Extends a lease; 0 when the lease is no longer this claim's (taken over, or the job was removed). */
  renew(db: Db, id: string, token: string, until: number): Promise<number> {
    return this.jobs(db).where({ id, lease: token, state: 'running' }).update({ locked_until: until });
  }

  progress(db: Db, id: string, token: string, progress: JobProgress): Promise<number> {
    return this.jobs(db)
      .where({ id, lease: token })
      .update({ progress_fraction: progress.fraction, progress_message: progress.message ?? null });
  }

  /** Records the result, in the job's own transaction; 0 when the lease is lost (the job must roll back). */
  complete(db: Db, id: string, token: string, end: RunEnding & { result: string }): Promise<number> {
    return this.jobs(db)
      .where({ id, lease: token, state: 'running' })
      .update({
        state: 'done',
        result: end.result,
        finished_at: end.now,
        expires_at: end.expiresAt,
        run_log: end.runLog,
        progress_fraction: 1,
        lease: null,
        locked_by: null,
        locked_until: null,
      });
  }

  /**
   * Records the results of jobs claimed under `token` that ran in one transaction (a group, see job-group.ts), in one
   * statement; the number of rows changed is less than `endings` when one of them is no longer this claim's.
   */
  completeAll(db: Db, token: string, endings: readonly { id: string; result: string; runLog: string }[], end: Omit<RunEnding, 'runLog'>): Promise<number> {
    const byId = (column: 'result' | 'runLog') => db.raw(`CASE ?? ${endings.map(() => 'WHEN ? THEN ?').join(' ')} END`, ['id', ...endings.flatMap((e) => [e.id, e[column]])]);
    return this.jobs(db)
      .whereIn('id', endings.map((e) => e.id))
      .where({ lease: token, state: 'running' })
      .update({
        state: 'done',
        result: byId('result'),
        finished_at: end.now,
        expires_at: end.expiresAt,
        run_log: byId('runLog'),
        progress_fraction: 1,
        lease: null,
        locked_by: null,
        locked_until: null,
      });
  }

  /** Hands jobs `ids` claimed under `token` back to the queue before they ran: pending again, their claim's run not counted. */
  release(db: Db, ids: readonly string[], token: string): Promise<number> {
    return this.jobs(db)
      .whereIn('id', ids)
      .where({ lease: token, state: 'running' })
      .update({ state: 'pending', lease: null, locked_by: null, locked_until: null, runs: db.raw('runs - 1') });
  }

  /** Of jobs `ids`, those still claimed under `token` (a group that did not commit: which of its jobs are still ours to run). */
  async stillClaimed(db: Db, ids: readonly string[], token: string): Promise<Set<string>> {
    const rows = (await this.jobs(db).whereIn('id', ids).where({ lease: token, state: 'running' }).select('id')) as { id: string }[];
    return new Set(rows.map((row) => row.id));
  }

  /** Extends the leases of jobs `ids` claimed under `token` (a group's, all at once). */
  renewAll(db: Db, ids: readonly string[], token: string, until: number): Promise<number> {
    return this.jobs(db).whereIn('id', ids).where({ lease: token, state: 'running' }).update({ locked_until: until });
  }

  /** Records a failure for good; fenced like complete. */
  fail(db: Db, id: string, token: string, end: RunEnding & { error: StoredError; failures: number }): Promise<number> {
    return this.jobs(db)
      .where({ id, lease: token, state: 'running' })
      .update({
        state: 'failed',
        error: JSON.stringify(end.error),
        failures: end.failures,
        finished_at: end.now,
        expires_at: end.expiresAt,
        run_log: end.runLog,
        lease: null,
        locked_by: null,
        locked_until: null,
      });
  }

  /** Puts a job back in the queue to run at `runAt` (a retry after a failure, or a job handed back at shutdown). */
  requeue(db: Db, id: string, token: string, runAt: number, changes: { failures?: number; runs?: number; error?: StoredError; runLog: string }): Promise<number> {
    return this.jobs(db)
      .where({ id, lease: token, state: 'running' })
      .update({
        state: 'pending',
        run_at: runAt,
        run_log: changes.runLog,
        lease: null,
        locked_by: null,
        locked_until: null,
        ...(changes.failures === undefined ? {} : { failures: changes.failures }),
        ...(changes.runs === undefined ? {} : { runs: changes.runs }),
        ...(changes.error === undefined ? {} : { error: JSON.stringify(changes.error) }),
      });
  }

  // ---- batches ------------------------------------------------------------

  /** Counts one more finished step of batch `id` (locking its row until the transaction ends); its row after that, or undefined once removed. */
  async stepFinished(db: Db, id: string): Promise<JobRow | undefined> {
    const changed = await this.jobs(db).where({ id, state: 'waiting' }).increment('steps_done', 1);
    if (changed === 0) return undefined;
    const row = fromRow(await this.jobs(db).where({ id }).first());
    await this.jobs(db).where({ id }).update({ progress_fraction: row.stepsDone! / row.stepsTotal! });
    return row;
  }

  // The reads below lock what they read, so they see the latest committed rows rather than the
  // transaction's snapshot (MySQL's REPEATABLE READ): a step another worker just finished is finished.

  /** Batch `id`'s step at `index`: its id and kind, while it waits for its turn. */
  async waitingStep(db: Db, batchId: string, index: number): Promise<{ id: string; kind: string; steps_total: number | null } | undefined> {
    return this.dialect.lockingRead(this.jobs(db).where({ parent_id: batchId, step_index: index, state: 'waiting' }).first('id', 'kind', 'steps_total'));
  }

  /** Makes a waiting job due now. */
  makeDue(db: Db, id: string, now: number): Promise<number> {
    return this.jobs(db).where({ id, state: 'waiting' }).update({ state: 'pending', run_at: now });
  }

  /** The steps of batch `id` in order, with their outcomes. */
  steps(db: Db, batchId: string): Promise<{ id: string; kind: string; step_index: number; state: JobState; result: string | null; error: string | null }[]> {
    return this.dialect.lockingRead(this.jobs(db).where({ parent_id: batchId }).orderBy('step_index').select('id', 'kind', 'step_index', 'state', 'result', 'error'));
  }

  /**
   * Records a batch's outcome: `done` with its steps' outcomes, and the error its
   * failure callback got when a step failed.
   */
  async finishBatch(db: Db, id: string, result: string, error: StoredError | null, now: number, expiresAt: number | null): Promise<void> {
    const stored = error === null ? null : JSON.stringify(error);
    await this.jobs(db).where({ id }).update({ state: 'done', result, error: stored, finished_at: now, expires_at: expiresAt, progress_fraction: 1 });
  }

  /** Makes job `id` expire at `expiresAt`. */
  expire(db: Db, id: string, expiresAt: number): Promise<number> {
    return this.jobs(db).where({ id }).update({ expires_at: expiresAt });
  }

  /** Makes the steps of batches `ids` expire at `expiresAt`; returns the ids of those steps that are batches themselves. */
  async expireSteps(db: Db, ids: readonly string[], expiresAt: number): Promise<string[]> {
    await this.jobs(db).whereIn('parent_id', ids).update({ expires_at: expiresAt });
    return (await this.jobs(db).whereIn('parent_id', ids).whereNot({ kind: 'job' }).select('id')).map((r: { id: string }) => r.id);
  }

  /** Ids of batch `id`'s steps that have not started (waiting or pending), from step `from` on. */
  async unstartedSteps(db: Db, batchId: string, from = 0): Promise<{ id: string; kind: string }[]> {
    return this.dialect.lockingRead(
      this.jobs(db).where({ parent_id: batchId }).andWhere('step_index', '>=', from).whereIn('state', ['waiting', 'pending']).select('id', 'kind'),
    );
  }

  /** Job `id`'s row, if it exists. */
  async row(db: Db, id: string): Promise<JobRow | undefined> {
    const row = await this.jobs(db).where({ id }).first();
    return row ? fromRow(row) : undefined;
  }

  /** Ends a step that has not finished as failed with `error` (a removed step): 0 once it had finished. */
  cancelStep(db: Db, id: string, error: StoredError, now: number): Promise<number> {
    return this.jobs(db)
      .where({ id })
      .whereIn('state', ['waiting', 'pending', 'running'])
      .update({ state: 'failed', error: JSON.stringify(error), finished_at: now, lease: null, locked_by: null, locked_until: null });
  }

  /** Deletes jobs by id, in any state (a removed job, with the steps of a removed batch that never started). */
  removeAll(db: Db, ids: readonly string[]): Promise<number> {
    return ids.length === 0 ? Promise.resolve(0) : this.jobs(db).whereIn('id', ids).delete();
  }

  /**
   * Deletes a fetched result (after the transaction that fetched it committed),
   * or, when its state has a retention, makes the row expire when that ends.
   */
  async consume(db: Db, id: string, state: 'done' | 'failed', retention: Retention): Promise<void> {
    // A step's outcome belongs to its batch's value: it goes when the batch's rows expire.
    const fetched = () => this.jobs(db).where({ id, state }).whereNull('parent_id');
    const keep = retention[state];
    if (keep === 0) await fetched().delete();
    else if (keep !== null) await fetched().update({ expires_at: db.raw('?? + ?', ['finished_at', keep]) });
  }

  /** Deletes up to `limit` finished rows past their expiry; returns how many. */
  async sweep(db: Db, now: number, limit: number): Promise<number> {
    const ids = (await this.jobs(db).select('id').where('expires_at', '<=', now).limit(limit)).map((r: { id: string }) => r.id);
    return ids.length === 0 ? 0 : this.jobs(db).whereIn('id', ids).delete();
  }


}
