/**
 * Puts a Koa response (and ctx.state) back the way it was before a failed
 * attempt. Koa has no public reset: setting `ctx.status` marks the status as
 * explicit (`_explicitStatus`), so a later `ctx.body = …` no longer turns a 404
 * into 200, and `ctx.body = null` sets `_explicitNullBody`; restoring through the
 * public setters would leak both into the next attempt. So this module saves and
 * restores the underlying fields themselves.
 */
import type { Context } from 'koa';
import type { OutgoingHttpHeaders } from 'node:http';
import { copyData, refill } from '../http/copy-data.js';

interface KoaResponseInternals {
  _body: unknown;
  _explicitStatus?: boolean;
  _explicitNullBody?: boolean;
}

export interface ResponseSnapshot {
  readonly statusCode: number;
  readonly statusMessage: string;
  readonly headers: OutgoingHttpHeaders;
  readonly body: unknown;
  readonly explicitStatus: boolean | undefined;
  readonly explicitNullBody: boolean | undefined;
  readonly state: Record<string, unknown>;
}

/** Saves what an attempt may change: status, message, headers, body, Koa's private flags, and ctx.state. */
export function snapshotResponse(ctx: Context): ResponseSnapshot {
  const response = ctx.response as unknown as KoaResponseInternals;
  return {
    statusCode: ctx.res.statusCode,
    statusMessage: ctx.res.statusMessage,
    headers: ctx.res.getHeaders(), // already a copy
    body: response._body,
    explicitStatus: response._explicitStatus,
    explicitNullBody: response._explicitNullBody,
    state: copyData(ctx.state as Record<string, unknown>),
  };
}

/** Puts back what `snapshotResponse` saved. ctx.state keeps its identity: code outside may hold it. */
export function restoreResponse(ctx: Context, snapshot: ResponseSnapshot): void {
  const response = ctx.response as unknown as KoaResponseInternals;
  for (const name of ctx.res.getHeaderNames()) ctx.res.removeHeader(name);
  for (const [name, value] of Object.entries(snapshot.headers)) if (value !== undefined) ctx.res.setHeader(name, value);
  ctx.res.statusCode = snapshot.statusCode;
  ctx.res.statusMessage = snapshot.statusMessage;
  response._body = snapshot.body;
  response._explicitStatus = snapshot.explicitStatus;
  response._explicitNullBody = snapshot.explicitNullBody;
  refill(ctx.state as Record<string, unknown>, snapshot.state); // a copy again: the snapshot may serve another retry
}
