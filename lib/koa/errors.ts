/** The errors of the Koa adaptation: those of lib/http, shared with the Express one. */
export { ClientGoneError, DatabaseUnavailableError, NoSchedulerError, RequestTimeoutError, RetriesExhaustedError, RetryNotSafeError } from '../http/errors.js';
