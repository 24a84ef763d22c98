import { setTimeout as delay } from 'node:timers/promises';
import type { Clock } from '../interfaces.js';

/** The wall clock; its timers do not keep the process alive on their own. */
export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) => delay(ms, undefined, { signal, ref: false }),
};
