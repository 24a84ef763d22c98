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

/**
 * Copies arrays and plain objects (recursively, cycles kept as cycles) so that an
 * attempt pushing to `ctx.state.list` does not change the snapshot; class
 * instances (a user model, a logger) are kept as they are.
 */
function copyData<T>(value: T, copies = new Map<object, unknown>()): T {
  if (typeof value !== 'object' || value === null) return value;
  const proto = Object.getPrototypeOf(value);
  const isArray = Array.isArray(value);
  if (!isArray && proto !== Object.prototype && proto !== null) return value;
  if (copies.has(value)) return copies.get(value) as T;
  const copy: Record<string | number, unknown> = isArray ? [] : Object.create(proto);
  copies.set(value, copy);
  // defineProperty: a key named __proto__ (from parsed JSON) must stay a key, not become the prototype.
  for (const [key, item] of Object.entries(value)) {
    Object.defineProperty(copy, key, { value: copyData(item, copies), writable: true, enumerable: true, configurable: true });
  }
  return copy as T;
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
  for (const key of Object.keys(ctx.state)) delete ctx.state[key];
  Object.assign(ctx.state, copyData(snapshot.state)); // a copy again: the snapshot may serve another retry
}
