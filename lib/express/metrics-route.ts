/** metricsRoute() for Express: `GET {path}` serves `scheduler.metrics()` and the request counters of its manager as Prometheus text, to authorized requests only. */
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { metricsPath, prometheusText, PROMETHEUS_TYPE } from '../http/prometheus.js';
import { requestFiguresOf } from '../http/request-metrics.js';
import type { MetricsRouteOptions } from './interfaces.js';

export function metricsRoute(options: MetricsRouteOptions): RequestHandler {
  const path = metricsPath(options, 'req');
  // Errors go to next(err) itself: Express 4 ignores a rejected promise.
  return function metricsRouteHandler(req: Request, res: Response, next: NextFunction): void {
    if ((req.method !== 'GET' && req.method !== 'HEAD') || req.path !== path) return next();
    Promise.resolve()
      .then(() => options.authorize(req))
      .then(async (allowed) => {
        if (!allowed) return next(); // as if there were no such route
        const text = prometheusText(await options.scheduler.metrics(), requestFiguresOf(options.scheduler));
        res.setHeader('Cache-Control', 'no-store');
        res.setHeader('Content-Type', PROMETHEUS_TYPE);
        res.send(text);
      })
      .catch(next);
  };
}
