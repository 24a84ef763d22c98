/** Reads a property of an unknown error without trusting its shape. */
export function errorField(err: unknown, field: string | symbol): unknown {
  return typeof err === 'object' && err !== null ? (err as Record<string | symbol, unknown>)[field] : undefined;
}

/**
 * Marks an error raised by a statement sent through a transaction's db; its value
 * is the driver's own message, recorded before knex prefixes the message with the
 * SQL and its bound values. Stored errors treat a marked error as the database's,
 * whatever its shape, and keep none of its text.
 */
export const DRIVER_MESSAGE = Symbol('aftercommit.driverMessage');
