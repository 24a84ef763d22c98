/**
 * What aftercommit() does the same way for Koa and Express: reading and checking
 * its options, the `db` and `scheduler` getters on the framework's request
 * object, and turning the error a request's transaction ended with into the one
 * its client gets.
 */
import type { Scheduler, Transaction } from '../interfaces.js';
import type { TransactionManager } from '../transactions/manager.js';
import type { GuardOptions } from './interfaces.js';
import { DatabaseUnavailableError, NoSchedulerError, RequestTimeoutError, RetriesExhaustedError, RetryNotSafeError } from './errors.js';
import { TransactionEndedError } from '../errors.js';
import { RequestWatch } from './request-watch.js';
import { requestMetricsOf, routeLabel, UNMATCHED, type RequestMetrics, type RetryTally } from './request-metrics.js';
import { integerIn } from '../support/validate.js';

/** An HTTP header name (RFC 9110 token). */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** The options of one aftercommit(), checked, with their defaults. */
export interface GuardSettings<R> {
  readonly manager: TransactionManager;
  readonly scheduler: Scheduler | undefined;
  readonly user: ((request: R) => unknown) | undefined;
  readonly metadata: GuardOptions<R>['metadata'];
  readonly requestIdHeader: string;
  readonly retryAfter: number;
  readonly watchClient: boolean;
  /** The requests of this aftercommit() in flight, ended at their timeout or when their client goes away. */
  readonly requests: RequestWatch;
  /** `persistentContext` of the requests (`where` names it in the error without a scheduler). */
  readonly persistentContext: (positional?: readonly unknown[], named?: Readonly<Record<string, unknown>>) => ReturnType<Scheduler['context']>;
  /** The request counters of the manager's requests, and the route template a request is counted under. */
  readonly metrics: RequestMetrics;
  readonly route: (request: R) => unknown;
}

/**
 * Checks the options both adapters share. `request` names what the option
 * functions are given (`ctx`, `req`), `guarded` what aftercommit guards
 * (`middleware`, `handlers`), both for the error messages.
 */
export function guardSettings<R>(
  options: GuardOptions<R>,
  request: 'ctx' | 'req',
  guarded: string,
  defaultRoute: GuardSettings<R>['route'],
): GuardSettings<R> {
  const { manager, scheduler, user, metadata, route } = options;
  if (!manager || typeof manager.run !== 'function') {
    throw new TypeError(`aftercommit(options, ...${guarded}): options.manager must be a TransactionManager`);
  }
  if (user !== undefined && typeof user !== 'function') {
    throw new TypeError(`aftercommit(options): options.user must be a function (${request}) => the id of the request’s user`);
  }
  if (metadata !== undefined && typeof metadata !== 'function') {
    throw new TypeError(`aftercommit(options): options.metadata must be a function (${request}) => the request’s transaction metadata`);
  }
  if (route !== undefined && typeof route !== 'function') {
    throw new TypeError(`aftercommit(options): options.route must be a function (${request}) => the template of the request’s route (e.g. /accounts/:id), or undefined`);
  }
  if (user && metadata) throw new TypeError('aftercommit(options): give user or metadata, not both (metadata sets user itself)');
  const requestIdHeader = options.requestIdHeader ?? 'X-Request-Id';
  if (typeof requestIdHeader !== 'string' || !HEADER_NAME.test(requestIdHeader)) {
    throw new TypeError(`aftercommit(options): options.requestIdHeader must be an HTTP header name, got ${JSON.stringify(requestIdHeader)}`);
  }
  const timeout = integerIn(options.timeout ?? 30_000, 'aftercommit(options): timeout', 0);
  const watchClient = options.commitWhenClientGone !== true;
  return {
    manager,
    scheduler,
    user,
    metadata,
    requestIdHeader,
    retryAfter: integerIn(options.retryAfter ?? 1, 'aftercommit(options): retryAfter', 0),
    watchClient,
    requests: new RequestWatch(timeout, watchClient),
    persistentContext: (positional, named) => {
      if (!scheduler) throw new NoSchedulerError(`${request}.persistentContext`);
      return scheduler.context(positional, named);
    },
    metrics: requestMetricsOf(manager),
    route: route ?? defaultRoute,
  };
}

/** What a request's aftercommit() gave it: its transaction (the current attempt's), its scheduler, its manager; and its retries so far, for the request metrics. */
export interface RequestGuard extends RetryTally {
  transaction: Transaction | undefined;
  readonly scheduler: Scheduler | undefined;
  readonly manager: TransactionManager;
  readonly persistentContext: GuardSettings<unknown>['persistentContext'];
  /** True for an aftercommit() nested in another of the same request: the outer one counts the request. */
  readonly nested: boolean;
}

/** Where a framework keeps each request's guard. */
export interface GuardPlace {
  get(request: object): RequestGuard | undefined;
  set(request: object, guard: RequestGuard): void;
}

const GUARD = Symbol('aftercommit: the request’s guard');

/** On the request object itself: for Koa, whose contexts share one shape, so a property added to each is cheap. */
export const ON_THE_REQUEST: GuardPlace = {
  get: (request) => (request as { [GUARD]?: RequestGuard })[GUARD],
  set: (request, guard) => {
    (request as { [GUARD]?: RequestGuard })[GUARD] = guard;
  },
};

/** Beside the request: for Express, which gives each `req` a shape of its own, so every property added to one costs V8 a new shape. */
export function besideTheRequest(): GuardPlace {
  const guards = new WeakMap<object, RequestGuard>();
  return { get: (request) => guards.get(request), set: (request, guard) => void guards.set(request, guard) };
}

/** Starts guarding `request` (the innermost aftercommit() wins, as with nested transactions). */
export function guard(place: GuardPlace, request: object, settings: GuardSettings<never>): RequestGuard {
  const entry: RequestGuard = {
    nested: place.get(request) !== undefined,
    transaction: undefined,
    scheduler: settings.scheduler,
    manager: settings.manager,
    persistentContext: settings.persistentContext,
    retries: 0,
    escalations: 0,
    conflicts: undefined,
  };
  place.set(request, entry);
  return entry;
}

/** Prototypes that already have the getters. */
const withGetters = new WeakSet<object>();

/**
 * `transaction`, `db`, `scheduler` and `persistentContext` are getters on a
 * prototype of the framework's request objects (defined once, not per request),
 * reading the request's guard from `place`. On a request that never entered
 * aftercommit they are undefined, as the frameworks' types declare them.
 */
export function defineGetters(proto: object, name: 'ctx' | 'req', place: GuardPlace): void {
  if (withGetters.has(proto)) return;
  withGetters.add(proto);
  Object.defineProperties(proto, {
    transaction: {
      configurable: true,
      get(this: object) {
        return place.get(this)?.transaction;
      },
    },
    db: {
      configurable: true,
      get(this: object) {
        const guard = place.get(this);
        const transaction = guard?.transaction;
        if (!guard || !transaction) return undefined;
        // Read from the async context of an attempt that was given up (retried, timed out), the request's current one is not its own.
        const inContext = guard.manager.attemptInContext();
        if (inContext && inContext !== transaction) throw new TransactionEndedError(`${name}.db in an attempt of the request that was given up`);
        if (!transaction.isOpen) throw new TransactionEndedError(`${name}.db after the request’s commit`);
        return transaction.db;
      },
    },
    scheduler: {
      configurable: true,
      get(this: object) {
        const guard = place.get(this);
        if (guard && !guard.scheduler) throw new NoSchedulerError(`${name}.scheduler`);
        return guard?.scheduler;
      },
    },
    persistentContext: {
      configurable: true,
      get(this: object) {
        return place.get(this)?.persistentContext;
      },
    },
  });
}

/**
 * The error a request's client gets for the one its transaction ended with, the
 * failure logged: transient errors past the retries become RetriesExhaustedError,
 * a database that cannot be reached DatabaseUnavailableError (both 503 with
 * Retry-After); others stay as they are.
 */
export function requestFailure(
  { manager, retryAfter }: Pick<GuardSettings<never>, 'manager' | 'retryAfter'>,
  err: unknown,
  line: string,
  requestId: string,
  attempts: number,
): unknown {
  if (err instanceof RetryNotSafeError || err instanceof RequestTimeoutError) {
    manager.logger.error({ err, requestId }, `${line}: ${err.message}`);
  } else if (manager.isTransient(err)) {
    manager.logger.error({ err, requestId, attempts }, `${line}: giving up after ${attempts} attempts`);
    return new RetriesExhaustedError(attempts, retryAfter, err);
  } else if (manager.isUnavailable(err)) {
    manager.logger.error({ err, requestId }, `${line}: the database is unavailable`);
    return new DatabaseUnavailableError(retryAfter, err);
  }
  return err;
}

/**
 * Counts a request that ended in the request metrics, under its route's
 * template: `failure` is what its client gets (requestFailure's answer) when
 * `failed`. Never throws: a `route` option that does is logged, and the request
 * counted as unmatched.
 */
export function requestEnded<R>(settings: GuardSettings<R>, guarded: RequestGuard, request: R, failed: boolean, failure?: unknown): void {
  if (guarded.nested) return;
  let route: string;
  try {
    route = routeLabel(settings.route(request));
  } catch (err) {
    settings.manager.logger.error({ err }, 'aftercommit(options): the route option threw; the request is counted as (unmatched)');
    route = UNMATCHED;
  }
  settings.metrics.count(route, guarded, failed, failure);
}
