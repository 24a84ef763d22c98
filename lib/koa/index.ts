export { aftercommit } from './middleware.js';
export { jobRoutes } from './job-routes.js';
export { metricsRoute } from './metrics-route.js';
export { jobsDashboard } from './jobs-dashboard.js';
export { ClientGoneError, DatabaseUnavailableError, NoSchedulerError, RequestTimeoutError, RetriesExhaustedError, RetryNotSafeError } from './errors.js';
export type * from './interfaces.js';
export type { ConflictKind, RouteRequestMetrics } from '../http/interfaces.js';
