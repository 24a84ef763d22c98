/**
 * A job's lineage: where it came from, stored beside its metadata (the second
 * value of its `meta` column, see ValueCodec.encodeMeta) and read back without
 * trusting it.
 */
import { isTraceparent } from '../support/tracing.js';

/**
 * Where a job came from, stored beside its metadata: the attempt of the
 * scheduling transaction that committed it (a job scheduled by an attempt that
 * rolled back was never stored), and the scheduling request's trace context.
 */
export interface JobLineage {
  /** The scheduling transaction's attempt that committed: 1 unless the request was retried. */
  attempt: number;
  /** The W3C `traceparent` current when the job was scheduled (with OpenTelemetry present). */
  traceparent?: string;
}

/**
 * The lineage encodeMeta stored beside the metadata, read as plain JSON (it
 * holds no value a codec wrote, so a codec removed since cannot hide it);
 * undefined for rows written without one. Stored data is not trusted: an
 * attempt that is not a whole number from 1 gives none, and what is not a
 * traceparent is dropped.
 */
export function lineageOf(storedMeta: string): JobLineage | undefined {
  let stored: unknown;
  try {
    stored = JSON.parse(storedMeta);
  } catch {
    return undefined;
  }
  const lineage = (Array.isArray(stored) ? stored[1] : undefined) as Partial<JobLineage> | null | undefined;
  const attempt = lineage?.attempt;
  if (typeof attempt !== 'number' || !Number.isSafeInteger(attempt) || attempt < 1) return undefined;
  return isTraceparent(lineage!.traceparent) ? { attempt, traceparent: lineage!.traceparent } : { attempt };
}
