/**
 * The seam for database differences. Everything that depends on MySQL/MariaDB,
 * PostgreSQL or SQLite is a member of {@link Dialect}; the rest of the library
 * asks `dialectOf(knex)` and never looks at the client name itself.
 */
import type { Knex } from 'knex';
import type { AskServer, ClusterSupport, Dialect, SendStatement } from '../interfaces.js';
import { mysql } from './mysql.js';
import { postgres } from './postgres.js';
import { sqlite } from './sqlite.js';

// The dialect types live with the other public types; re-exported for the modules that ask this seam for them.
export type { AskServer, ClusterHeld, ClusterSupport, CommitNotifications, Dialect, EscalationLock, EscalationLockMode, InsertLimits, LockWaitCancel, QueueLock, SendStatement } from '../interfaces.js';

const byKnexDialect: Record<string, Dialect> = {
  mysql,
  postgresql: postgres,
  sqlite3: sqlite,
};

/** The dialect of a knex instance, or a clear error for a database `aftercommit` does not support. */
export function dialectOf(db: Knex): Dialect {
  const name = (db.client as { dialect?: string }).dialect;
  const dialect = name === undefined ? undefined : byKnexDialect[name];
  if (!dialect) {
    throw new Error(
      `aftercommit supports MySQL/MariaDB (knex client mysql2, mysql or mariadb), PostgreSQL (pg) and ` +
        `SQLite (better-sqlite3 or sqlite3); this knex instance uses '${name ?? 'an unknown client'}'`,
    );
  }
  return dialect;
}

/** Asks the server on the connection `send` sends on (knex's query object carries the driver's answer). */
export function askingOn(send: SendStatement): AskServer {
  return async (sql) => ((await send(sql)) as { response: unknown }).response;
}

/**
 * What changes for `knex` because its server is a node of a cluster (MariaDB Galera); undefined when it is not.
 * Asked through `ask` (a connection the caller holds) when given: a caller that holds one must not wait for another.
 */
export async function clusterOf(knex: Knex, dialect: Dialect, ask?: AskServer): Promise<ClusterSupport | undefined> {
  return dialect.cluster && (await dialect.cluster.isNode(knex, ask)) ? dialect.cluster : undefined;
}
