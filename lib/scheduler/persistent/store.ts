/**
 * Every statement the persistent scheduler sends, one function per operation.
 * Times are milliseconds since the epoch from the scheduler's clock, stored as
 * integers, so no database's date handling is involved. Statements that finish
 * or renew a claimed job are fenced on its lease token: they change nothing once
 * another worker has claimed the job.
 */
import type { Knex } from 'knex';
import type { Dialect, InsertLimits } from '../../dialects/index.js';
import type { JobProgress, JobState, StoredError } from '../../interfaces.js';
import type { TableNames } from './schema.js';

type Db = Knex | Knex.Transaction;

/** A jobs row as the scheduler uses it (numbers parsed: PostgreSQL returns BIGINT as text). */
export interface JobRow {
  id: string;
  name: string;
  queue: string;
  state: JobState;
  priority: number;
  runAt: number;
  args: string;
  meta: string;
  owner: string | null;
  runs: number;
  failures: number;
  maxAttempts: number;
  backoff: string;
  timeoutMs: number | null;
  leaseMs: number;
  lease: string | null;
  lockedBy: string | null;
  lockedUntil: number | null;
  progress?: JobProgress;
  result: string | null;
  error: string | null;
  finishedAt: number | null;
  expiresAt: number | null;
}

/** What schedule() writes for a new job. */
export interface NewJob {
  id: string;
  name: string;
  queue: string;
  priority: number;
  runAt: number;
  args: string;
  meta: string;
  owner: string | null;
  maxAttempts: number;
  backoff: string;
  timeoutMs: number | null;
  leaseMs: number;
  dedupeKey: string | null;
  createdAt: number;
}

/** What getResult reads of a job before it knows the caller may see its outcome: no arguments, no result. */
export interface JobStatus {
  owner: string | null;
  state: JobState;
  expiresAt: number | null;
  progress?: JobProgress;
}

/** Who asks about a job: trusted code that sees every job (undefined), an anonymous caller who sees jobs without an owner (null), or a user who also sees their own. */
export type Viewer = string | null | undefined;

const num = (value: unknown): number => Number(value);
const numOrNull = (value: unknown): number | null => (value === null || value === undefined ? null : Number(value));

function progressOf(r: Record<string, unknown>): { progress?: JobProgress } {
  const fraction = numOrNull(r.progress_fraction);
  const message = r.progress_message as string | null;
  if (fraction === null) return {};
  return { progress: message ? { fraction, message } : { fraction } };
}

/**
 * Splits rows into runs that each fit one INSERT within `limits`; a row larger
 * than the byte bound goes alone (the database then judges it).
 */
function statementsOf(rows: readonly Record<string, unknown>[], limits: InsertLimits): Record<string, unknown>[][] {
  const statements: Record<string, unknown>[][] = [];
  let current: Record<string, unknown>[] = [];
  let bytes = 0;
  for (const row of rows) {
    const values = Object.values(row);
    const rowBytes = values.reduce<number>((sum, value) => sum + Buffer.byteLength(String(value)), 0);
    const fits =
      current.length + 1 <= limits.rows && (current.length + 1) * values.length <= limits.bindings && bytes + rowBytes <= limits.bytes;
    if (!fits && current.length > 0) {
      statements.push(current);
      current = [];
      bytes = 0;
    }
    current.push(row);
    bytes += rowBytes;
  }
  if (current.length > 0) statements.push(current);
  return statements;
}

function fromRow(r: Record<string, unknown>): JobRow {
  return {
    id: r.id as string,
    name: r.name as string,
    queue: r.queue as string,
    state: r.state as JobState,
    priority: num(r.priority),
    runAt: num(r.run_at),
    args: r.args as string,
    meta: r.meta as string,
    owner: (r.owner as string | null) ?? null,
    runs: num(r.runs),
    failures: num(r.failures),
    maxAttempts: num(r.max_attempts),
    backoff: r.backoff as string,
    timeoutMs: numOrNull(r.timeout_ms),
    leaseMs: num(r.lease_ms),
    lease: (r.lease as string | null) ?? null,
    lockedBy: (r.locked_by as string | null) ?? null,
    lockedUntil: numOrNull(r.locked_until),
    ...progressOf(r),
    result: (r.result as string | null) ?? null,
    error: (r.error as string | null) ?? null,
    finishedAt: numOrNull(r.finished_at),
    expiresAt: numOrNull(r.expires_at),
  };
}

export class JobStore {
  constructor(
    readonly tables: TableNames,
    private readonly dialect: Dialect,
  ) {}

  private jobs(db: Db) {
    return db(this.tables.jobs);
  }

  /** Writes new jobs (in the scheduling transaction), in as few INSERTs as the database's limits allow. */
  async insert(db: Db, jobs: readonly NewJob[]): Promise<void> {
    const rows = jobs.map((j) => ({
      id: j.id,
      name: j.name,
      queue: j.queue,
      state: 'pending',
      priority: j.priority,
      run_at: j.runAt,
      args: j.args,
      meta: j.meta,
      owner: j.owner,
      runs: 0,
      failures: 0,
      max_attempts: j.maxAttempts,
      backoff: j.backoff,
      timeout_ms: j.timeoutMs,
      lease_ms: j.leaseMs,
      dedupe_key: j.dedupeKey,
      anonymous_dedupe_key: j.owner === null ? j.dedupeKey : null,
      created_at: j.createdAt,
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
   * Ids of due pending jobs of `queue`, locked against other claimers
   * (SKIP LOCKED): `ORDER BY priority, run_at, id`, which the claim index follows.
   */
  async duePending(db: Db, queue: string, now: number, limit: number): Promise<JobRow[]> {
    const query = this.jobs(db)
      .select('*')
      .where({ state: 'pending', queue })
      .andWhere('run_at', '<=', now)
      .orderBy([{ column: 'priority' }, { column: 'run_at' }, { column: 'id' }])
      .limit(limit);
    return (await this.dialect.lockForClaim(query)).map(fromRow);
  }

  /** Running jobs whose lease ran out (their worker died or stalled), locked against other claimers. */
  async expiredLeases(db: Db, now: number, limit: number): Promise<JobRow[]> {
    const query = this.jobs(db)
      .select('*')
      .where({ state: 'running' })
      .andWhere('locked_until', '<', now)
      .orderBy('locked_until')
      .limit(limit);
    return (await this.dialect.lockForClaim(query)).map(fromRow);
  }

  /**
   * The state of job `id` if `viewer` may see it. The owner check is part of the
   * WHERE clause, and no large column is read, so a job of someone else's costs
   * what an unknown id does.
   */
  async status(db: Db, id: string, viewer: Viewer): Promise<JobStatus | undefined> {
    const query = this.jobs(db).where({ id });
    if (viewer !== undefined) query.andWhere((q) => (viewer === null ? q.whereNull('owner') : q.whereNull('owner').orWhere({ owner: viewer })));
    const row = await query.first('owner', 'state', 'expires_at', 'progress_fraction', 'progress_message');
    if (!row) return undefined;
    return { owner: (row.owner as string | null) ?? null, state: row.state as JobState, expiresAt: numOrNull(row.expires_at), ...progressOf(row) };
  }

  /** What a finished job left: its stored result or error; undefined once the row is gone or not finished. */
  async outcome(db: Db, id: string): Promise<{ state: 'done' | 'failed'; result: string | null; error: string | null } | undefined> {
    return this.jobs(db).where({ id }).whereIn('state', ['done', 'failed']).first('state', 'result', 'error');
  }

  /** Marks claimed jobs running under a new lease; a pending job gives up its dedupe key. */
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
  complete(db: Db, id: string, token: string, result: string, now: number, expiresAt: number): Promise<number> {
    return this.jobs(db)
      .where({ id, lease: token, state: 'running' })
      .update({
        state: 'done',
        result,
        finished_at: now,
        expires_at: expiresAt,
        progress_fraction: 1,
        lease: null,
        locked_by: null,
        locked_until: null,
      });
  }

  /** Records a failure for good; fenced like complete. */
  fail(db: Db, id: string, token: string, error: StoredError, now: number, expiresAt: number, failures: number): Promise<number> {
    return this.jobs(db)
      .where({ id, lease: token, state: 'running' })
      .update({
        state: 'failed',
        error: JSON.stringify(error),
        failures,
        finished_at: now,
        expires_at: expiresAt,
        lease: null,
        locked_by: null,
        locked_until: null,
      });
  }

  /** Puts a job back in the queue to run at `runAt` (a retry after a failure, or a job handed back at shutdown). */
  requeue(db: Db, id: string, token: string, runAt: number, changes: { failures?: number; runs?: number; error?: StoredError }): Promise<number> {
    return this.jobs(db)
      .where({ id, lease: token, state: 'running' })
      .update({
        state: 'pending',
        run_at: runAt,
        lease: null,
        locked_by: null,
        locked_until: null,
        ...(changes.failures === undefined ? {} : { failures: changes.failures }),
        ...(changes.runs === undefined ? {} : { runs: changes.runs }),
        ...(changes.error === undefined ? {} : { error: JSON.stringify(changes.error) }),
      });
  }

  /** Deletes a job in any state. */
  remove(db: Db, id: string): Promise<number> {
    return this.jobs(db).where({ id }).delete();
  }

  /** Deletes a finished result (after the transaction that fetched it committed). */
  consume(db: Db, id: string): Promise<number> {
    return this.jobs(db).where({ id }).whereIn('state', ['done', 'failed']).delete();
  }

  /** Deletes up to `limit` finished rows past their expiry; returns how many. */
  async sweep(db: Db, now: number, limit: number): Promise<number> {
    const ids = (await this.jobs(db).select('id').where('expires_at', '<=', now).limit(limit)).map((r: { id: string }) => r.id);
    return ids.length === 0 ? 0 : this.jobs(db).whereIn('id', ids).delete();
  }

  /** Counts by state, and the age of the oldest due pending job. */
  async stats(db: Db, now: number): Promise<{ counts: Record<JobState, number>; oldestDueMs: number | null }> {
    const counts: Record<JobState, number> = { pending: 0, running: 0, done: 0, failed: 0 };
    const rows = (await this.jobs(db).select('state').count({ n: '*' }).groupBy('state')) as { state: JobState; n: unknown }[];
    for (const row of rows) counts[row.state] = Number(row.n);
    const oldest = await this.jobs(db).where({ state: 'pending' }).andWhere('run_at', '<=', now).min({ at: 'run_at' }).first();
    const at = numOrNull(oldest?.at);
    return { counts, oldestDueMs: at === null ? null : now - at };
  }
}
