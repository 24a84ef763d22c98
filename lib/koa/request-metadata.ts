/** Transaction metadata derived from a Koa request: its user, `METHOD path` and a request id (the rules are in lib/http). */
import type { Context } from 'koa';
import type { TransactionMeta } from '../interfaces.js';
import type { UnidentifiedUser } from '../scheduler/owner.js';
import { metadataOf, ownerFromOption, ownerFromUser, requestIdFrom } from '../http/request-metadata.js';

export { withRequestId } from '../http/request-metadata.js';

/**
 * The owner of the request's jobs: what `ownerOf(ctx)` returns when given, else
 * read from `ctx.state.user` (itself when an id, else its `id`, else its `sub`).
 */
export function requestUser(ctx: Context, ownerOf?: (ctx: Context) => unknown): string | number | UnidentifiedUser | undefined {
  return ownerOf ? ownerFromOption(ownerOf(ctx)) : ownerFromUser(ctx.state.user, 'ctx.state.user');
}

/** `METHOD path` of a request. */
export function requestLine(ctx: Context): string {
  return `${ctx.method} ${ctx.path}`;
}

/** The default metadata: the request's user (see requestUser), `METHOD path` as note, the request id. */
export function defaultMetadata(ctx: Context, line: string, requestId: string, ownerOf?: (ctx: Context) => unknown): TransactionMeta {
  return metadataOf(requestUser(ctx, ownerOf), line, requestId);
}

/** The request's id: the client's header when it is a sane token, else a new unique one. */
export function requestIdOf(ctx: Context, header: string): string {
  return requestIdFrom(ctx.get(header));
}
