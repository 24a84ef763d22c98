/**
 * Rows of the jobs table as the scheduler uses them: their shape, and how they
 * are read (PostgreSQL returns BIGINT as text) and written in batches.
 */
import type { InsertLimits, JobProgress, JobState } from '../../interfaces.js';

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
  requestId: string | null;
  /** Its runs so far, as JSON (run-log.ts). */
  runLog: string | null;
  /** The last claim's time. */
  startedAt: number | null;
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
  /** `job`, or the kind of batch this row is. */
  kind: JobKind;
  /** Of a batch: its steps, and those whose outcome is recorded. */
  stepsTotal: number | null;
  stepsDone: number | null;
  stopOnFailure: boolean;
  /** The batch this row is a step of. */
  parentId: string | null;
  stepIndex: number | null;
  /** Stored callback specs (JSON), if any. */
  callbacks: string | null;
  concurrencyKey: string | null;
  recurringKey: string | null;
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
  requestId: string | null;
  maxAttempts: number;
  backoff: string;
  timeoutMs: number | null;
  leaseMs: number;
  dedupeKey: string | null;
  createdAt: number;
  /** Submission order: the claim takes equal priority and run time in this order. */
  seq: number;
  /** `waiting` for a batch, and for a serial batch's steps after the first. Default `pending`. */
  state?: 'pending' | 'waiting';
  kind?: JobKind;
  parentId?: string | null;
  stepIndex?: number | null;
  stepsTotal?: number | null;
  stopOnFailure?: boolean;
  callbacks?: string | null;
  concurrencyKey?: string | null;
  recurringKey?: string | null;
  /** The instant a recurring job's row fires for. */
  recurringInstant?: number | null;
}

/** What a row of the jobs table is: a job, or a batch whose steps are rows of their own. */
export type JobKind = 'job' | 'serial' | 'parallel';

/** What getResult reads of a job before it knows the caller may see its outcome: no arguments, no result. */
export interface JobStatus {
  owner: string | null;
  state: JobState;
  expiresAt: number | null;
  progress?: JobProgress;
}

export const num = (value: unknown): number => Number(value);
export const numOrNull = (value: unknown): number | null => (value === null || value === undefined ? null : Number(value));

/** A row's progress columns as JobProgress, when it has any. */
export function progressOf(r: Record<string, unknown>): { progress?: JobProgress } {
  const fraction = numOrNull(r.progress_fraction);
  const message = r.progress_message as string | null;
  if (fraction === null) return {};
  return { progress: message ? { fraction, message } : { fraction } };
}

/**
 * Splits rows into runs that each fit one INSERT within `limits`; a row larger
 * than the byte bound goes alone (the database then judges it).
 */
export function statementsOf(rows: readonly Record<string, unknown>[], limits: InsertLimits): Record<string, unknown>[][] {
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

/** A jobs row as read, with its numbers parsed. */
export function fromRow(r: Record<string, unknown>): JobRow {
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
    requestId: (r.request_id as string | null) ?? null,
    runLog: (r.run_log as string | null) ?? null,
    startedAt: numOrNull(r.started_at),
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
    kind: ((r.kind as JobKind | undefined) ?? 'job'),
    stepsTotal: numOrNull(r.steps_total),
    stepsDone: numOrNull(r.steps_done),
    stopOnFailure: Boolean(r.stop_on_failure),
    parentId: (r.parent_id as string | null) ?? null,
    stepIndex: numOrNull(r.step_index),
    callbacks: (r.callbacks as string | null) ?? null,
    concurrencyKey: (r.concurrency_key as string | null) ?? null,
    recurringKey: (r.recurring_key as string | null) ?? null,
  };
}
