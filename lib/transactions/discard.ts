/** knex drops a pooled connection marked so (its `__knex__disposed`) instead of handing it out again. */
export function discardOnRelease(connection: unknown, why: unknown): void {
  (connection as { __knex__disposed?: unknown }).__knex__disposed = why;
}
