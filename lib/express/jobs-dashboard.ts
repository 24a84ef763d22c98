/** jobsDashboard() for Express: the jobs admin API (lib/http/admin-api.ts) under its prefix, closed by default. */
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { adminAnswer, dashboardPrefix } from '../http/admin-api.js';
import type { DashboardOptions } from './interfaces.js';

export function jobsDashboard(options: DashboardOptions): RequestHandler {
  const prefix = dashboardPrefix(options, 'req');
  const logger = options.scheduler.manager.logger;
  // Errors go to next(err) itself: Express 4 ignores a rejected promise.
  return function jobsDashboardHandler(req: Request, res: Response, next: NextFunction): void {
    if (req.path !== prefix && !req.path.startsWith(`${prefix}/`)) return next();
    const request = { method: req.method, path: req.path.slice(prefix.length), query: req.query as Record<string, unknown>, header: (name: string) => req.get(name) };
    adminAnswer(request, req, options, logger, prefix).then((answer) => {
      if (!answer) return next();
      res.set({ 'Cache-Control': 'no-store', ...answer.headers });
      res.status(answer.status);
      if (answer.type) res.type(answer.type).send(answer.body);
      else res.json(answer.body);
    }, next);
  };
}
