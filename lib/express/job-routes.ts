/**
 * jobRoutes({ prefix }) for Express: `GET {prefix}/:id` answers what became of
 * a schedule, to the user who scheduled it only (the rules are in
 * lib/http/job-poll.ts, shared with Koa). Mounted among the handlers aftercommit
 * guards, it reads through the request's transaction.
 */
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { JobRoutesOptions } from './interfaces.js';
import { NOT_MOUNTED, pollAnswer, pollBase, polledId } from '../http/job-poll.js';

/** The polling endpoint for schedules, mounted among the handlers aftercommit guards. */
export function jobRoutes({ prefix = '/jobs', consume = true }: JobRoutesOptions = {}): RequestHandler {
  const base = pollBase(prefix);

  return async function jobRoutesHandler(req: Request, res: Response, next: NextFunction) {
    const id = polledId(req.method, req.path, base);
    if (id === undefined) return next();
    const { transaction, scheduler } = req;
    if (!transaction || !scheduler) throw new TypeError(NOT_MOUNTED);
    res.setHeader('Cache-Control', 'no-store');
    const { status, body } = await pollAnswer(id, req.method, transaction, scheduler, consume);
    res.status(status).json(body);
  };
}
