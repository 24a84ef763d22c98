/**
 * What follows a job's outcome, written in the same transaction that records
 * it: the job's callback, and its batch's progress (the next step of a serial
 * batch made due, or the batch's own outcome once its last step ended). So a
 * callback exists exactly once, and a batch ends exactly once, even when its
 * last two steps end at the same moment on two workers: the second waits for
 * the first's lock on the batch row and sees its count.
 */
import type { Knex } from 'knex';
import type { Clock, JobOptions, Logger, StepOutcome, StoredError } from '../../interfaces.js';
import { BatchFailedError, JobCancelledError } from '../../errors.js';
import type { ValueCodec } from '../codec.js';
import { storedError } from '../stored-error.js';
import type { StoredCallback } from './job-options.js';
import type { JobRow, NewJob } from './rows.js';
import type { JobStore } from './store.js';
import type { Origin } from './origin.js';
import { expiryOf, type Retention } from './retention.js';

type Db = Knex | Knex.Transaction;

/** A recorded outcome: the stored result, or the stored error. */
export type RecordedOutcome = { state: 'done'; result: string } | { state: 'failed'; error: StoredError };


/** Makes the row of a new job `name` with stored `args`, as the scheduler resolves `options`. */
export type RowMaker = (name: string, args: string, options: JobOptions, origin: Origin) => NewJob;

export class Outcomes {
  constructor(
    private readonly store: JobStore,
    private readonly codec: ValueCodec,
    private readonly clock: Clock,
    private readonly ttl: number,
    private readonly retention: Retention,
    private readonly makeRow: RowMaker,
    private readonly logger: Logger,
  ) {}

  /** When the row of a job that finished in `state` expires: a step's, only with its batch. */
  expiryOf(row: Pick<JobRow, 'parentId'>, state: 'done' | 'failed', now: number): number | null {
    return row.parentId === null ? expiryOf(this.retention, state, now, this.ttl) : null;
  }

  /** Writes what follows `row`'s outcome, in the transaction `db` that records it. */
  async recorded(db: Db, row: JobRow, outcome: RecordedOutcome): Promise<void> {
    await this.callBack(db, row, outcome);
    if (row.parentId !== null && row.stepIndex !== null) await this.stepEnded(db, row, row.parentId, row.stepIndex, outcome.state === 'failed');
  }

  /** Inserts the callback for `outcome`, if `row` has one: its own arguments, then the outcome. */
  private async callBack(db: Db, row: JobRow, outcome: RecordedOutcome): Promise<void> {
    if (row.callbacks === null) return;
    const callbacks = JSON.parse(row.callbacks) as { onSuccess?: StoredCallback; onFailure?: StoredCallback };
    const callback = outcome.state === 'done' ? callbacks.onSuccess : callbacks.onFailure;
    if (!callback) return;
    const own = this.codec.decodeArguments(callback.args);
    const parent = outcome.state === 'done' ? { id: row.id, state: 'done' as const } : { id: row.id, state: 'failed' as const, error: outcome.error };
    let args: string;
    try {
      args = this.codec.encodeArguments(callback.name, [...own, outcome.state === 'done' ? { ...parent, value: this.codec.decodeValue(outcome.result) } : parent]);
    } catch (err) {
      // A value too large for the callback's arguments (or one no longer decodable) must not undo the
      // outcome it follows: the callback gets the outcome without it, and can read it with getResult(id).
      this.logger.warn({ err, id: row.id, callback: callback.name }, `the value of ${row.id} cannot be passed to its callback ${callback.name}; it gets { id, state } only`);
      args = this.codec.encodeArguments(callback.name, [...own, parent]);
    }
    await this.store.insert(db, [this.makeRow(callback.name, args, {}, { meta: row.meta, owner: row.owner, requestId: row.requestId })]);
  }

  /** Counts a step of batch `batchId` as ended, and moves the batch on. */
  private async stepEnded(db: Db, step: JobRow, batchId: string, index: number, failed: boolean): Promise<void> {
    const now = this.clock.now();
    const batch = await this.store.stepFinished(db, batchId);
    if (!batch) return this.expireTree(db, step.id, now + this.ttl, true); // its batch was removed: it expires on its own
    const total = batch.stepsTotal!;
    if (batch.kind === 'serial' && batch.stepsDone! < total) {
      if (!(failed && batch.stopOnFailure)) return this.makeStepDue(db, batchId, index + 1, now);
      await this.store.removeAll(db, await this.unstarted(db, batchId, index + 1)); // skipped
    } else if (batch.stepsDone! < total) {
      return;
    }
    await this.finish(db, batch, now);
  }

  /** Makes step `index` of batch `batchId` due: a job at once, a batch through its own first steps. */
  private async makeStepDue(db: Db, batchId: string, index: number, now: number): Promise<void> {
    const step = await this.store.waitingStep(db, batchId, index);
    if (!step) return;
    if (step.kind === 'job') {
      await this.store.makeDue(db, step.id, now);
      return;
    }
    if (step.kind === 'serial') return this.makeStepDue(db, step.id, 0, now);
    for (let i = 0; i < Number(step.steps_total); i++) await this.makeStepDue(db, step.id, i, now);
  }

  /** Ids of the steps of `batchId` from `from` on that never started, nested batches' steps included. */
  private async unstarted(db: Db, batchId: string, from: number): Promise<string[]> {
    const ids: string[] = [];
    for (const step of await this.store.unstartedSteps(db, batchId, from)) {
      ids.push(step.id);
      if (step.kind !== 'job') ids.push(...(await this.unstarted(db, step.id, 0)));
    }
    return ids;
  }

  /** Records a batch's outcome (one per step, in order), then what follows it. */
  private async finish(db: Db, batch: JobRow, now: number): Promise<void> {
    const total = batch.stepsTotal!;
    const outcomes: StepOutcome[] = Array.from({ length: total }, () => ({ state: 'skipped' }));
    let failedBatches = 0; // nested batches are `done` with their outcomes, but count as failed when a step of theirs did
    for (const step of await this.store.steps(db, batch.id)) {
      if (step.state === 'done') outcomes[Number(step.step_index)] = { state: 'done', value: this.decodedOrMissing(step.result!) };
      if (step.state === 'failed') outcomes[Number(step.step_index)] = { state: 'failed', error: JSON.parse(step.error!) as StoredError };
      if (step.state === 'done' && step.kind !== 'job' && step.error !== null) failedBatches++;
    }
    const failed = outcomes.filter((outcome) => outcome.state !== 'done').length + failedBatches;
    let error = failed === 0 ? null : storedError(new BatchFailedError(failed, total));
    let result: string;
    try {
      result = this.codec.encodeResult(batch.name, outcomes);
    } catch (err) {
      // Too large to store whole: the batch keeps its steps' states, and fails with why its value is missing.
      this.logger.warn({ err, id: batch.id }, `the value of batch ${batch.id} cannot be stored; it keeps its steps' states only`);
      result = this.codec.encodeResult(batch.name, outcomes.map(({ state }) => ({ state })));
      error = storedError(err);
    }
    // A batch's row is `done` even when a step failed (its value holds the steps' outcomes), and a batch is
    // never retried: it expires, and its steps with it, as a done row does.
    const expiresAt = this.expiryOf(batch, 'done', now);
    await this.store.finishBatch(db, batch.id, result, error, now, expiresAt);
    if (expiresAt !== null) await this.expireTree(db, batch.id, expiresAt, false); // the steps of a batch expire with it, at every level
    await this.recorded(db, batch, error === null ? { state: 'done', result } : { state: 'failed', error });
  }

  /** Makes every step under batch `id` (and `id` itself when `withRoot`) expire at `expiresAt`. */
  private async expireTree(db: Db, id: string, expiresAt: number, withRoot: boolean): Promise<void> {
    if (withRoot) await this.store.expire(db, id, expiresAt);
    for (let level = [id]; level.length > 0; ) level = await this.store.expireSteps(db, level, expiresAt);
  }

  /** A stored value, or undefined when it no longer decodes (a codec removed since): one step must not stop its batch. */
  private decodedOrMissing(stored: string): unknown {
    try {
      return this.codec.decodeValue(stored);
    } catch (err) {
      this.logger.warn({ err }, "a step's stored value no longer decodes; its batch records it as undefined");
      return undefined;
    }
  }

  /**
   * Removes job `id`: a job or a whole batch is deleted with its steps that have
   * not started; a step is ended as failed (JobCancelledError), so that its batch
   * goes on without it.
   */
  async remove(db: Db, id: string): Promise<void> {
    const row = await this.store.row(db, id);
    if (!row) return;
    const unstarted = row.kind === 'job' ? [] : await this.unstarted(db, id, 0);
    if (row.parentId === null) {
      await this.store.removeAll(db, [id, ...unstarted]);
      return;
    }
    const error = storedError(new JobCancelledError(id));
    if ((await this.store.cancelStep(db, id, error, this.clock.now())) === 0) return; // it had finished: its outcome stays
    await this.store.removeAll(db, unstarted);
    await this.recorded(db, row, { state: 'failed', error });
  }
}
