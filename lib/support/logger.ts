import type { Logger } from '../interfaces.js';
import { describeCause } from '../errors.js';

const silent = (): void => {};

/** Logs nothing. */
const silentLogger: Logger = { debug: silent, info: silent, warn: silent, error: silent };

function toStderr(level: string) {
  return (obj: object, msg?: string): void => {
    const err = (obj as { err?: unknown }).err;
    const text = msg ?? '';
    const cause = err === undefined ? '' : describeCause(err);
    console.error(`[aftercommit] ${level} ${text}${cause && !text.includes(cause.split(': ').pop()!) ? `: ${cause}` : ''}`);
  };
}

/**
 * The default logger: warnings and errors to stderr, one line each; silent when
 * NODE_ENV=test so test output stays readable. Pass a pino instance to get more.
 */
export function defaultLogger(): Logger {
  if (process.env.NODE_ENV === 'test') return silentLogger;
  return { debug: silent, info: silent, warn: toStderr('warn'), error: toStderr('error') };
}
