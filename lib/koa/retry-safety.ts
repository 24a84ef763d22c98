/**
 * Whether a request can be run again after a transient error. It cannot when
 * something of the failed attempt has left the process or cannot be replayed:
 * headers already sent, a response written by hand (`ctx.respond = false`), a
 * streaming body, a client that is gone, or a request body read from the socket
 * inside the chain without being kept (body parsers belong before aftercommit).
 */
import type { Context } from 'koa';

function isStreamBody(body: unknown): boolean {
  return (
    (typeof body === 'object' && body !== null && typeof (body as { pipe?: unknown }).pipe === 'function') ||
    body instanceof ReadableStream ||
    body instanceof Response
  );
}

type RequestBodies = { body?: unknown; rawBody?: unknown };

/** Whether the request body has been read from the socket, even in part. */
function bodyTouched(ctx: Context): boolean {
  return ctx.req.readableDidRead || ctx.req.readableEnded;
}

export interface RequestStart {
  /** Whether the request body had been read (even in part) before the guarded chain ran. */
  readonly bodyReadBefore: boolean;
  /** `ctx.request.body` and `rawBody` as they were then (a parser may set `{}` for types it skips). */
  readonly body: unknown;
  readonly rawBody: unknown;
}

export function requestStart(ctx: Context): RequestStart {
  const request = ctx.request as RequestBodies;
  return { bodyReadBefore: bodyTouched(ctx), body: request.body, rawBody: request.rawBody };
}

/** Why the request cannot be run again, or undefined when it can. */
export function unsafeToRetry(ctx: Context, start: RequestStart): string | undefined {
  if (ctx.respond === false) return 'the handler wrote the response itself (ctx.respond = false)';
  if (ctx.headerSent) return 'the response headers were already sent';
  if (isStreamBody(ctx.body)) return 'the response body is a stream, which cannot be replayed';
  if (!ctx.writable) return 'the client has gone away';
  // Read inside the chain: safe only if a parser in the chain kept it (the parser then skips it on the retry).
  const request = ctx.request as RequestBodies;
  const kept = request.body !== start.body || request.rawBody !== start.rawBody;
  if (!start.bodyReadBefore && bodyTouched(ctx) && !kept) {
    return 'the request body was read inside the guarded handlers without being kept (put body parsers before aftercommit)';
  }
  return undefined;
}

/**
 * Gives up the response of a request that failed and cannot be retried: a
 * stream body is released, and a response whose headers already left is cut
 * off (Koa cannot send an error once headers are out, and would leave the
 * client waiting).
 */
export function abandonResponse(ctx: Context): void {
  const body = ctx.body as { destroy?: () => void } | undefined;
  if (isStreamBody(body) && typeof body?.destroy === 'function') body.destroy();
  if (ctx.headerSent && !ctx.res.writableEnded) ctx.res.destroy();
}
