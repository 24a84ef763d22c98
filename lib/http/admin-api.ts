/**
 * The page and JSON admin API of `jobsDashboard()`, framework-neutral: which
 * request means what, who may send it, and the answer. Closed by default: a request
 * `authorize` does not accept gets 404 on every route, as if there were none.
 * Actions are POST or DELETE, never from another site (they need the
 * `X-Aftercommit-Admin: 1` header, which a cross-site form cannot send and a
 * cross-site script cannot without CORS), are logged and reported to
 * `onAction`, and are hidden (404) in read-only mode.
 *
 *   GET    {prefix}, {prefix}/app.js, {prefix}/app.css   the page (dashboard-page.ts)
 *   GET    {prefix}/api/overview                 queues (gauges, pause state), this process's runs, workers, finished per minute, recurring jobs
 *   GET    {prefix}/api/jobs?state&queue&name&owner&requestId&since&until&limit&after
 *   GET    {prefix}/api/jobs/:id                 one job, `redact` applied
 *   GET    {prefix}/api/requests                 this process's request counters by route (request-metrics.ts)
 *   POST   {prefix}/api/jobs/:id/retry | /run-now
 *   DELETE {prefix}/api/jobs/:id                 scheduler.remove(id)
 *   POST   {prefix}/api/jobs/retry | /delete     every job matching the query's filter
 *   POST   {prefix}/api/queues/:name/pause | /resume
 */
import type { JobAdminFilter, Logger } from '../interfaces.js';
import type { PersistentTransactionalScheduler } from '../scheduler/persistent/persistent-scheduler.js';
import type { DashboardAction, DashboardOptions } from './interfaces.js';
import { PAGE_CSS, PAGE_POLICY, pageHtml } from './dashboard-page.js';
import { PAGE_JS } from './dashboard-script.js';
import { requestFiguresOf } from './request-metrics.js';

/** The header an action must carry: a cross-site form cannot send it, a cross-site script cannot without CORS. */
export const ACTION_HEADER = 'x-aftercommit-admin';

/** What the adapters read off a request for the API. */
export interface AdminRequest {
  method: string;
  /** The path below the dashboard's prefix, e.g. `/api/jobs`. */
  path: string;
  query: Record<string, unknown>;
  header(name: string): string | undefined;
}

export interface AdminAnswer {
  status: number;
  /** JSON, or text when `type` is given. */
  body: unknown;
  type?: string;
  headers?: Record<string, string>;
}

const NOT_FOUND: AdminAnswer = { status: 404, body: { error: 'not found' } };
const ID = /^[0-9a-f]{32}$/;

/** The dashboard's prefix, checked: `/admin/jobs` by default. */
export function dashboardPrefix<R>(options: DashboardOptions<R>, request: 'ctx' | 'req'): string {
  if (!options || typeof (options.scheduler as { admin?: unknown } | undefined)?.admin !== 'object') {
    throw new TypeError('jobsDashboard(options): options.scheduler must be a PersistentTransactionalScheduler');
  }
  if (typeof options.authorize !== 'function') {
    throw new TypeError(`jobsDashboard(options): options.authorize must be a function (${request}) => whether the request is an admin's; without it every route answers 404`);
  }
  if (options.redact !== undefined && (!Array.isArray(options.redact) || options.redact.some((f) => typeof f !== 'string'))) {
    throw new TypeError('jobsDashboard(options): options.redact must be an array of field names');
  }
  const prefix = options.prefix ?? '/admin/jobs';
  if (typeof prefix !== 'string' || !/^\/[A-Za-z0-9/_.-]*$/.test(prefix) || prefix.endsWith('/')) {
    throw new TypeError(`jobsDashboard(options): options.prefix must be a path like /admin/jobs, got ${JSON.stringify(prefix)}`);
  }
  return prefix;
}

const FILTER_KEYS = ['state', 'queue', 'name', 'owner', 'requestId', 'since', 'until'];
const PAGE_KEYS = ['limit', 'after'];

/**
 * The filter in a query string. Strict, since a bulk action applies to every
 * job it matches: an unknown key, a repeated one or an empty value is refused
 * (a TypeError, answered 400), not dropped; numbers are parsed here, and the
 * admin checks the values.
 */
function filterOf(query: Record<string, unknown>, allowed: readonly string[] = FILTER_KEYS): JobAdminFilter {
  const filter: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(query)) {
    if (!allowed.includes(key) && key !== 'all') throw new TypeError(`unknown query parameter ${JSON.stringify(key)}; a filter takes ${FILTER_KEYS.join(', ')}`);
    if (typeof value !== 'string' || value === '') throw new TypeError(`the query parameter ${key} must be given once, with a value`);
    if (FILTER_KEYS.includes(key)) filter[key] = key === 'since' || key === 'until' ? Number(value) : value;
  }
  return filter as JobAdminFilter;
}

/** A bulk action's filter: one that matches every job must say so (`all=1`). */
function bulkFilterOf(query: Record<string, unknown>): JobAdminFilter {
  const filter = filterOf(query);
  if (Object.keys(filter).length === 0 && query.all !== '1') throw new TypeError('a bulk action without a filter applies to every job: add all=1 to mean it');
  return filter;
}

/** A path segment as sent (percent-encoded), decoded; a malformed one is refused. */
function segment(text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  try {
    return decodeURIComponent(text);
  } catch {
    throw new TypeError(`malformed path segment ${JSON.stringify(text)}`);
  }
}

/** The page's files (dashboard-page.ts), by their path below the prefix. */
function pageFile(path: string, prefix: string, readOnly: boolean): AdminAnswer | undefined {
  if (path === '' || path === '/') {
    return { status: 200, body: pageHtml(prefix, readOnly), type: 'text/html; charset=utf-8', headers: { 'Content-Security-Policy': PAGE_POLICY, 'X-Frame-Options': 'DENY' } };
  }
  if (path === '/app.js') return { status: 200, body: PAGE_JS, type: 'text/javascript; charset=utf-8' };
  if (path === '/app.css') return { status: 200, body: PAGE_CSS, type: 'text/css; charset=utf-8' };
  return undefined;
}

/** Answers a request at or below the dashboard's prefix (`path` is what follows it); undefined when it is none of the dashboard's. */
export async function adminAnswer<R>(
  request: AdminRequest,
  native: R,
  options: DashboardOptions<R>,
  logger: Logger,
  prefix: string,
): Promise<AdminAnswer | undefined> {
  const reading = request.method === 'GET' || request.method === 'HEAD';
  const page = reading ? pageFile(request.path, prefix, options.readOnly === true) : undefined;
  if (!page && !request.path.startsWith('/api/')) return undefined;
  if (!(await options.authorize(native))) return NOT_FOUND;
  if (page) return page;
  const { scheduler } = options;
  const parts = request.path.slice('/api/'.length).split('/');
  try {
    if (reading) return await read(scheduler, parts, request.query, options.redact ?? []);
    if (options.readOnly || (request.method !== 'POST' && request.method !== 'DELETE')) return NOT_FOUND;
    const site = request.header('sec-fetch-site'); // sent by browsers: another site's request says so, whatever CORS allows
    if (request.header(ACTION_HEADER) !== '1' || (site !== undefined && site !== 'same-origin' && site !== 'none')) {
      return { status: 403, body: { error: `an action needs the ${ACTION_HEADER}: 1 header and comes from the dashboard's own site` } };
    }
    const action = actionOf(request.method, parts, request.query);
    if (!action) return NOT_FOUND;
    const affected = await act(scheduler, action);
    // Done: what follows only reports it, and never turns the answer into an error.
    try {
      const event: DashboardAction = { actor: options.actor?.(native) ?? null, ...action, affected };
      logger.info({ ...event }, `jobs dashboard: ${event.actor ?? 'an admin'} ${action.action} (${affected} affected)`);
      options.onAction?.(event);
    } catch (err) {
      logger.error({ err }, `jobs dashboard: reporting the action ${action.action} failed`);
    }
    return { status: 200, body: { affected } };
  } catch (err) {
    if (err instanceof TypeError) return { status: 400, body: { error: err.message } };
    throw err;
  }
}

async function read(scheduler: PersistentTransactionalScheduler, parts: string[], query: Record<string, unknown>, redact: readonly string[]): Promise<AdminAnswer> {
  if (parts.length === 1 && parts[0] === 'overview') {
    const { admin } = scheduler;
    const [metrics, queues, workers, finished, recurring] = await Promise.all([scheduler.metrics(), admin.queueStates(), admin.workers(), admin.finishedLastHour(), admin.recurring()]);
    return { status: 200, body: { queues: metrics.queues, paused: queues.filter((q) => q.paused).map((q) => q.name), runs: metrics.runs, workers, finished, recurring } };
  }
  if (parts.length === 1 && parts[0] === 'jobs') {
    const limit = typeof query.limit === 'string' ? Number(query.limit) : undefined;
    const after = typeof query.after === 'string' ? query.after : undefined;
    const filter = filterOf(query, [...FILTER_KEYS, ...PAGE_KEYS]);
    const page = await scheduler.admin.find(filter, { ...(limit === undefined ? {} : { limit }), ...(after === undefined ? {} : { after }) });
    // The list's one field that may be redacted: the scheduling request's note.
    if (redact.some((name) => name.toLowerCase() === 'note')) for (const job of page.jobs) if (job.note !== null) job.note = '[redacted]';
    return { status: 200, body: page };
  }
  if (parts.length === 1 && parts[0] === 'requests') return { status: 200, body: { routes: requestFiguresOf(scheduler) } };
  if (parts.length === 2 && parts[0] === 'jobs' && ID.test(parts[1]!)) {
    const job = await scheduler.admin.get(parts[1]!, { redact });
    return job ? { status: 200, body: job } : NOT_FOUND;
  }
  return NOT_FOUND;
}

type Action = Omit<DashboardAction, 'actor' | 'affected'>;

function actionOf(method: string, parts: string[], query: Record<string, unknown>): Action | undefined {
  const [kind, target, verb] = parts;
  if (kind === 'jobs' && method === 'DELETE' && parts.length === 2 && ID.test(target!)) return { action: 'remove', id: target };
  if (kind === 'jobs' && method === 'POST' && parts.length === 3 && ID.test(target!) && (verb === 'retry' || verb === 'run-now')) return { action: verb, id: target };
  if (kind === 'jobs' && method === 'POST' && parts.length === 2 && (target === 'retry' || target === 'delete')) {
    return { action: target === 'retry' ? 'retry-all' : 'delete-all', filter: bulkFilterOf(query) };
  }
  if (kind === 'queues' && method === 'POST' && parts.length === 3 && (verb === 'pause' || verb === 'resume')) return { action: verb, queue: segment(target) };
  return undefined;
}

async function act(scheduler: PersistentTransactionalScheduler, action: Action): Promise<number> {
  switch (action.action) {
    case 'remove':
      if (!(await scheduler.admin.get(action.id!))) return 0;
      await scheduler.remove(action.id!);
      return 1;
    case 'retry':
      return scheduler.admin.retry(action.id!);
    case 'run-now':
      return scheduler.admin.runNow(action.id!);
    case 'retry-all':
      return scheduler.admin.retryAll(action.filter);
    case 'delete-all':
      return scheduler.admin.removeAll(action.filter);
    case 'pause':
      await scheduler.admin.pauseQueue(action.queue!);
      return 1;
    case 'resume':
      await scheduler.admin.resumeQueue(action.queue!);
      return 1;
  }
}
