/**
 * Counters and histograms of this process's job runs, by queue, fed by the
 * scheduler's events as they are emitted: what `scheduler.metrics()` reports
 * beside the gauges read from where jobs are kept. In memory and cheap: a
 * metrics endpoint never counts finished rows.
 */
import type { Clock, DurationHistogram, QueueRuns, SchedulerEvents } from '../interfaces.js';
import { FinishedHistory, type SourcedHour } from './finished-history.js';

/** Bucket bounds in ms, from a fast claim to a long report. */
const BOUNDS = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 300_000];

class Histogram {
  private readonly counts = BOUNDS.map(() => 0);
  private count = 0;
  private sumMs = 0;

  observe(ms: number): void {
    this.count++;
    this.sumMs += ms;
    const at = BOUNDS.findIndex((bound) => ms <= bound);
    if (at >= 0) this.counts[at]!++;
  }

  snapshot(): DurationHistogram {
    let running = 0;
    return { bounds: BOUNDS, counts: this.counts.map((n) => (running += n)), count: this.count, sumMs: this.sumMs };
  }
}

interface QueueRecord {
  done: number;
  failed: number;
  retried: number;
  lostLeases: number;
  startDelay: Histogram;
  runTime: Histogram;
}

export class RunMetrics {
  private readonly queues = new Map<string, QueueRecord>();
  private readonly finished = new FinishedHistory();

  constructor(private readonly clock: Clock) {}

  /** This scheduler's jobs finished per minute over the last hour, with the id that tells it apart in the registry. */
  finishedHour(): SourcedHour {
    return this.finished.at(this.clock.now());
  }

  private of(queue: string): QueueRecord {
    let record = this.queues.get(queue);
    if (!record) {
      record = { done: 0, failed: 0, retried: 0, lostLeases: 0, startDelay: new Histogram(), runTime: new Histogram() };
      this.queues.set(queue, record);
    }
    return record;
  }

  /** Counts an event the scheduler emits. */
  record<K extends keyof SchedulerEvents>(event: K, ...[payload]: SchedulerEvents[K]): void {
    const record = this.of(payload.queue);
    switch (event) {
      case 'started': {
        const { delayMs } = payload as SchedulerEvents['started'][0];
        if (delayMs !== undefined) record.startDelay.observe(Math.max(0, delayMs));
        break;
      }
      case 'succeeded':
        record.done++;
        this.finished.count('done', this.clock.now());
        record.runTime.observe((payload as SchedulerEvents['succeeded'][0]).durationMs);
        break;
      case 'failed':
        record.failed++;
        this.finished.count('failed', this.clock.now());
        break;
      case 'retried':
        record.retried++;
        break;
      case 'lost-lease':
        record.lostLeases++;
        break;
    }
  }

  snapshot(): Record<string, QueueRuns> {
    const runs: Record<string, QueueRuns> = {};
    for (const [queue, { startDelay, runTime, ...counts }] of this.queues) {
      runs[queue] = { ...counts, startDelay: startDelay.snapshot(), runTime: runTime.snapshot() };
    }
    return runs;
  }
}
