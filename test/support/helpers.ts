/** Small tools the suites share: a recording logger, a manual clock, barriers. */
import type { Clock, JobHandle, Logger, ScheduleResult } from '../../lib/index.js';

export interface LogLine {
  level: 'debug' | 'info' | 'warn' | 'error';
  obj: Record<string, unknown>;
  msg: string;
}

/** A logger that keeps what it is told, for assertions on log lines. */
export function recordingLogger(): Logger & { lines: LogLine[] } {
  const lines: LogLine[] = [];
  const at = (level: LogLine['level']) => (obj: object, msg?: string) => {
    lines.push({ level, obj: obj as Record<string, unknown>, msg: msg ?? '' });
  };
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

/**
 * A clock that only moves when told to. `sleep` resolves once `advance` has moved
 * time past its deadline; with `auto: true` every sleep advances time by itself
 * and resolves at once (for retry loops that should not wait).
 */
export class ManualClock implements Clock {
  private time: number;
  private readonly auto: boolean;
  /** Every duration passed to `sleep`, in order. */
  readonly sleeps: number[] = [];
  private waiting: { until: number; resolve: () => void; reject: (e: unknown) => void }[] = [];

  constructor(options: { start?: number; auto?: boolean } = {}) {
    this.time = options.start ?? Date.UTC(2026, 10, 23, 12, 0, 0);
    this.auto = options.auto ?? false;
  }

  now(): number {
    return this.time;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    this.sleeps.push(ms);
    if (this.auto) {
      this.time += ms;
      return Promise.resolve();
    }
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const entry = { until: this.time + ms, resolve, reject };
      this.waiting.push(entry);
      signal?.addEventListener('abort', () => {
        this.waiting = this.waiting.filter((w) => w !== entry);
        reject(signal.reason);
      });
    });
  }

  /** Number of sleeps not yet over. */
  get pending(): number {
    return this.waiting.length;
  }

  /** Moves time forward and wakes the sleeps that are over. */
  async advance(ms: number): Promise<void> {
    this.time += ms;
    const due = this.waiting.filter((w) => w.until <= this.time);
    this.waiting = this.waiting.filter((w) => w.until > this.time);
    for (const w of due) w.resolve();
    await new Promise((r) => setImmediate(r));
  }
}

/** A promise with its resolve/reject at hand. */
export function deferred<T = void>() {
  let resolve!: (value: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Resolves every `arrive()` once `parties` callers have arrived. */
export function barrier(parties: number) {
  const all = deferred();
  let arrived = 0;
  return {
    arrive(): Promise<void> {
      if (++arrived >= parties) all.resolve();
      return all.promise;
    },
  };
}

/** Waits until `condition()` holds, polling every few ms; fails after `timeoutMs`. */
export async function until(condition: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Rejects with the signal's reason once it aborts (at once if it already has): for job bodies that hold until cancelled. */
export function untilAborted(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
}

/**
 * A job body for removing a running job: it writes a row (`text`: 'written before the removal') to
 * `table` in its transaction, then holds until its signal aborts it. `started` resolves once it has
 * written; `reason` is what aborted it (set once it has).
 */
export function removableJob(table: string) {
  const started = deferred();
  const removable = {
    started: started.promise,
    reason: undefined as unknown,
    async run(job: JobHandle): Promise<never> {
      await job.db(table).insert({ text: 'written before the removal' });
      started.resolve();
      try {
        return await untilAborted(job.signal);
      } catch (err) {
        removable.reason = err;
        throw err;
      }
    },
  };
  return removable;
}

/** What getResult answers once the schedule has finished (polled outside any transaction, so nothing is deleted). */
export async function finished(
  scheduler: { getResult(id: string): Promise<ScheduleResult> },
  id: string,
  timeoutMs = 10_000,
): Promise<ScheduleResult> {
  let result: ScheduleResult = { state: 'pending' };
  await until(async () => (result = await scheduler.getResult(id)).state !== 'pending', timeoutMs, `schedule ${id} to finish`);
  return result;
}
