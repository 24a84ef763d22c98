/**
 * The jobs running in this process, by id: the one place that knows them.
 * Workers begin and end runs here; the scheduler reaches a run through it to
 * cancel it at once on remove() and, with SQLite, to answer getResult() without
 * a query while the job's transaction holds the only connection.
 */
import type { JobProgress, Transaction } from '../../interfaces.js';
import { JobCancelledError } from '../../errors.js';

/** A job running in this process. */
export interface LocalRun {
  /** Aborted when the run must end: timeout, removal, lost lease, stopping worker. */
  readonly controller: AbortController;
  /** meta.user of the schedule, for getResult's visibility check. */
  readonly owner: string | null;
  /** The last progress the job reported. */
  progress?: JobProgress;
}

export class LocalRuns {
  private readonly runs = new Map<string, LocalRun>();

  /** Registers a run of job `id` that this process starts now. */
  begin(id: string, owner: string | null): LocalRun {
    const run: LocalRun = { controller: new AbortController(), owner };
    this.runs.set(id, run);
    return run;
  }

  /** True while job `id` runs here (its heartbeat may be late; its lease is still live). */
  has(id: string): boolean {
    return this.runs.has(id);
  }

  /** The ids of the jobs running here. */
  ids(): string[] {
    return [...this.runs.keys()];
  }

  /** Job `id`'s run here, unless it was told to end. */
  live(id: string): LocalRun | undefined {
    const run = this.runs.get(id);
    return run && !run.controller.signal.aborted ? run : undefined;
  }

  /** Aborts job `id`'s run here, if any: its schedule was removed. */
  cancel(id: string): void {
    this.runs.get(id)?.controller.abort(new JobCancelledError(id));
  }

  /** Forgets `run` (and not a later run of the same job that another worker here claimed meanwhile). */
  end(id: string, run: LocalRun): void {
    if (this.runs.get(id) === run) this.runs.delete(id);
  }

  /** Forgets `run` once `tx`, which records its outcome, commits: from then on getResult reads the row. */
  endAtCommit(tx: Transaction, id: string, run: LocalRun): void {
    tx.afterCommit((ok) => {
      if (ok) this.end(id, run);
    });
  }
}
