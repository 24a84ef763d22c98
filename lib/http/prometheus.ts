/**
 * `scheduler.metrics()` in Prometheus's text format (version 0.0.4), and the
 * options and rule of the `metricsRoute()` of both adapters.
 */
import type { DurationHistogram, SchedulerMetrics } from '../interfaces.js';
import type { MetricsRouteOptions, RouteRequestMetrics } from './interfaces.js';
import { CONFLICT_KINDS } from './request-metrics.js';

/** A label value as the format quotes it. */
function quoted(value: string): string {
  return `"${value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')}"`;
}

function labels(pairs: Record<string, string>): string {
  return `{${Object.entries(pairs)
    .map(([name, value]) => `${name}=${quoted(value)}`)
    .join(',')}}`;
}

function histogram(lines: string[], name: string, queue: string, { bounds, counts, count, sumMs }: DurationHistogram): void {
  bounds.forEach((bound, i) => lines.push(`${name}_bucket${labels({ queue, le: String(bound / 1000) })} ${counts[i]}`));
  lines.push(`${name}_bucket${labels({ queue, le: '+Inf' })} ${count}`, `${name}_sum${labels({ queue })} ${sumMs / 1000}`, `${name}_count${labels({ queue })} ${count}`);
}

/**
 * The metrics as Prometheus text: gauges of unfinished jobs by queue and state,
 * this process's counters and histograms by queue, and this process's request
 * counters by route (`requests`, request-metrics.ts).
 */
export function prometheusText({ queues, runs }: SchedulerMetrics, requests: readonly RouteRequestMetrics[] = []): string {
  const lines: string[] = [];
  const family = (name: string, type: 'gauge' | 'counter' | 'histogram', help: string) => lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);

  family('aftercommit_jobs', 'gauge', 'Unfinished jobs by queue and state.');
  for (const [queue, gauges] of Object.entries(queues)) {
    for (const state of ['waiting', 'pending', 'running'] as const) lines.push(`aftercommit_jobs${labels({ queue, state })} ${gauges[state]}`);
  }
  family('aftercommit_oldest_due_seconds', 'gauge', 'Seconds since the longest-waiting due pending job of the queue became due (0: none due).');
  for (const [queue, { oldestDueMs }] of Object.entries(queues)) lines.push(`aftercommit_oldest_due_seconds${labels({ queue })} ${(oldestDueMs ?? 0) / 1000}`);

  family('aftercommit_jobs_finished_total', 'counter', 'Jobs this process finished, by queue and outcome.');
  for (const [queue, run] of Object.entries(runs)) {
    lines.push(`aftercommit_jobs_finished_total${labels({ queue, outcome: 'done' })} ${run.done}`);
    lines.push(`aftercommit_jobs_finished_total${labels({ queue, outcome: 'failed' })} ${run.failed}`);
  }
  family('aftercommit_job_retries_total', 'counter', 'Runs of this process that went again (a transient error, or a failed run re-queued).');
  for (const [queue, run] of Object.entries(runs)) lines.push(`aftercommit_job_retries_total${labels({ queue })} ${run.retried}`);
  family('aftercommit_lost_leases_total', 'counter', 'Runs of this process whose claim was taken over or whose schedule was removed.');
  for (const [queue, run] of Object.entries(runs)) lines.push(`aftercommit_lost_leases_total${labels({ queue })} ${run.lostLeases}`);

  family('aftercommit_job_start_delay_seconds', 'histogram', 'From the moment a job was due to the start of its run (the claim latency).');
  for (const [queue, run] of Object.entries(runs)) histogram(lines, 'aftercommit_job_start_delay_seconds', queue, run.startDelay);
  family('aftercommit_job_run_seconds', 'histogram', 'From the start of a run to its commit, for runs that committed.');
  for (const [queue, run] of Object.entries(runs)) histogram(lines, 'aftercommit_job_run_seconds', queue, run.runTime);

  const perRoute = (name: string, help: string, value: (figures: RouteRequestMetrics) => number) => {
    family(name, 'counter', help);
    for (const figures of requests) lines.push(`${name}${labels({ route: figures.route })} ${value(figures)}`);
  };
  perRoute('aftercommit_requests_total', 'Requests guarded by aftercommit in this process that ended, by route template.', (r) => r.requests);
  perRoute('aftercommit_requests_retried_total', 'Requests of this process that needed more than one attempt, by route template.', (r) => r.retried);
  family('aftercommit_request_conflicts_total', 'counter', 'Transient errors that ended an attempt of a request of this process, by route template and kind.');
  for (const { route, conflicts } of requests) {
    for (const kind of CONFLICT_KINDS) if (conflicts[kind] > 0) lines.push(`aftercommit_request_conflicts_total${labels({ route, kind })} ${conflicts[kind]}`);
  }
  perRoute('aftercommit_request_escalations_total', 'Retries of requests of this process that ran escalated (alone), by route template.', (r) => r.escalations);
  perRoute('aftercommit_requests_exhausted_total', 'Requests of this process whose retries ran out (answered 503), by route template.', (r) => r.exhausted);
  perRoute('aftercommit_requests_not_retry_safe_total', 'Requests of this process refused a retry that was not safe (RetryNotSafeError), by route template.', (r) => r.notRetrySafe);
  return `${lines.join('\n')}\n`;
}

/** The content type of the text format. */
export const PROMETHEUS_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** Checks the options where they enter; returns the path. */
export function metricsPath<R>(options: MetricsRouteOptions<R>, request: 'ctx' | 'req'): string {
  if (!options || typeof options.scheduler?.metrics !== 'function') throw new TypeError('metricsRoute(options): options.scheduler must be a scheduler');
  if (typeof options.authorize !== 'function') {
    throw new TypeError(
      `metricsRoute(options): options.authorize must be a function (${request}) => whether the request may read the metrics; give () => true to serve them to anyone`,
    );
  }
  const path = options.path ?? '/metrics';
  if (typeof path !== 'string' || !path.startsWith('/')) throw new TypeError(`metricsRoute(options): options.path must start with /, got ${JSON.stringify(path)}`);
  return path;
}
