/**
 * The schedules the in-memory TransactionalScheduler holds (jobs, batches,
 * their steps and callbacks), by id: what getResult, remove and stats read.
 * A finished schedule's result is kept until it is fetched or its ttl is over;
 * a timer forgets the expired ones while there are results to keep.
 */
import type { Clock, SchedulerStats } from '../interfaces.js';
import type { Entry } from './memory-batches.js';

export class MemoryEntries {
  private readonly entries = new Map<string, Entry>();
  private sweeping = false;

  constructor(
    private readonly clock: Clock,
    /** How long an unfetched result is kept, in ms. */
    private readonly ttl: number,
    /** Aborted when the scheduler stops: the timer ends. */
    private readonly shutdown: AbortSignal,
  ) {}

  /** The schedule `id`, expired or not. */
  get(id: string): Entry | undefined {
    return this.entries.get(id);
  }

  /** True while `entry` is held: not removed, forgotten or replaced. */
  holds(entry: Entry): boolean {
    return this.entries.get(entry.id) === entry;
  }

  add(entry: Entry): void {
    this.entries.set(entry.id, entry);
  }

  forget(entry: Entry): void {
    if (this.holds(entry)) this.entries.delete(entry.id);
  }

  values(): IterableIterator<Entry> {
    return this.entries.values();
  }

  /** True once the ttl of `entry`'s unfetched result is over (the timer forgets it soon). */
  expired(entry: Entry): boolean {
    return entry.expiresAt !== undefined && entry.expiresAt <= this.clock.now();
  }

  /** Keeps the result of the finished `entry` for the ttl, then forgets it. */
  keepResult(entry: Entry): void {
    entry.expiresAt = this.clock.now() + this.ttl;
    this.sweepLater();
  }

  /** Counts of the schedules held, by state (expired results count until the timer forgets them). */
  stats(): SchedulerStats {
    const stats: SchedulerStats = { uncommitted: 0, waiting: 0, pending: 0, running: 0, done: 0, failed: 0 };
    for (const entry of this.entries.values()) stats[entry.state]++;
    return stats;
  }

  /**
   * Forgets unfetched results once their ttl is over, by a timer that runs while
   * results are kept (not only when another job completes, so an idle process forgets too).
   */
  private sweepLater(): void {
    if (this.sweeping) return;
    this.sweeping = true;
    const interval = Math.min(this.ttl, 60_000);
    const sweep = async () => {
      try {
        while (!this.shutdown.aborted && [...this.entries.values()].some((e) => e.expiresAt !== undefined)) {
          await this.clock.sleep(interval, this.shutdown);
          for (const entry of this.entries.values()) if (this.expired(entry)) this.entries.delete(entry.id);
        }
      } catch {
        // stopped: nothing more to sweep
      } finally {
        this.sweeping = false;
      }
    };
    void sweep();
  }
}
