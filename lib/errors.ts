/**
 * Errors of `aftercommit`. Each has a stable `code` so callers can branch on it
 * without comparing messages.
 */

/**
 * The base of the errors `aftercommit` throws: `err instanceof AftercommitError`
 * tells them from the database's and the application's own.
 */
export abstract class AftercommitError extends Error {
  /** A machine-readable code that stays the same across releases and messages, e.g. `AFTERCOMMIT_CONFLICT`. */
  abstract readonly code: string;

  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    // The class's own name, e.g. `ConflictError`: stored failures and logs report it,
    // so the build must keep class names (a bundler may rename or wrap classes).
    this.name = new.target.name;
  }
}

/**
 * The transaction is gone and running it again may succeed. Throw it (or a
 * subclass) from application code to ask the transaction manager for a retry.
 */
export class TransientError extends AftercommitError {
  readonly code: string = 'AFTERCOMMIT_TRANSIENT';
  constructor(message = 'transient error: the transaction should be run again', options?: ErrorOptions) {
    super(message, options);
  }
}

/** A write conflict detected by the application (e.g. an optimistic version check). */
export class ConflictError extends TransientError {
  override readonly code: string = 'AFTERCOMMIT_CONFLICT';
  constructor(message = 'database conflict error', options?: ErrorOptions) {
    super(message, options);
  }
}

/**
 * A statement was attempted after the database had already rolled the
 * transaction back (deadlock, serialization failure). It never reached the
 * server; the attempt will be retried. `cause` is the error that rolled it back.
 */
export class TransactionDoomedError extends TransientError {
  override readonly code = 'AFTERCOMMIT_DOOMED';
  constructor(cause: unknown) {
    super(
      `the database already rolled this transaction back (${describeCause(cause)}); ` +
        'no further statement of this attempt is sent, and the whole function will be run again',
      { cause },
    );
  }
}

/**
 * A lock wait of this attempt was cancelled under contention (PostgreSQL): an
 * attempt retried after a conflict was waiting for it, or it had waited long
 * while the process saw conflicts. The attempt runs again, escalated; `cause` is
 * the driver's error for the cancelled statement.
 */
export class PreemptedError extends TransientError {
  override readonly code = 'AFTERCOMMIT_PREEMPTED';
  constructor(cause: unknown) {
    super('a lock wait of this transaction was cancelled under contention (it would have waited for a deadlock to be found); it runs again', { cause });
  }
}

/** The connection was lost while COMMIT was under way: the work may or may not be committed. */
export class CommitOutcomeUnknownError extends AftercommitError {
  readonly code = 'AFTERCOMMIT_COMMIT_OUTCOME_UNKNOWN';
  constructor(cause: unknown) {
    super(
      `the connection was lost during COMMIT (${describeCause(cause)}), so it is unknown whether ` +
        'the transaction committed; it is not retried. Check the data before repeating the work.',
      { cause },
    );
  }
}

/** COMMIT was answered with a rollback: a statement of the transaction had failed and the code went on (PostgreSQL). */
export class CommitRolledBackError extends AftercommitError {
  readonly code = 'AFTERCOMMIT_COMMIT_ROLLED_BACK';
  constructor() {
    super(
      'the database rolled the transaction back instead of committing it: one of its statements failed earlier ' +
        '(its error was caught and ignored), which aborts a PostgreSQL transaction. Use tx.db.transaction(fn) ' +
        '(a savepoint) around a statement whose failure you want to survive.',
    );
  }
}

/** A statement or hook was used on a transaction that has already ended. */
export class TransactionEndedError extends AftercommitError {
  readonly code = 'AFTERCOMMIT_TRANSACTION_ENDED';
  constructor(what: string) {
    super(
      `${what}: this transaction has already ended. Use tm.current (or ctx.transaction) inside ` +
        'tm.run() instead of keeping a transaction past its end.',
    );
  }
}

/**
 * An attempt waited longer than knex's `acquireConnectionTimeout` for its turn at
 * the database: under contention, attempts retried after conflicts run alone and
 * fewer ordinary ones are let in at once. Treated like an exhausted pool: the Koa
 * adaptation answers 503.
 */
export class ContentionTimeoutError extends AftercommitError {
  readonly code = 'AFTERCOMMIT_CONTENTION_TIMEOUT';
  constructor(readonly waitedMs: number) {
    super(
      `waited ${waitedMs} ms for a turn at the database while this process's transactions took turns after conflicts; ` +
        'look for a transaction that stays open long (a handler waiting while it holds row locks, or one that awaits ' +
        "a separate transaction of the same manager), or raise knex's acquireConnectionTimeout",
    );
  }
}

/** An operation that needs an open transaction was called outside one. */
export class NoTransactionError extends AftercommitError {
  readonly code = 'AFTERCOMMIT_NO_TRANSACTION';
  constructor(what: string) {
    super(`${what} needs an open transaction: call it inside tm.run(), a tm.wrap()ped function or a request guarded by aftercommit()`);
  }
}

/** A short label for an error: its code (or errno) and first line, never a stack. */
export function describeCause(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const e = err as Error & { code?: unknown; errno?: unknown };
  const code = typeof e.code === 'string' ? e.code : typeof e.errno === 'number' ? `errno ${e.errno}` : e.name;
  const firstLine = e.message.split('\n', 1)[0] ?? '';
  return firstLine.includes(code) ? firstLine : `${code}: ${firstLine}`;
}

/** `schedule()` named a job that no `define()` registered. */
export class UnknownJobError extends AftercommitError {
  readonly code = 'AFTERCOMMIT_UNKNOWN_JOB';
  constructor(name: string, known: string[]) {
    super(
      `no job named '${name}' is defined (defined: ${known.length ? known.map((k) => `'${k}'`).join(', ') : 'none'}); ` +
        `register it with scheduler.define('${name}', fn) before scheduling it`,
    );
  }
}

/** A job argument or result cannot be stored (a function, a cycle, a class instance, too large, ...). */
export class UnstorableValueError extends AftercommitError {
  readonly code = 'AFTERCOMMIT_UNSTORABLE';
}

/**
 * `schedule()` in a transaction whose user cannot own a job: `tx.meta.user` is
 * not a string or number, or the request's user gave no id. Refused so that no
 * job becomes readable by everyone by mistake.
 */
export class JobOwnerError extends AftercommitError {
  readonly code = 'AFTERCOMMIT_JOB_OWNER';
  constructor(message: string) {
    super(`cannot schedule: ${message}`);
  }
}

/** An entity of a context no longer exists. */
export class EntityNotFoundError extends AftercommitError {
  readonly code = 'AFTERCOMMIT_ENTITY_NOT_FOUND';
  constructor(
    readonly table: string,
    readonly key: unknown,
    where: string,
  ) {
    super(`${where}: no row in '${table}' with key ${JSON.stringify(key)} (it was deleted after the job was scheduled?)`);
  }
}

/** An entity names a table jobs may not load from, or gives a key that does not fit the table's primary key. */
export class EntityNotAllowedError extends AftercommitError {
  readonly code = 'AFTERCOMMIT_ENTITY_NOT_ALLOWED';
}

/** The scheduler was stopped: it takes no new schedules, and aborts jobs that outlive `stop()`'s deadline. */
export class SchedulerStoppedError extends AftercommitError {
  readonly code = 'AFTERCOMMIT_SCHEDULER_STOPPED';
  constructor(what: string) {
    super(`${what}: the scheduler has been stopped`);
  }
}

/** The schedule was removed while its job ran. */
export class JobCancelledError extends AftercommitError {
  readonly code = 'AFTERCOMMIT_JOB_CANCELLED';
  constructor(id: string) {
    super(`schedule ${id} was removed while its job ran; the job's writes are rolled back`);
  }
}

/** A job's claim is no longer its own: its lease expired and another worker took the job, or it was removed. */
export class LeaseLostError extends AftercommitError {
  readonly code = 'AFTERCOMMIT_LEASE_LOST';
  constructor(id: string) {
    super(`job ${id} is no longer claimed by this worker (its lease expired and another worker took it, or it was removed); its writes are rolled back`);
  }
}

/** A job ran longer than its `timeout`. */
export class JobTimeoutError extends AftercommitError {
  readonly code = 'AFTERCOMMIT_JOB_TIMEOUT';
  constructor(name: string, timeout: number) {
    super(`job ${name} ran longer than its timeout of ${timeout} ms; its signal was aborted and its writes are rolled back`);
  }
}

/** A job's worker died or lost its lease once too often: its runs that ended without saying anything about the job reached `maxRuns`, so it fails for good. */
export class WorkerLostError extends AftercommitError {
  readonly code = 'AFTERCOMMIT_WORKER_LOST';
  constructor(jobName: string, runs: number) {
    super(`the worker running job ${jobName} died or lost its lease, and ${runs} of its runs have now ended without an outcome (maxRuns)`);
  }
}

/** The reason of a job's `job.signal` when its worker stops: the job goes back to the queue, unchanged, for another worker. */
export class WorkerStoppingError extends AftercommitError {
  readonly code = 'AFTERCOMMIT_WORKER_STOPPING';
  constructor(worker: string) {
    super(`worker ${worker} is stopping: the job goes back to the queue`);
  }
}

/** A run of a job failed and could not be put back in the queue for another (e.g. its stored backoff gives no valid delay), so the job fails. */
export class RequeueError extends AftercommitError {
  readonly code = 'AFTERCOMMIT_REQUEUE_FAILED';
  constructor(reason: string, options?: ErrorOptions) {
    super(`the run failed and could not be re-queued: ${reason}`, options);
  }
}

/** A batch ended with steps that failed (or were skipped after one): what its `onFailure` callback receives as the error. */
export class BatchFailedError extends AftercommitError {
  readonly code = 'AFTERCOMMIT_BATCH_FAILED';
  constructor(failed: number, total: number) {
    super(`${failed} of the batch's ${total} steps failed or were skipped`);
  }
}
