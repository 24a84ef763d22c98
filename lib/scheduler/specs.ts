/**
 * Jobs and batches described but not scheduled: the steps of a batch and the
 * callbacks of a job. A job spec holds its arguments already stored, so bad
 * arguments fail where the spec is made, like schedule()'s.
 */
import type { BatchSpec, JobSpec, StepSpec } from '../interfaces.js';

/** A job spec made by `scheduler.job(name, ...args)`. */
export class StoredJobSpec implements JobSpec {
  readonly kind = 'job' as const;
  constructor(
    /** The scheduler that checked and stored the arguments: specs do not cross schedulers. */
    readonly madeBy: object,
    readonly name: string,
    /** The stored arguments. */
    readonly args: string,
  ) {}
}

/** A batch spec made by `scheduler.batch(kind, ...steps)`. */
export class StoredBatchSpec implements BatchSpec {
  constructor(
    readonly kind: 'serial' | 'parallel',
    readonly steps: readonly StoredStep[],
  ) {}
}

export type StoredStep = StoredJobSpec | StoredBatchSpec;

/** `steps` as made by `scheduler`, or a TypeError saying what `what` needs instead. */
export function checkSteps(scheduler: object, steps: readonly StepSpec[], what: string): StoredStep[] {
  if (steps.length === 0) throw new TypeError(`${what}: a batch needs at least one step`);
  return steps.map((step, index) => checkStep(scheduler, step, `${what}: step ${index}`));
}

function checkStep(scheduler: object, step: StepSpec, what: string): StoredStep {
  if (step instanceof StoredBatchSpec) {
    for (const [index, inner] of step.steps.entries()) checkStep(scheduler, inner, `${what}, step ${index}`);
    return step;
  }
  if (step instanceof StoredJobSpec && step.madeBy === scheduler) return step;
  throw new TypeError(`${what} must be made by this scheduler's job(name, ...args) or batch(kind, ...steps)`);
}

/** A callback spec as given in options: made by this scheduler's job(). */
export function checkCallback(scheduler: object, spec: unknown, what: string): StoredJobSpec | undefined {
  if (spec === undefined) return undefined;
  if (spec instanceof StoredJobSpec && spec.madeBy === scheduler) return spec;
  throw new TypeError(`${what} must be a job spec made by this scheduler's job(name, ...args)`);
}
