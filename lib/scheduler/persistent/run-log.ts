/**
 * A job's runs as its row keeps them (`run_log`, JSON, the newest 20): who ran
 * it, when, and how each run ended. Each entry is written by the statement that
 * records the run's end, in the same transaction (no statement of its own); a run
 * whose worker died is written by the worker that takes the job over.
 */
import type { JobRunRecord } from '../../interfaces.js';

/** How many runs a row keeps: the log stays small whatever the job's history. */
const KEPT = 20;

const OUTCOMES: ReadonlySet<string> = new Set(['done', 'failed', 'retried', 'handed back', 'lease expired']);

/** The runs in `log`, as stored; a log that does not read back (written by hand, or damaged) shows none. */
export function runsOf(log: string | null): JobRunRecord[] {
  if (log === null) return [];
  try {
    const runs = JSON.parse(log) as unknown;
    return Array.isArray(runs) ? runs.filter(isRunRecord).slice(-KEPT) : [];
  } catch {
    return [];
  }
}

/** `log` with `runs` added at its end, the oldest dropped beyond the newest 20. */
export function withRuns(log: string | null, ...runs: JobRunRecord[]): string {
  return JSON.stringify([...runsOf(log), ...runs].slice(-KEPT));
}

function isRunRecord(value: unknown): value is JobRunRecord {
  const run = value as Partial<JobRunRecord> | null;
  return (
    typeof run === 'object' &&
    run !== null &&
    Number.isSafeInteger(run.run) &&
    typeof run.worker === 'string' &&
    Number.isSafeInteger(run.claimedAt) &&
    Number.isSafeInteger(run.endedAt) &&
    typeof run.outcome === 'string' &&
    OUTCOMES.has(run.outcome) &&
    (run.error === undefined || typeof run.error === 'string')
  );
}
