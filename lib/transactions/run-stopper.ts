/**
 * What can end a `tm.run` call from outside, without an AbortController per
 * call: EventTarget listeners cost microseconds, and the HTTP adapters give
 * every request one of these. `RunOptions.signal` is adapted to it.
 */
export class RunStopper {
  /** Why the call was ended, once it was. */
  reason: Error | undefined;
  private listener: ((reason: Error) => void) | undefined;

  /** Ends the call (once). */
  stop(reason: Error): void {
    if (this.reason) return;
    this.reason = reason;
    this.listener?.(reason);
  }

  /** Calls `listener` when the call is ended (at once if it already was); one listener at a time. */
  listen(listener: ((reason: Error) => void) | undefined): void {
    this.listener = listener;
    if (listener && this.reason) listener(this.reason);
  }

  /** A stopper that follows `signal`. */
  static of(signal: AbortSignal): RunStopper {
    const stopper = new RunStopper();
    if (signal.aborted) stopper.stop(signal.reason as Error);
    else signal.addEventListener('abort', () => stopper.stop(signal.reason as Error), { once: true });
    return stopper;
  }
}

/** The key under which adapters inside the package hand run() a stopper (it is not part of RunOptions). */
export const RUN_STOPPER = Symbol('aftercommit.runStopper');
