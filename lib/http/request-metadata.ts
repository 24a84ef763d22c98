/**
 * Transaction metadata of an HTTP request, framework-neutral: the owner read
 * from the request's user, the request id, `METHOD path`. The Koa and Express
 * adaptations give these the user and header they read.
 */
import { randomBytes } from 'node:crypto';
import type { TransactionMeta } from '../interfaces.js';
import { UnidentifiedUser } from '../scheduler/owner.js';
import { REQUEST_ID } from '../support/validate.js';

/** What aftercommit can read an owner from: an id as it is, a BigInt or an ObjectId-like object as its text. */
function asOwner(value: unknown): string | number | undefined {
  if (typeof value === 'string' || typeof value === 'number') return value;
  if (typeof value === 'bigint') return String(value);
  if (typeof value === 'object' && value !== null && value.toString !== Object.prototype.toString) return String(value);
  return undefined;
}

/** The owner the app's `user` option returned (`undefined`/`null`: none). */
export function ownerFromOption(owner: unknown): string | number | UnidentifiedUser | undefined {
  if (owner === undefined || owner === null) return undefined;
  return asOwner(owner) ?? new UnidentifiedUser(`aftercommit({ user }) returned a value of type ${typeof owner}`);
}

/**
 * The owner read from a request's user (`where` names it, e.g. `ctx.state.user`):
 * the user itself when it is an id, else its `id`, else its `sub` (a JWT or OIDC
 * subject). Never a display name: two people may share one. A user that is set
 * but gives no id becomes an UnidentifiedUser, which schedule() refuses.
 */
export function ownerFromUser(user: unknown, where: string): string | number | UnidentifiedUser | undefined {
  if (user === undefined || user === null) return undefined;
  if (typeof user !== 'object') return asOwner(user) ?? new UnidentifiedUser(`${where} (a ${typeof user})`);
  const { id, sub } = user as { id?: unknown; sub?: unknown };
  const owner = asOwner(id ?? sub);
  if (owner !== undefined) return owner;
  const keys = Object.keys(user).slice(0, 8).join(', ');
  return new UnidentifiedUser(`${where} (an object with ${keys ? `keys ${keys}` : 'no keys'})`);
}

/** The default metadata: the request's owner, `METHOD path` as note, the request id. */
export function metadataOf(user: string | number | UnidentifiedUser | undefined, line: string, requestId: string): TransactionMeta {
  const extension = { requestId };
  // An UnidentifiedUser travels as the user so that schedule() can refuse it with its description.
  return user === undefined ? { note: line, extension } : { user: user as string, note: line, extension };
}

/** The app's own metadata, with the request id added to its extension. */
export function withRequestId(meta: TransactionMeta, requestId: string): TransactionMeta {
  return { ...meta, extension: { ...meta.extension, requestId } };
}


// Request ids need to be unique, not secret: a random per-process prefix and a counter.
const processPrefix = randomBytes(6).toString('hex');
let counter = 0;

/** The request's id: the client's header value when it is a sane token, else a new unique one. */
export function requestIdFrom(given: string | string[] | undefined): string {
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : `${processPrefix}-${(++counter).toString(36)}`;
}
