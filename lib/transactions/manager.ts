/**
 * TransactionManager: runs functions in transactions, retries them on transient
 * errors, and lets nested calls join the transaction current in their async
 * context.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { Knex } from 'knex';
import type {
  Clock,
  ContentionStats,
  ContextBridge,
  IsolationLevel,
  Logger,
  RetryEvent,
  RunOptions,
  Transaction,
  TransactionManagerOptions,
  TransactionMeta,
} from '../interfaces.js';
import { dialectOf, type Dialect } from '../dialects/index.js';
import { ContentionTimeoutError, PreemptedError, TransientError, describeCause } from '../errors.js';
import { systemClock } from '../support/clock.js';
import { defaultLogger } from '../support/logger.js';
import { integerIn } from '../support/validate.js';
import { AttemptSpan } from '../support/tracing.js';
import { delayPolicy, retryDelay, type DelayPolicy } from './backoff.js';
import { TransactionAttempt, type AttemptEnvironment } from './transaction.js';
import { knexBinder, poolLimits } from './knex-internals.js';
import { ContentionGate } from './contention-gate.js';
import type { ContentionEnvironment } from './contention-hold.js';
import { LockWaitPreemption } from './preemption.js';
import { RUN_STOPPER, RunStopper } from './run-stopper.js';

/** RunOptions as adapters inside the package may give them. */
export type InternalRunOptions = RunOptions & { [RUN_STOPPER]?: RunStopper };

type RetryListener = (event: RetryEvent) => void;

const ISOLATION_LEVELS: readonly IsolationLevel[] = ['read committed', 'repeatable read', 'serializable'];

/** The level goes into the BEGIN statement's text: only the documented ones pass. */
function checkIsolationLevel(level: unknown): IsolationLevel | undefined {
  if (level === undefined || ISOLATION_LEVELS.includes(level as IsolationLevel)) return level as IsolationLevel | undefined;
  throw new TypeError(`RunOptions.isolationLevel must be one of ${ISOLATION_LEVELS.map((l) => `'${l}'`).join(', ')}, got ${JSON.stringify(level)}`);
}

function checkEscalate(escalate: unknown, where: string): boolean | undefined {
  if (escalate !== undefined && typeof escalate !== 'boolean') throw new TypeError(`${where} must be true or false, got ${String(escalate)}`);
  return escalate;
}

const prepare = (tx: TransactionAttempt) => tx.prepare();

/**
 * `work`'s result, unless the call is stopped first: then `tx` is ended from
 * outside and this rejects with the reason, without waiting for `work`.
 */
function unlessStopped<T>(stopper: RunStopper, tx: TransactionAttempt, work: T | Promise<T>): Promise<T> {
  if (stopper.reason) return Promise.reject(stopper.reason);
  return new Promise<T>((resolve, reject) => {
    stopper.listen((reason) => void tx.terminate(reason).then(() => reject(reason)));
    Promise.resolve(work).then(
      (value) => {
        stopper.listen(undefined);
        resolve(value);
      },
      (err: unknown) => {
        stopper.listen(undefined);
        reject(err);
      },
    );
  });
}

/** What `tm.outside(fn)` leaves in the async context: no current transaction, but who started `fn`. */
class OutsideOf {
  constructor(readonly attempt: TransactionAttempt) {}
}

function mergeMeta(base: TransactionMeta | undefined, own: TransactionMeta | undefined, name: string): TransactionMeta {
  if (!base && own?.note !== undefined) return own; // the common case (a request's metadata): nothing to merge
  const meta: TransactionMeta = { ...base, ...own };
  if (base?.extension || own?.extension) meta.extension = { ...base?.extension, ...own?.extension };
  if (meta.note === undefined && name) meta.note = name;
  return meta;
}

export class TransactionManager {
  /** The knex instance transactions are taken from. */
  readonly knex: Knex;
  /** The database family of `knex`. */
  readonly dialect: Dialect;
  readonly logger: Logger;
  /** The time source used for retry delays (and by schedulers built on this manager). */
  readonly clock: Clock;
  private readonly retries: number;
  private readonly delay: DelayPolicy;
  /** Source of randomness for retry delays (the `random` option); workers use it for re-queue delays too. */
  readonly random: () => number;
  private readonly options: TransactionManagerOptions;
  /** The attempt current in an async context, or where `outside()` left one. */
  private readonly storage = new AsyncLocalStorage<TransactionAttempt | OutsideOf>();
  private readonly bridge: ContextBridge | undefined;
  private readonly retryListeners = new Set<RetryListener>();
  /** What each attempt needs from its manager. */
  private readonly environment: AttemptEnvironment;
  /** Where attempts take turns once they collide; undefined when `escalate` is off. */
  private readonly contentionEnvironment: ContentionEnvironment | undefined;

  constructor(knex: Knex, options: TransactionManagerOptions = {}) {
    if (typeof knex !== 'function' || !knex.client) {
      throw new TypeError('new TransactionManager(knex, options) needs a knex instance as its first argument');
    }
    this.knex = knex;
    this.dialect = dialectOf(knex);
    this.options = options;
    this.retries = integerIn(options.retries ?? 3, 'retries', 0);
    this.delay = delayPolicy(options.delay);
    this.logger = options.logger ?? defaultLogger();
    this.clock = options.clock ?? systemClock;
    this.random = options.random ?? Math.random;
    this.bridge = options.bridge;
    if (checkEscalate(options.escalate, 'escalate') !== false) this.contentionEnvironment = this.contentionHandling(knex);
    this.environment = {
      knex,
      dialect: this.dialect,
      logger: this.logger,
      isTransient: (err) => this.isTransient(err),
      bindDb: knexBinder(knex),
      contention: this.contentionEnvironment,
    };
  }

  private contentionHandling(knex: Knex): ContentionEnvironment {
    const pool = poolLimits(knex);
    const gate = new ContentionGate(pool.size, pool.acquireTimeoutMs, this.clock);
    const cancel = this.dialect.lockWaitCancel;
    const urgency = () => (gate.escalatedWaiting ? 'at once' : gate.contended ? 'after a while' : undefined);
    const preemption = cancel && new LockWaitPreemption(knex, cancel, this.logger, urgency);
    return { knex, dialect: this.dialect, logger: this.logger, gate, preemption };
  }

  /** How attempts took turns under contention so far; undefined when `escalate` is off. */
  get contention(): ContentionStats | undefined {
    const contention = this.contentionEnvironment;
    return contention && { ...contention.gate.snapshot(), preempted: contention.preemption?.cancelled ?? 0 };
  }

  /** The open transaction of this manager in the calling async context, or undefined. */
  get current(): Transaction | undefined {
    const tx = this.storage.getStore();
    return tx instanceof TransactionAttempt && tx.isOpen ? tx : undefined;
  }

  /** @internal The attempt whose async context this is, open or ended (the Express adapter tells a given-up attempt's late writes by it). */
  attemptInContext(): Transaction | undefined {
    const store = this.storage.getStore();
    return store instanceof TransactionAttempt ? store : undefined;
  }

  /** True for errors after which the whole transaction should be run again. */
  isTransient(err: unknown): boolean {
    return (
      err instanceof TransientError ||
      this.dialect.isTransient(err, { retryLockWaitTimeout: this.options.retryLockWaitTimeout ?? false })
    );
  }

  /**
   * True when `err` means the database cannot be reached now: connection refused
   * or lost, the server shutting down, or no pool connection within knex's
   * acquire timeout. Not retried (that would only hold the caller longer);
   * the HTTP adapters answer 503.
   */
  isUnavailable(err: unknown): boolean {
    return (
      this.dialect.isUnavailable(err) ||
      err instanceof ContentionTimeoutError ||
      (err instanceof Error && err.name === 'KnexTimeoutError')
    );
  }

  /**
   * Runs `fn` outside any transaction of this manager: for background work
   * started from inside a transaction (a worker, a timer) that must not join it.
   */
  outside<T>(fn: () => T): T {
    const store = this.storage.getStore();
    const attempt = store instanceof OutsideOf ? store.attempt : store;
    return attempt ? this.storage.run(new OutsideOf(attempt), fn) : this.storage.exit(fn);
  }

  /** Calls `listener` before each retry; returns a function that removes it. */
  onRetry(listener: RetryListener): () => void {
    this.retryListeners.add(listener);
    return () => this.retryListeners.delete(listener);
  }

  /**
   * Runs `fn` in a transaction and resolves to its result once committed. Inside
   * an open transaction of this manager, `fn` joins it instead.
   */
  async run<T>(fn: (tx: Transaction) => T | Promise<T>, options: RunOptions = {}): Promise<T> {
    const store = this.storage.getStore();
    if (store instanceof TransactionAttempt && store.isOpen) return fn(store);
    const startedBy = store instanceof OutsideOf ? store.attempt : undefined;

    const name = options.name ?? fn.name;
    const retries = options.retries === undefined ? this.retries : integerIn(options.retries, 'RunOptions.retries', 0);
    const gate = checkEscalate(options.escalate, 'RunOptions.escalate') === false ? undefined : this.contentionEnvironment?.gate;
    const isolationLevel = checkIsolationLevel(options.isolationLevel);
    const stopper = (options as InternalRunOptions)[RUN_STOPPER] ?? (options.signal && RunStopper.of(options.signal));
    if (stopper?.reason) throw stopper.reason;
    let escalated = false;
    for (let attempt = 1; ; attempt++) {
      const turn = gate ? (escalated ? 'escalated' : 'shared') : undefined;
      const meta = mergeMeta(this.options.metadata?.(), options.metadata, name);
      const span = AttemptSpan.start(name, attempt, turn === 'escalated');
      const tx = new TransactionAttempt(this.environment, attempt, meta, isolationLevel, turn, startedBy, span);
      try {
        // With a stopper, the function and its before-commit hooks can be ended from outside.
        const value = stopper ? await unlessStopped(stopper, tx, this.enter(tx, fn)) : await this.enter(tx, fn);
        // Before-commit hooks run inside the transaction's context too (nested calls join it).
        if (tx.hasWorkBeforeCommit) await (stopper ? unlessStopped(stopper, tx, this.enter(tx, prepare)) : this.enter(tx, prepare));
        const ending = tx.end('commit');
        if (ending) await ending;
        span?.end(tx.rollbackOnly ? 'rollback' : 'commit');
        return value;
      } catch (err) {
        if (tx.terminatedBy) {
          span?.end('rollback', tx.terminatedBy);
          throw tx.terminatedBy; // ended from outside: no other attempt
        }
        // A doomed attempt failed because of what rolled it back, whatever fn made of that.
        const conflict = this.isTransient(tx.doomedBy ?? err);
        const retry = attempt <= retries && conflict;
        if (!retry && this.options.debug) await this.callDebug(err, tx);
        await tx.end('rollback');
        span?.end(retry ? 'retry' : 'rollback', tx.doomedBy ?? err);
        if (conflict && gate) {
          escalated = retry;
          gate.conflict(retry);
        }
        // A preempted statement's own error (a cancel) says nothing of why: the preemption does.
        if (!retry) throw tx.doomedBy instanceof PreemptedError && !this.isTransient(err) ? tx.doomedBy : err;
        await this.pause(name, attempt, tx.doomedBy ?? err, retries, escalated, options.onRetry, options.signal);
        if (stopper?.reason) throw stopper.reason;
      }
    }
  }

  /** Returns `fn` wrapped so that each call runs in a transaction (or joins the current one). */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- any[] is what lets parameter types be inferred from `fn`
  wrap<F extends (...args: any[]) => unknown>(
    fn: F,
    options: RunOptions = {},
  ): (this: ThisParameterType<F>, ...args: Parameters<F>) => Promise<Awaited<ReturnType<F>>> {
    const manager = this;
    const runOptions = { ...options, name: options.name ?? fn.name };
    return function transactional(this: ThisParameterType<F>, ...args: Parameters<F>) {
      return manager.run(() => fn.apply(this, args), runOptions) as Promise<Awaited<ReturnType<F>>>;
    };
  }

  /** Calls fn(tx) with tx as the current transaction (and mirrored into the bridge, if any), and its span active when traced. */
  private enter<T>(tx: TransactionAttempt, fn: (tx: TransactionAttempt) => T | Promise<T>): T | Promise<T> {
    if (tx.span) return tx.span.within(() => this.enterUntraced(tx, fn));
    return this.enterUntraced(tx, fn);
  }

  private enterUntraced<T>(tx: TransactionAttempt, fn: (tx: TransactionAttempt) => T | Promise<T>): T | Promise<T> {
    const bridge = this.bridge;
    return bridge ? this.storage.run(tx, () => bridge.run(tx, async () => fn(tx))) : this.storage.run(tx, fn, tx);
  }

  private async callDebug(err: unknown, tx: TransactionAttempt): Promise<void> {
    try {
      await this.storage.run(tx, () => this.options.debug!(err, tx));
    } catch (debugErr) {
      this.logger.error({ err: debugErr }, 'the debug function failed; the transaction is rolled back anyway');
    }
  }

  private async pause(
    name: string,
    attempt: number,
    error: unknown,
    retries: number,
    escalated: boolean,
    onRetry: RetryListener | undefined,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    // An escalated attempt waits for its turn instead of a random delay.
    const delay = escalated ? 0 : retryDelay(attempt, this.delay, this.random);
    const label = name || 'anonymous function';
    const how = escalated ? 'escalated: it runs alone' : `in ${Math.round(delay)} ms`;
    this.logger.warn(
      { err: error, fn: label, attempt, retries, delay, escalated },
      `retrying ${label} after ${describeCause(error)} (attempt ${attempt + 1} of ${retries + 1}, ${how})`,
    );
    const event = { name: label, attempt, error, delay, escalated };
    for (const listener of this.retryListeners) listener(event);
    onRetry?.(event);
    if (!escalated) await this.clock.sleep(delay, signal);
  }
}
