import type { Logger } from '../interfaces.js';

interface Registered {
  fn: (...args: never[]) => unknown;
  args: unknown[];
}

/** Hooks of one kind, run in the order they were registered. */
export class HookList {
  private hooks: Registered[] | undefined; // most transactions register none: no array until one is added

  add(fn: (...args: never[]) => unknown, args: unknown[]): void {
    (this.hooks ??= []).push({ fn, args });
  }

  clear(): void {
    this.hooks = undefined;
  }

  get size(): number {
    return this.hooks?.length ?? 0;
  }

  get isEmpty(): boolean {
    return this.hooks === undefined;
  }

  /** Runs and removes every hook, including hooks that hooks add; the first error propagates. */
  async runAll(...leading: unknown[]): Promise<void> {
    while (this.hooks) {
      const batch = this.hooks;
      this.hooks = undefined;
      for (const { fn, args } of batch) await (fn as (...a: unknown[]) => unknown)(...leading, ...args);
    }
  }

  /** Runs and removes every hook; an error is logged and changes nothing. */
  async runLogged(logger: Logger, kind: string, ...leading: unknown[]): Promise<void> {
    const batch = this.hooks;
    if (!batch) return;
    this.hooks = undefined;
    for (const { fn, args } of batch) {
      try {
        await (fn as (...a: unknown[]) => unknown)(...leading, ...args);
      } catch (err) {
        logger.error({ err, hook: fn.name || 'anonymous' }, `${kind} hook ${fn.name || '(anonymous)'} failed; ignored`);
      }
    }
  }
}
