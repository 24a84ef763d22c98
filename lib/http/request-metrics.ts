/**
 * This process's request counters by route, fed by aftercommit() of both
 * adapters (through guard.ts) and read by metricsRoute() and the jobs
 * dashboard: requests, requests retried, their conflicts by kind, escalated
 * retries, retries exhausted (503) and retries refused as unsafe.
 *
 * One registry per TransactionManager (a WeakMap here, so the manager knows
 * nothing of HTTP): the guard, the dashboard and metricsRoute reach the same one
 * through the manager they share (the scheduler's `manager`). Counting costs a
 * Map lookup per request; a request's retries are tallied on its guard record
 * until it ends, when its route is known. Routes are the router's templates,
 * never raw URLs, and at most ROUTE_CAP of them are kept apart: past that, new
 * ones are counted under `(other)`.
 */
import type { RetryEvent } from '../interfaces.js';
import type { TransactionManager } from '../transactions/manager.js';
import type { ConflictKind, RouteRequestMetrics } from './interfaces.js';
import { PreemptedError, TransactionDoomedError, TransientError } from '../errors.js';
import { errorField } from '../support/error-field.js';
import { RetriesExhaustedError, RetryNotSafeError } from './errors.js';

/** The kinds of conflict told apart, in the order of a tally's `conflicts`. */
export const CONFLICT_KINDS: readonly ConflictKind[] = ['deadlock', 'serialization', 'lock_wait_timeout', 'busy', 'preempted', 'application', 'other'];
const KIND_INDEX: Readonly<Record<ConflictKind, number>> = Object.fromEntries(CONFLICT_KINDS.map((kind, i) => [kind, i])) as Record<ConflictKind, number>;

/** The route of a request that matched no route template (or whose `route` option gave none). */
export const UNMATCHED = '(unmatched)';
/** Where requests of routes past the cap are counted. */
export const OTHER = '(other)';
/** How many routes are counted apart (besides `(unmatched)` and `(other)`). */
export const ROUTE_CAP = 200;

/** The kind of a transient error, for the `kind` label: a fixed set, whatever the error. */
export function conflictKind(err: unknown): ConflictKind {
  const error = err instanceof TransactionDoomedError ? err.cause : err; // a statement after the rollback: what rolled it back
  if (error instanceof PreemptedError) return 'preempted';
  if (error instanceof TransientError) return 'application'; // ConflictError or the app's own TransientError
  const errno = errorField(error, 'errno');
  const code = errorField(error, 'code');
  if (errno === 1213 || code === '40P01') return 'deadlock'; // ER_LOCK_DEADLOCK (SQLSTATE 40001 too), deadlock_detected
  if (errno === 1205) return 'lock_wait_timeout'; // ER_LOCK_WAIT_TIMEOUT, with retryLockWaitTimeout
  if (typeof code === 'string' && code.startsWith('SQLITE_BUSY')) return 'busy';
  if (code === '40001' || errno === 1020 || errorField(error, 'sqlState') === '40001') return 'serialization'; // serialization_failure, ER_CHECKREAD
  return 'other';
}

/** What a request's guard record tallies of its retries until the request ends. */
export interface RetryTally {
  /** Retries so far. */
  retries: number;
  /** Of those, the retries that ran escalated. */
  escalations: number;
  /** Conflicts by CONFLICT_KINDS index; created with the first retry. */
  conflicts: number[] | undefined;
}

function tallyConflict(tally: RetryTally, err: unknown): void {
  (tally.conflicts ??= CONFLICT_KINDS.map(() => 0))[KIND_INDEX[conflictKind(err)]]!++;
}

/** Notes a retry of a request (from its onRetry). */
export function noteRetry(tally: RetryTally, event: RetryEvent): void {
  tally.retries++;
  if (event.escalated) tally.escalations++;
  tallyConflict(tally, event.error);
}

interface RouteCounters {
  requests: number;
  retried: number;
  escalations: number;
  exhausted: number;
  notRetrySafe: number;
  /** By CONFLICT_KINDS index. */
  readonly conflicts: number[];
}

/** The request counters of one TransactionManager's requests, by route. */
export class RequestMetrics {
  private readonly routes = new Map<string, RouteCounters>();
  /** Routes counted apart so far (besides UNMATCHED and OTHER). */
  private named = 0;

  constructor(private readonly cap = ROUTE_CAP) {}

  /**
   * Counts a request that ended, under `route` (a template, UNMATCHED, …);
   * `failure` is what its client got when it failed (RetriesExhaustedError,
   * RetryNotSafeError, …), undefined when it succeeded. Its tally is added.
   */
  count(route: string, tally: RetryTally, failed: boolean, failure: unknown): void {
    const counters = this.routes.get(route) ?? this.add(route);
    counters.requests++;
    if (tally.retries > 0) {
      counters.retried++;
      counters.escalations += tally.escalations;
    }
    if (failed) {
      if (failure instanceof RetriesExhaustedError) {
        counters.exhausted++;
        tallyConflict(tally, failure.cause); // the conflict that ended the last attempt
      } else if (failure instanceof RetryNotSafeError) counters.notRetrySafe++;
    }
    const conflicts = tally.conflicts;
    if (conflicts !== undefined) for (let i = 0; i < conflicts.length; i++) counters.conflicts[i]! += conflicts[i]!;
  }

  private add(route: string): RouteCounters {
    if (route !== OTHER && route !== UNMATCHED) {
      if (this.named >= this.cap) return this.routes.get(OTHER) ?? this.add(OTHER);
      this.named++;
    }
    const counters: RouteCounters = { requests: 0, retried: 0, escalations: 0, exhausted: 0, notRetrySafe: 0, conflicts: CONFLICT_KINDS.map(() => 0) };
    this.routes.set(route, counters);
    return counters;
  }

  /** The counters of every route, in the order routes were first seen. */
  snapshot(): RouteRequestMetrics[] {
    return [...this.routes].map(([route, c]) => ({
      route,
      requests: c.requests,
      retried: c.retried,
      conflicts: Object.fromEntries(CONFLICT_KINDS.map((kind, i) => [kind, c.conflicts[i]!])) as Record<ConflictKind, number>,
      escalations: c.escalations,
      exhausted: c.exhausted,
      notRetrySafe: c.notRetrySafe,
    }));
  }
}

const registries = new WeakMap<TransactionManager, RequestMetrics>();

/** The request counters of `manager`'s requests, created with the first aftercommit() (or reader) that asks. */
export function requestMetricsOf(manager: TransactionManager): RequestMetrics {
  let metrics = registries.get(manager);
  if (!metrics) registries.set(manager, (metrics = new RequestMetrics()));
  return metrics;
}

/** The per-route figures for a scheduler's manager (what metricsRoute and the dashboard are given); [] when it has none. */
export function requestFiguresOf(scheduler: unknown): RouteRequestMetrics[] {
  const manager = (scheduler as { manager?: unknown } | null | undefined)?.manager;
  return typeof manager === 'object' && manager !== null ? requestMetricsOf(manager as TransactionManager).snapshot() : [];
}

/** The label of a request's route: the template `route` gives, UNMATCHED for none. */
export function routeLabel(template: unknown): string {
  if (typeof template === 'string') return template === '' ? UNMATCHED : template;
  return template instanceof RegExp || Array.isArray(template) ? String(template) : UNMATCHED;
}
