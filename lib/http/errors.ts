/**
 * Errors of the HTTP adaptations (Koa and Express). Like the core ones they extend AftercommitError
 * (a stable `code`, the class's own `name`); those a request ends with carry the
 * HTTP status the framework answers with.
 */
import { AftercommitError } from '../errors.js';
import { storedError } from '../scheduler/stored-error.js';

/** A transient error hit a request that cannot be run again without repeating something already sent. */
export class RetryNotSafeError extends AftercommitError {
  readonly code = 'AFTERCOMMIT_RETRY_NOT_SAFE';
  readonly status = 500;
  readonly expose = false;
  constructor(reason: string, cause: unknown) {
    // The cause described as a stored job error is: apps render messages, and a driver's or knex's text quotes values.
    const { code, name, message } = storedError(cause);
    const described = code ? message : `${cause instanceof AftercommitError ? cause.code : name}: ${message}`; // a database error's description names its code
    super(
      `the request hit a transient error (${described}) but is not run again: ${reason}. ` +
        'Its transaction was rolled back; nothing of it is committed.',
      { cause },
    );
  }
}

/** The database could not be reached (or no turn at it came in time): 503, with Retry-After. */
export class DatabaseUnavailableError extends AftercommitError {
  readonly code = 'AFTERCOMMIT_DATABASE_UNAVAILABLE';
  readonly status = 503;
  readonly expose = true;
  readonly headers: Record<string, string>;
  constructor(retryAfterSeconds: number, cause: unknown) {
    super('the database is unavailable; please try again shortly', { cause });
    this.headers = { 'Retry-After': String(retryAfterSeconds) };
  }
}

/** Every attempt of a request failed with a transient error: 503, with Retry-After. */
export class RetriesExhaustedError extends AftercommitError {
  readonly code = 'AFTERCOMMIT_RETRIES_EXHAUSTED';
  readonly status = 503;
  readonly expose = true;
  readonly headers: Record<string, string>;
  constructor(attempts: number, retryAfterSeconds: number, cause: unknown) {
    super(`the database stayed busy (conflicts on ${attempts} attempts); please try again shortly`, { cause });
    this.headers = { 'Retry-After': String(retryAfterSeconds) };
  }
}

/** The request ran past aftercommit's `timeout`: its transaction was ended from outside (rolled back). 503. */
export class RequestTimeoutError extends AftercommitError {
  readonly code = 'AFTERCOMMIT_REQUEST_TIMEOUT';
  readonly status = 503;
  readonly expose = true;
  constructor(readonly timeoutMs: number) {
    super(`the request took longer than ${timeoutMs} ms; it was stopped and nothing of it is committed`);
  }
}

/** The client went away before the request's transaction committed: it was rolled back (see `commitWhenClientGone`). */
export class ClientGoneError extends AftercommitError {
  readonly code = 'AFTERCOMMIT_CLIENT_GONE';
  readonly status = 499; // nginx's "client closed request": nobody reads it
  readonly expose = false;
  constructor() {
    super('the client went away before the request committed; its transaction was rolled back');
  }
}

/**
 * `ctx.scheduler` / `req.scheduler`, `persistentContext()` or `jobRoutes()` used
 * in a request whose aftercommit() was given no scheduler. A mistake in the
 * app's setup, so no status of its own: the framework answers 500 and the
 * request's writes roll back.
 */
export class NoSchedulerError extends AftercommitError {
  readonly code = 'AFTERCOMMIT_NO_SCHEDULER';
  constructor(what: string) {
    super(`${what}: aftercommit() was given no scheduler; pass one: aftercommit({ manager, scheduler }, ...middleware)`);
  }
}
