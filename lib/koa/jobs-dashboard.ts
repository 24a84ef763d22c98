/** jobsDashboard() for Koa: the jobs admin API (lib/http/admin-api.ts) under its prefix, closed by default. */
import type { Middleware } from 'koa';
import { adminAnswer, dashboardPrefix } from '../http/admin-api.js';
import type { DashboardOptions } from './interfaces.js';

export function jobsDashboard(options: DashboardOptions): Middleware {
  const prefix = dashboardPrefix(options, 'ctx');
  const logger = options.scheduler.manager.logger;
  return async function jobsDashboardMiddleware(ctx, next) {
    if (ctx.path !== prefix && !ctx.path.startsWith(`${prefix}/`)) return next();
    const request = { method: ctx.method, path: ctx.path.slice(prefix.length), query: ctx.query, header: (name: string) => ctx.get(name) || undefined };
    const answer = await adminAnswer(request, ctx, options, logger, prefix);
    if (!answer) return next();
    ctx.set({ 'Cache-Control': 'no-store', ...answer.headers });
    ctx.status = answer.status;
    if (answer.type) ctx.type = answer.type;
    ctx.body = answer.body;
  };
}
