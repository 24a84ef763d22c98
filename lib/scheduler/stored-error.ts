import type { StoredError } from '../interfaces.js';
import { DRIVER_MESSAGE } from '../support/error-field.js';

const MAX_MESSAGE = 1000;

/**
 * A job's error as it is stored and shown to pollers: name and message only.
 * Errors from the database are named `DatabaseError` whatever the driver calls
 * them, with the driver's message (not knex's, which starts with the SQL).
 */
export function storedError(err: unknown): StoredError {
  if (!(err instanceof Error)) return { name: 'Error', message: String(err).slice(0, MAX_MESSAGE) };
  const driverMessage = (err as Error & { [DRIVER_MESSAGE]?: string })[DRIVER_MESSAGE];
  if (driverMessage !== undefined) return { name: 'DatabaseError', message: driverMessage.slice(0, MAX_MESSAGE) };
  return { name: err.name || 'Error', message: err.message.slice(0, MAX_MESSAGE) };
}
