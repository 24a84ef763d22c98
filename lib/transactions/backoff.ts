import type { RetryDelay } from '../interfaces.js';

export type DelayPolicy = Required<RetryDelay>;

const DEFAULT_DELAY: DelayPolicy = { initial: 50, factor: 2, max: 2000 };

/** Upper bound of the delay before retry number `retry` (1-based): initial·factor^(retry-1), capped at max. */
function delayBound(retry: number, policy: DelayPolicy): number {
  return Math.min(policy.initial * policy.factor ** (retry - 1), policy.max);
}

/** The delay before retry number `retry`: uniform(0, bound), full jitter. */
export function retryDelay(retry: number, policy: DelayPolicy, random: () => number): number {
  return random() * delayBound(retry, policy);
}

/** Merges user bounds over the defaults, refusing values that would make no sense. */
export function delayPolicy(delay: RetryDelay | undefined): DelayPolicy {
  const policy = { ...DEFAULT_DELAY, ...delay };
  for (const [key, value] of Object.entries(policy)) {
    // max may be Infinity, for delays that grow without a cap.
    const usable = typeof value === 'number' && value >= 0 && (Number.isFinite(value) || key === 'max');
    if (!usable) throw new TypeError(`delay.${key} must be a finite number >= 0, got ${String(value)}`);
  }
  if (policy.factor < 1) throw new TypeError(`delay.factor must be >= 1, got ${policy.factor}`);
  return policy;
}
