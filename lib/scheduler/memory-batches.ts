/**
 * What the in-memory TransactionalScheduler keeps of a schedule (a job, a
 * batch, a step, a callback), and the bookkeeping of a batch: which steps to
 * start and when, the outcome of each, the progress, and the value a finished
 * batch reports. It knows nothing of transactions or of how a step runs: the
 * scheduler starts the steps a batch names and tells it how each ended.
 * Also the options the in-memory scheduler's `with()` accepts, and what a
 * callback is told of the schedule it was attached to: the same as the
 * persistent scheduler's (persistent/outcomes.ts), a batch with a failed or
 * skipped step ending badly, with a BatchFailedError.
 */
import type { JobFunction, JobOptions, JobProgress, JobState, ParentOutcome, StepOutcome, StoredError, TransactionMeta } from '../interfaces.js';
import { BatchFailedError, SchedulerStoppedError } from '../errors.js';
import { newScheduleId } from './ids.js';
import { storedError } from './stored-error.js';
import { checkCallback, type StoredBatchSpec, type StoredJobSpec } from './specs.js';

/** A step's outcome as kept until the batch's result is read: values stay stored (encoded) until then. */
export type StepRecord =
  | { state: 'done'; value: string }
  | { state: 'done'; steps: readonly StepRecord[] }
  | { state: 'failed'; error: StoredError }
  | { state: 'skipped' };

/** A schedule in memory: `uncommitted` until its scheduling transaction commits, then a job state. */
export type State = 'uncommitted' | JobState;

export interface EntryBase {
  readonly id: string;
  /** The job's name, or the kind of batch. */
  readonly name: string;
  /** The scheduling transaction's metadata, stored, and decoded afresh for each step and callback. */
  readonly storedMeta: string;
  readonly meta: TransactionMeta;
  state: State;
  progress?: JobProgress;
  error?: StoredError;
  /** When an unfetched result is forgotten. */
  expiresAt?: number;
  /** A step: the batch its outcome goes to, and its place there. Its result is not kept. */
  readonly parent?: { batch: BatchEntry; index: number };
  /** A callback: nobody was given its id, so its result is not kept. */
  readonly callback?: boolean;
  /** Options given with with(): callbacks to start when it ends, stopOnFailure of a batch. */
  readonly options?: MemoryJobOptions;
}

export interface JobEntry extends EntryBase {
  readonly kind: 'job';
  readonly fn: JobFunction;
  readonly args: string;
  readonly controller: AbortController;
  value?: string;
}

export interface BatchEntry extends EntryBase {
  readonly kind: 'batch';
  readonly run: MemoryBatch;
  /** Its steps that have started and not ended: remove() reaches them. */
  readonly children: Set<Entry>;
}

export type Entry = JobEntry | BatchEntry;

/** The options of the in-memory scheduler's `with()`, checked. */
export interface MemoryJobOptions {
  onSuccess?: StoredJobSpec;
  onFailure?: StoredJobSpec;
  stopOnFailure: boolean;
}

/** Those of a schedule made without `with()`. */
export const NO_OPTIONS: MemoryJobOptions = { stopOnFailure: false };

const ACCEPTED = new Set(['onSuccess', 'onFailure', 'stopOnFailure']);

/** Checks what is given to the in-memory scheduler's `with()`: only callbacks and stopOnFailure; anything else is a TypeError naming it. */
export function checkMemoryOptions(scheduler: object, options: JobOptions, where: string): MemoryJobOptions {
  if (typeof options !== 'object' || options === null) throw new TypeError(`${where}: options must be an object, got ${String(options)}`);
  for (const [key, value] of Object.entries(options)) {
    if (!ACCEPTED.has(key) && value !== undefined) {
      throw new TypeError(
        `${where}: ${key} is not an option of the in-memory TransactionalScheduler, which takes onSuccess, onFailure and ` +
          'stopOnFailure only (PersistentTransactionalScheduler takes the others)',
      );
    }
  }
  if (options.stopOnFailure !== undefined && typeof options.stopOnFailure !== 'boolean') {
    throw new TypeError(`${where}: stopOnFailure must be true or false`);
  }
  return {
    onSuccess: checkCallback(scheduler, options.onSuccess, `${where}: onSuccess`),
    onFailure: checkCallback(scheduler, options.onFailure, `${where}: onFailure`),
    stopOnFailure: options.stopOnFailure ?? false,
  };
}

/** True when `record` failed, or is a batch in which some step (at any depth) failed. */
function hasFailure(record: StepRecord): boolean {
  if (record.state === 'failed') return true;
  return record.state === 'done' && 'steps' in record && record.steps.some(hasFailure);
}

/** A batch's steps as they run: serial ones one after another, parallel ones all at once. */
export class MemoryBatch {
  private readonly records: (StepRecord | undefined)[];
  private ended = 0;

  constructor(
    readonly spec: StoredBatchSpec,
    /** A serial batch (and every batch nested in it) stops at a step that failed, or at a nested batch in which one failed. */
    readonly stopOnFailure: boolean,
  ) {
    this.records = spec.steps.map(() => undefined);
  }

  get total(): number {
    return this.spec.steps.length;
  }

  /** Steps whose outcome is recorded, over all steps. */
  get progress(): JobProgress {
    return { fraction: this.ended / this.total };
  }

  /** The outcomes of the steps, in the order they were given; complete once the batch is done. */
  get outcomes(): readonly StepRecord[] {
    return this.records.map((record) => record ?? { state: 'skipped' });
  }

  /** The steps to start first: all of a parallel batch, the first of a serial one. */
  first(): number[] {
    return this.spec.kind === 'parallel' ? this.spec.steps.map((_, index) => index) : [0];
  }

  /**
   * Records how step `index` ended. Returns the steps to start now (the next
   * one of a serial batch), or `done` once every step has ended or been skipped.
   */
  record(index: number, record: StepRecord): number[] | 'done' {
    if (this.records[index] !== undefined) throw new Error(`step ${index} of a batch ended twice`);
    this.records[index] = record;
    this.ended++;
    if (this.spec.kind === 'parallel') return this.ended === this.total ? 'done' : [];
    const next = index + 1;
    if (next === this.total) return 'done';
    if (this.stopOnFailure && hasFailure(record)) {
      for (let skipped = next; skipped < this.total; skipped++) this.records[skipped] = { state: 'skipped' };
      return 'done';
    }
    return [next];
  }
}

type Decode = (stored: string) => unknown;

/** A new job (a schedule, a step or a callback), uncommitted; its metadata decoded afresh from the stored form. */
export function newJobEntry(fields: Pick<JobEntry, 'name' | 'fn' | 'args' | 'storedMeta' | 'parent' | 'callback' | 'options'>, decode: Decode): JobEntry {
  const meta = decode(fields.storedMeta) as TransactionMeta;
  return { kind: 'job', id: newScheduleId(), meta, controller: new AbortController(), state: 'uncommitted', ...fields };
}

/** A new batch (a schedule or a step), uncommitted; a step inherits `stopOnFailure` from its batch, a schedule has it from its options. */
export function newBatchEntry(
  fields: { spec: StoredBatchSpec; stopOnFailure?: boolean } & Pick<BatchEntry, 'storedMeta' | 'parent' | 'options'>,
  decode: Decode,
): BatchEntry {
  const { spec, stopOnFailure, ...rest } = fields;
  const meta = decode(fields.storedMeta) as TransactionMeta;
  const run = new MemoryBatch(spec, stopOnFailure ?? fields.options?.stopOnFailure ?? false);
  return { kind: 'batch', id: newScheduleId(), name: spec.kind, meta, run, children: new Set(), state: 'uncommitted', ...rest };
}

/** A finished batch's value as `getResult` reports it: one outcome per step, stored values decoded afresh. */
export function batchValue(records: readonly StepRecord[], decode: Decode): StepOutcome[] {
  return records.map((record): StepOutcome => {
    if (record.state === 'failed') return { state: 'failed', error: { ...record.error } };
    if (record.state === 'skipped') return { state: 'skipped' };
    return { state: 'done', value: 'steps' in record ? batchValue(record.steps, decode) : decode(record.value) };
  });
}

/** A finished schedule's value: a job's result, or a batch's outcomes, decoded afresh. */
export function entryValue(entry: Entry, decode: Decode): unknown {
  return entry.kind === 'job' ? decode(entry.value!) : batchValue(entry.run.outcomes, decode);
}

/**
 * How a finished schedule ended for its callbacks: a job's (or an unstarted
 * batch's) error; for a batch that ran, a BatchFailedError when some of its
 * steps failed or were skipped, a nested batch counting as failed when one of
 * its steps did (as for stopOnFailure); undefined when it ended well.
 */
function failureOf(entry: Entry): StoredError | undefined {
  if (entry.state === 'failed') return entry.error!;
  if (entry.kind === 'job') return undefined;
  const failed = entry.run.outcomes.filter((record) => record.state === 'skipped' || hasFailure(record)).length;
  return failed === 0 ? undefined : storedError(new BatchFailedError(failed, entry.run.total));
}

/** The callback the finished `entry` was scheduled with for how it ended (`onSuccess` or `onFailure`), if any. */
export function callbackOf(entry: Entry): StoredJobSpec | undefined {
  return failureOf(entry) === undefined ? entry.options?.onSuccess : entry.options?.onFailure;
}

/**
 * What a callback receives of the finished schedule it was attached to:
 * `{ id, state: 'done', value }` (a batch's value: one outcome per step), or
 * `{ id, state: 'failed', error }`. A batch's own result stays done either way.
 */
export function parentOutcome(entry: Entry, decode: Decode): ParentOutcome {
  const error = failureOf(entry);
  if (error) return { id: entry.id, state: 'failed', error: { ...error } };
  return { id: entry.id, state: 'done', value: entryValue(entry, decode) };
}

/**
 * The callback `spec` of the finished `parent`, `fn` its defined function: a job
 * of its own, owned like its parent, whose result is not kept. It receives its
 * own arguments, then the parent's outcome, decoded afresh for each attempt of its transaction.
 */
export function callbackEntry(parent: Entry, spec: StoredJobSpec, fn: JobFunction, decode: Decode): JobEntry {
  const withOutcome: JobFunction = (job, ...args) => fn(job, ...args, parentOutcome(parent, decode));
  return newJobEntry({ name: spec.name, fn: withOutcome, args: spec.args, storedMeta: parent.storedMeta, callback: true }, decode);
}

/** How a finished step ended, for its batch. */
export function stepRecord(entry: Entry): StepRecord {
  if (entry.state === 'failed') return { state: 'failed', error: entry.error! };
  return entry.kind === 'job' ? { state: 'done', value: entry.value! } : { state: 'done', steps: entry.run.outcomes };
}

/** The error of a schedule (`job <name>`, `<kind> batch`) the stopped scheduler never started. */
export function neverStarted(what: string): StoredError {
  return storedError(new SchedulerStoppedError(`${what} never started`));
}
