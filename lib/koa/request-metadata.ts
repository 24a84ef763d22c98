/** Transaction metadata derived from a Koa request (the seed's zope2 adaptation). */
import { randomBytes } from 'node:crypto';
import type { Context } from 'koa';
import type { TransactionMeta } from '../interfaces.js';

/**
 * The user of the request: `ctx.state.user` itself when it is an id, else its
 * `id` or `name`. A BigInt, or an object with its own toString (a MongoDB
 * ObjectId), becomes its text.
 */
function requestUser(ctx: Context): string | number | undefined {
  const user = ctx.state.user as unknown;
  const id = typeof user === 'object' && user !== null ? ((user as { id?: unknown }).id ?? (user as { name?: unknown }).name) : user;
  if (typeof id === 'string' || typeof id === 'number') return id;
  if (typeof id === 'bigint') return String(id);
  if (typeof id === 'object' && id !== null && id.toString !== Object.prototype.toString) return String(id);
  return undefined;
}

/** `METHOD path` of a request. */
export function requestLine(ctx: Context): string {
  return `${ctx.method} ${ctx.path}`;
}

/** The default metadata: the user from ctx.state.user, `METHOD path` as note, the request id. */
export function defaultMetadata(ctx: Context, line: string, requestId: string): TransactionMeta {
  const user = requestUser(ctx);
  const extension = { requestId };
  return user === undefined ? { note: line, extension } : { user, note: line, extension };
}

/** The app's own metadata, with the request id added to its extension. */
export function withRequestId(meta: TransactionMeta, requestId: string): TransactionMeta {
  return { ...meta, extension: { ...meta.extension, requestId } };
}

const REQUEST_ID = /^[A-Za-z0-9._:@/+=-]{1,128}$/;

// Request ids need to be unique, not secret: a random per-process prefix and a counter.
const processPrefix = randomBytes(6).toString('hex');
let counter = 0;

/** The request's id: the client's header when it is a sane token, else a new unique one. */
export function requestIdOf(ctx: Context, header: string): string {
  const given = ctx.get(header);
  return REQUEST_ID.test(given) ? given : `${processPrefix}-${(++counter).toString(36)}`;
}
