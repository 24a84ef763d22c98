/** Checks of options and inputs where they enter, with one wording for every message. */

/** The largest value Node's timers and the INT columns take (about 24.8 days in ms). */
export const INT_MAX = 2 ** 31 - 1;

/**
 * `value` when it is an integer from `min` to `max`; otherwise a TypeError
 * naming `what`, the allowed range and the value given.
 */
export function integerIn(value: unknown, what: string, min: number, max = INT_MAX): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new TypeError(`${what} must be an integer from ${min} to ${max}, got ${String(value)}`);
  }
  return value;
}

/** A request id as the HTTP adapters take it from a header, and as jobs are looked up by: a sane token of 1-128 characters. */
export const REQUEST_ID = /^[A-Za-z0-9._:@/+=-]{1,128}$/;
