export { TransactionManager } from './transactions/manager.js';
export { clsBridge } from './transactions/cls-bridge.js';
export { TransactionalScheduler } from './scheduler/transactional-scheduler.js';
export { bigIntCodec } from './scheduler/value-codecs.js';
export { PersistentTransactionalScheduler } from './scheduler/persistent/persistent-scheduler.js';
export { Worker } from './scheduler/persistent/worker.js';
export { ref, EntityRef } from './context/ref.js';
export { PersistentContext } from './context/persistent-context.js';
export {
  AftercommitError,
  TransientError,
  ConflictError,
  TransactionDoomedError,
  PreemptedError,
  CommitOutcomeUnknownError,
  CommitRolledBackError,
  TransactionEndedError,
  ContentionTimeoutError,
  NoTransactionError,
  UnknownJobError,
  UnstorableValueError,
  JobOwnerError,
  EntityNotFoundError,
  EntityNotAllowedError,
  SchedulerStoppedError,
  JobCancelledError,
  LeaseLostError,
  JobTimeoutError,
  WorkerLostError,
  WorkerStoppingError,
  BatchFailedError,
  RequeueError,
} from './errors.js';
export type * from './interfaces.js';
