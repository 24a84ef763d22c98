/** Errors the Koa adaptation throws; each carries the HTTP status Koa should answer with. */
import { describeCause } from '../errors.js';

/** A transient error hit a request that cannot be run again without repeating something already sent. */
export class RetryNotSafeError extends Error {
  readonly code = 'AFTERCOMMIT_RETRY_NOT_SAFE';
  readonly status = 500;
  readonly expose = false;
  constructor(reason: string, cause: unknown) {
    super(
      `the request hit a transient error (${describeCause(cause)}) but is not run again: ${reason}. ` +
        'Its transaction was rolled back; nothing of it is committed.',
      { cause },
    );
    this.name = 'RetryNotSafeError';
  }
}

/** The database could not be reached: 503, with Retry-After. */
export class DatabaseUnavailableError extends Error {
  readonly code = 'AFTERCOMMIT_DATABASE_UNAVAILABLE';
  readonly status = 503;
  readonly expose = true;
  readonly headers: Record<string, string>;
  constructor(retryAfterSeconds: number, cause: unknown) {
    super('the database is unavailable; please try again shortly', { cause });
    this.name = 'DatabaseUnavailableError';
    this.headers = { 'Retry-After': String(retryAfterSeconds) };
  }
}

/** Every attempt of a request failed with a transient error: 503, with Retry-After. */
export class RetriesExhaustedError extends Error {
  readonly code = 'AFTERCOMMIT_RETRIES_EXHAUSTED';
  readonly status = 503;
  readonly expose = true;
  readonly headers: Record<string, string>;
  constructor(attempts: number, retryAfterSeconds: number, cause: unknown) {
    super(`the database stayed busy (conflicts on ${attempts} attempts); please try again shortly`, { cause });
    this.name = 'RetriesExhaustedError';
    this.headers = { 'Retry-After': String(retryAfterSeconds) };
  }
}

/** The request ran past aftercommit's `timeout`: its transaction was ended from outside (rolled back). 503. */
export class RequestTimeoutError extends Error {
  readonly code = 'AFTERCOMMIT_REQUEST_TIMEOUT';
  readonly status = 503;
  readonly expose = true;
  constructor(readonly timeoutMs: number) {
    super(`the request took longer than ${timeoutMs} ms; it was stopped and nothing of it is committed`);
    this.name = 'RequestTimeoutError';
  }
}

/** The client went away before the request's transaction committed: it was rolled back (see `commitWhenClientGone`). */
export class ClientGoneError extends Error {
  readonly code = 'AFTERCOMMIT_CLIENT_GONE';
  readonly status = 499; // nginx's "client closed request": nobody reads it
  readonly expose = false;
  constructor() {
    super('the client went away before the request committed; its transaction was rolled back');
    this.name = 'ClientGoneError';
  }
}
