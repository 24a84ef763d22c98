/**
 * What the Express suites share: an async route that passes its rejection on
 * under Express 4 too, the request's user read from a header (as authentication
 * middleware would set `req.user`), an app error handler that answers errors as
 * JSON, and servers closed when the suite ends.
 */
import { after } from 'node:test';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { serve, type Served } from '../support/http.js';
import type { ExpressVersion } from './versions.js';

type Route = (req: Request, res: Response, next: NextFunction) => unknown;

/** A route for `version`'s router: Express 4's router ignores a rejected promise, so it is passed on with next(err). */
export function routeFor(version: ExpressVersion): (fn: Route) => Route {
  return (fn) => (version.name === 'express 5' ? fn : (req, res, next) => Promise.resolve(fn(req, res, next)).catch(next));
}

/** Sets `req.user` from the `X-User` header, parsed as JSON (before aftercommit, as authentication runs). */
export const userFromHeader: RequestHandler = (req, _res, next) => {
  const header = req.get('X-User');
  if (header) (req as { user?: unknown }).user = JSON.parse(header);
  next();
};

/** What `errorsAsJson` answers. */
export interface ErrorBody {
  error: string;
  name: string;
  code: string | null;
}

/**
 * The app's error handler (after aftercommit): the error's status (else 500) and headers, and
 * `{ error, name, code }`. `seen` gets every error it is handed, even when the response has started.
 */
export function errorsAsJson(seen: unknown[] = []) {
  return (err: { status?: number; message: string; name: string; code?: string; headers?: Record<string, string> }, _req: Request, res: Response, next: NextFunction) => {
    seen.push(err);
    if (res.headersSent) return next(err); // Express's own handler then cuts the connection
    const body: ErrorBody = { error: err.message, name: err.name, code: err.code ?? null };
    res.status(err.status ?? 500).set(err.headers ?? {}).json(body);
  };
}

/** Serves apps on free ports; all of them are closed when the suite ends (declare it inside the suite). */
export function servers(): (app: Parameters<typeof serve>[0]) => Promise<Served> {
  const open: Served[] = [];
  after(() => Promise.all(open.map((s) => s.close())));
  return async (app) => {
    const served = await serve(app);
    open.push(served);
    return served;
  };
}
