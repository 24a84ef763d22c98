/** metricsRoute() for Koa: `GET {path}` serves `scheduler.metrics()` and the request counters of its manager as Prometheus text, to authorized requests only. */
import type { Middleware } from 'koa';
import { metricsPath, prometheusText, PROMETHEUS_TYPE } from '../http/prometheus.js';
import { requestFiguresOf } from '../http/request-metrics.js';
import type { MetricsRouteOptions } from './interfaces.js';

export function metricsRoute(options: MetricsRouteOptions): Middleware {
  const path = metricsPath(options, 'ctx');
  return async function metricsRouteMiddleware(ctx, next) {
    if ((ctx.method !== 'GET' && ctx.method !== 'HEAD') || ctx.path !== path) return next();
    if (!(await options.authorize(ctx))) return next(); // as if there were no such route
    ctx.set('Cache-Control', 'no-store');
    ctx.set('Content-Type', PROMETHEUS_TYPE);
    ctx.body = prometheusText(await options.scheduler.metrics(), requestFiguresOf(options.scheduler));
  };
}
