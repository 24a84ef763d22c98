/** Validation and merging of job options (defaults from define(), overrides from with()). */
import type { JobOptions, JobSpec, RetryDelay } from '../../interfaces.js';
import { delayPolicy, type DelayPolicy } from '../../transactions/backoff.js';
import { INT_MAX, integerIn } from '../../support/validate.js';
import { StoredJobSpec, checkCallback } from '../specs.js';

export interface ResolvedJobOptions {
  runAt: number;
  priority: number;
  queue: string;
  maxAttempts: number;
  backoff: DelayPolicy;
  timeout: number | null;
  lease: number;
  dedupeKey: string | null;
  /** The callback specs, stored (JSON), or null. */
  callbacks: string | null;
  stopOnFailure: boolean;
  concurrencyKey: string | null;
}

const DEFAULT_BACKOFF: RetryDelay = { initial: 1000, factor: 2, max: 3_600_000 };
/** A queue's name, as the jobs table keeps it. */
export const QUEUE = /^[A-Za-z0-9_.:-]{1,64}$/;

/** The last moment a Date can hold: run times beyond it cannot be stored or compared. */
const LAST_DATE_MS = 8.64e15;

/**
 * A job's backoff: its delays are added to the clock and stored as the next run
 * time, so every bound must be a finite number of ms a timer can wait.
 */
function checkBackoff(backoff: RetryDelay, what: string): void {
  if (typeof backoff !== 'object' || backoff === null) throw new TypeError(`${what} must be { initial?, factor?, max? }, got ${String(backoff)}`);
  const policy = delayPolicy(backoff);
  integerIn(policy.initial, `${what}.initial`, 0);
  integerIn(policy.max, `${what}.max`, 0);
  if (!(policy.factor <= 1000)) throw new TypeError(`${what}.factor must be from 1 to 1000, got ${policy.factor}`);
}

/** Checks options given to define() or with(), so mistakes surface where they are made. */
export function checkJobOptions(scheduler: object, options: JobOptions, where: string): JobOptions {
  const at = (field: string) => `${where}: ${field}`;
  if (options.runAt !== undefined && options.delay !== undefined) throw new TypeError(`${where}: give runAt or delay, not both`);
  if (options.runAt !== undefined) {
    const time = options.runAt instanceof Date ? options.runAt.getTime() : options.runAt;
    if (typeof time !== 'number' || !(time >= 0 && time <= LAST_DATE_MS)) {
      throw new TypeError(`${at('runAt')} must be a valid Date or ms since the epoch (from 0 to ${LAST_DATE_MS}), got ${String(options.runAt)}`);
    }
  }
  if (options.delay !== undefined) integerIn(options.delay, at('delay'), 0, LAST_DATE_MS - Date.now());
  if (options.priority !== undefined) integerIn(options.priority, at('priority'), -INT_MAX);
  if (options.queue !== undefined && !QUEUE.test(options.queue)) {
    throw new TypeError(`${at('queue')} must be 1-64 letters, digits, _ . : -, got ${JSON.stringify(options.queue)}`);
  }
  if (options.maxAttempts !== undefined) integerIn(options.maxAttempts, at('maxAttempts'), 1);
  if (options.backoff !== undefined) checkBackoff(options.backoff, at('backoff'));
  if (options.timeout !== undefined) integerIn(options.timeout, at('timeout'), 1);
  if (options.lease !== undefined) integerIn(options.lease, at('lease'), 100);
  if (options.dedupeKey !== undefined && (typeof options.dedupeKey !== 'string' || options.dedupeKey.length < 1 || options.dedupeKey.length > 191)) {
    throw new TypeError(`${at('dedupeKey')} must be a string of 1-191 characters`);
  }
  if (options.concurrencyKey !== undefined && (typeof options.concurrencyKey !== 'string' || options.concurrencyKey.length < 1 || options.concurrencyKey.length > 191)) {
    throw new TypeError(`${at('concurrencyKey')} must be a string of 1-191 characters`);
  }
  if (options.stopOnFailure !== undefined && typeof options.stopOnFailure !== 'boolean') {
    throw new TypeError(`${at('stopOnFailure')} must be true or false`);
  }
  checkCallback(scheduler, options.onSuccess, at('onSuccess'));
  checkCallback(scheduler, options.onFailure, at('onFailure'));
  return options;
}

/** The options `with()` may give a batch: when it starts, its callbacks, and (serial) whether a failure stops it. */
const BATCH_OPTIONS: Record<'serial' | 'parallel', readonly (keyof JobOptions)[]> = {
  serial: ['runAt', 'delay', 'onSuccess', 'onFailure', 'stopOnFailure'],
  parallel: ['runAt', 'delay', 'onSuccess', 'onFailure'],
};

/** Refuses options of `with()` that a batch of `kind` has no use for (they belong to its steps' jobs). */
export function checkBatchOptions(kind: 'serial' | 'parallel', options: JobOptions): void {
  for (const key of Object.keys(options) as (keyof JobOptions)[]) {
    if (options[key] !== undefined && !BATCH_OPTIONS[kind].includes(key)) {
      throw new TypeError(`${kind}(...steps): ${key} is not an option of a ${kind} batch (it takes ${BATCH_OPTIONS[kind].join(', ')}); give it to define() of the steps' jobs`);
    }
  }
}

/** Refuses options of `with()` that only a batch has. */
export function checkJobOnlyOptions(options: JobOptions): void {
  if (options.stopOnFailure !== undefined) throw new TypeError('schedule(): stopOnFailure applies to a serial batch, not to a job');
}

/** The options a schedule runs with: per-schedule over per-job over the scheduler's defaults. */
export function resolveJobOptions(defined: JobOptions, given: JobOptions, defaultLease: number, now: number): ResolvedJobOptions {
  const o = { ...defined, ...given };
  const runAt = o.runAt instanceof Date ? o.runAt.getTime() : (o.runAt ?? now + (o.delay ?? 0));
  return {
    runAt,
    priority: o.priority ?? 0,
    queue: o.queue ?? 'default',
    maxAttempts: o.maxAttempts ?? 1,
    backoff: delayPolicy(o.backoff ?? DEFAULT_BACKOFF),
    timeout: o.timeout ?? null,
    lease: o.lease ?? defaultLease,
    dedupeKey: given.dedupeKey ?? null, // a dedupe key is per schedule, never a job default
    callbacks: storedCallbacks(o.onSuccess, o.onFailure),
    stopOnFailure: o.stopOnFailure ?? false,
    concurrencyKey: o.concurrencyKey ?? null,
  };
}

/** A stored callback: the job's name and its stored arguments. */
export interface StoredCallback {
  name: string;
  args: string;
}

function storedCallbacks(onSuccess: JobSpec | undefined, onFailure: JobSpec | undefined): string | null {
  if (!onSuccess && !onFailure) return null;
  const stored = (spec: JobSpec | undefined): StoredCallback | undefined =>
    spec instanceof StoredJobSpec ? { name: spec.name, args: spec.args } : undefined;
  return JSON.stringify({ onSuccess: stored(onSuccess), onFailure: stored(onFailure) });
}
