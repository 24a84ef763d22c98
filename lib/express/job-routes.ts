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

  // Errors go to next(err) itself: Express 4 ignores a rejected promise.
  return function jobRoutesHandler(req: Request, res: Response, next: NextFunction): void {
    const id = polledId(req.method, req.path, base);
    if (id === undefined) return next();
    const { transaction } = req;
    if (!transaction) return next(new TypeError(NOT_MOUNTED));
    let scheduler;
    try {
      scheduler = req.scheduler!; // throws NoSchedulerError when aftercommit was given none
    } catch (err) {
      return next(err);
    }
    res.setHeader('Cache-Control', 'no-store');
    pollAnswer(id, req.method, transaction, scheduler, consume).then(({ status, body }) => {
      res.status(status).json(body);
    }, next);
  };
}
