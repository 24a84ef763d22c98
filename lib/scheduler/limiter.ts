import { integerIn } from '../support/validate.js';

/** Runs at most `concurrency` tasks at once; the others wait in order. */
export class Limiter {
  private running = 0;
  private readonly queue: (() => Promise<void>)[] = [];
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly concurrency: number) {
    integerIn(concurrency, 'concurrency', 1);
  }

  /** Tasks running now. */
  get active(): number {
    return this.running;
  }

  add(task: () => Promise<void>): void {
    this.queue.push(task);
    this.next();
  }

  /** Resolves once no task runs and none waits. */
  idle(): Promise<void> {
    if (this.running === 0 && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private next(): void {
    while (this.running < this.concurrency && this.queue.length > 0) {
      const task = this.queue.shift()!;
      this.running++;
      // Tasks handle their own errors; the catch only keeps the limiter going.
      task()
        .catch(() => undefined)
        .finally(() => {
          this.running--;
          this.next();
          if (this.running === 0 && this.queue.length === 0) {
            const waiters = this.idleWaiters;
            this.idleWaiters = [];
            for (const resolve of waiters) resolve();
          }
        });
    }
  }
}
