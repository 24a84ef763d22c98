/** Reads a property of an unknown error without trusting its shape. */
export function errorField(err: unknown, field: string): unknown {
  return typeof err === 'object' && err !== null ? (err as Record<string, unknown>)[field] : undefined;
}

/**
 * The driver's own message of a database error, recorded before knex prefixes the
 * message with the SQL and its bound values; stored errors use it so no SQL or
 * bound value is kept.
 */
export const DRIVER_MESSAGE = Symbol('aftercommit.driverMessage');
