/**
 * Who schedules a job: the scheduling transaction's metadata and owner, its
 * request id, and its lineage (the attempt that commits, the request's trace),
 * as stored with the job and inherited by its steps and callbacks.
 */
import type { Transaction, TransactionMeta } from '../../interfaces.js';
import type { ValueCodec } from '../codec.js';
import { traceparentOf } from '../../support/tracing.js';
import { REQUEST_ID } from '../../support/validate.js';

/** Who scheduled a job: its stored metadata and owner, which its steps and callbacks inherit. */
export interface Origin {
  meta: string;
  owner: string | null;
  /** The scheduling request's id (meta.extension.requestId), for the admin's lookup by request. */
  requestId: string | null;
}

/** meta.user as stored for the visibility check (a column of 191 characters). */
function ownerOf(meta: TransactionMeta): string | null {
  if (meta.user === undefined || meta.user === null) return null;
  const owner = String(meta.user);
  if (owner.length > 191) throw new TypeError(`cannot schedule: tx.meta.user is ${owner.length} characters long, more than the 191 the jobs table keeps`);
  return owner;
}

/** The origin of job `name` scheduled in `tx`. */
export function originOf(codec: ValueCodec, tx: Transaction, name: string): Origin {
  const requestId = tx.meta.extension?.requestId;
  return {
    meta: codec.encodeMeta(name, tx.meta, { attempt: tx.attempt, traceparent: traceparentOf(tx) }),
    owner: ownerOf(tx.meta),
    // Ids the HTTP adapters take or make fit; an app's own other one is still in meta, only not looked up by.
    requestId: typeof requestId === 'string' && REQUEST_ID.test(requestId) ? requestId : null,
  };
}
