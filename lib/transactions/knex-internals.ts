/**
 * Everything aftercommit does with knex beyond its documented API, in one place.
 * Tested with knex 2.5 and 3 (the ends of the peer range) on SQLite
 * (better-sqlite3), MySQL/MariaDB (mysql2) and PostgreSQL (pg).
 *
 * Why it needs knex's internals:
 * - `tx.db` is a full knex instance whose client routes connections and
 *   statements through the transaction attempt. That is what lets the attempt
 *   begin lazily, see every statement (and every error) before it reaches the
 *   driver, and refuse statements once the database has rolled the transaction
 *   back. knex's own `knex.transaction()` cannot: it begins at once, and its
 *   `commit()` resolves even when COMMIT fails (knex#3847, knex#3370).
 * - The attempt sends BEGIN, COMMIT, ROLLBACK and the escalation lock's
 *   statements itself, on a connection it takes from knex's pool and gives back.
 * - A transaction ended from outside has its connection closed; the pool must
 *   drop that connection instead of handing it out again.
 * - Lock-wait preemption sends its cancels on a connection outside the pool,
 *   which the attempts it cancels may hold entirely.
 * - The contention gate admits no more attempts than the pool has connections,
 *   and waits no longer than its acquire timeout.
 */
import { EventEmitter } from 'node:events';
import type { Knex } from 'knex';
import { DRIVER_MESSAGE } from '../support/error-field.js';

/** knex's description of one statement; once it has run, `response` is the driver's answer. */
export interface QueryObject {
  sql: string;
  bindings: unknown[];
  response?: unknown;
}

/** The client methods used here: knex's typings declare most of them, its documentation none. */
type Client = Knex.Client & {
  acquireConnection(): Promise<unknown>;
  releaseConnection(connection: unknown): Promise<void>;
  /** Emits knex's query events and wraps the driver's errors around `_query`. */
  query(connection: unknown, obj: QueryObject): Promise<QueryObject>;
  /** The driver call itself. */
  _query(connection: unknown, obj: QueryObject): Promise<QueryObject>;
  stream(connection: unknown, obj: unknown, stream: unknown, options: unknown): Promise<unknown>;
};

const clientOf = (knex: Knex) => knex.client as Client;

// ---- connections ----------------------------------------------------------

/** A connection from knex's pool, waiting up to knex's `acquireConnectionTimeout` for one. */
export function acquirePooledConnection(knex: Knex): Promise<unknown> {
  return clientOf(knex).acquireConnection();
}

/** Gives a connection back to knex's pool (which drops it when it was marked with {@link discardOnRelease}). */
export function releasePooledConnection(knex: Knex, connection: unknown): Promise<void> {
  return clientOf(knex).releaseConnection(connection);
}

/** Makes knex's pool drop `connection` when it comes back, instead of handing it out again (its `__knex__disposed`). */
export function discardOnRelease(connection: unknown, why: unknown): void {
  (connection as { __knex__disposed?: unknown }).__knex__disposed = why;
}

/** A connection of its own, outside knex's pool. */
export function openRawConnection(knex: Knex): Promise<unknown> {
  return clientOf(knex).acquireRawConnection();
}

/** Closes a connection from {@link openRawConnection}. */
export function closeRawConnection(knex: Knex, connection: unknown): Promise<void> {
  return clientOf(knex).destroyRawConnection(connection);
}

/** Runs one statement on a connection of `knex`'s, pooled or not, with knex's query events. */
export function queryOn(knex: Knex, connection: unknown, sql: string, bindings: unknown[]): Promise<QueryObject> {
  return clientOf(knex).query(connection, { sql, bindings });
}

/** knex's pool size and acquire timeout, with knex's defaults. */
export function poolLimits(knex: Knex): { size: number; acquireTimeoutMs: number } {
  const client = knex.client as { pool?: { max?: number }; config?: { pool?: { max?: number }; acquireConnectionTimeout?: number } };
  return {
    size: client.pool?.max ?? client.config?.pool?.max ?? 10,
    acquireTimeoutMs: client.config?.acquireConnectionTimeout ?? 60_000,
  };
}

// ---- tx.db ----------------------------------------------------------------

/** What the bound client asks of the transaction attempt that owns it. */
export interface StatementGate {
  /** The connection of the current database transaction, beginning it if needed. */
  acquire(): Promise<unknown>;
  /** Runs one statement on `connection`, in order, unless the attempt can no longer send statements. */
  statement<T>(connection: unknown, execute: () => Promise<T>): Promise<T>;
  /** Runs `fn` inside a savepoint of the current database transaction. */
  savepoint<T>(fn: (db: Knex.Transaction) => Promise<T> | T): Promise<T>;
  /** True once the attempt has ended. */
  readonly ended: boolean;
}

/** The per-transaction client: the user's client with the attempt's gate in front. */
type BoundClient = Client & { gate: StatementGate; db: EventEmitter; root: Client };

type KnexContext = Record<string, unknown> & { client: Client };
type KnexFunction = Knex.Transaction & { context: KnexContext };

function refuse(what: string, instead: string) {
  return (): never => {
    throw new Error(`${what} is not available on a transaction's db: ${instead}`);
  };
}

/** Methods every bound client has; `this` is the per-transaction client. */
const boundClientMethods = {
  acquireConnection(this: BoundClient) {
    return this.gate.acquire();
  },
  // The attempt gives its connection back when its database transaction ends, not after each statement.
  releaseConnection() {
    return Promise.resolve();
  },
  query(this: BoundClient, connection: unknown, obj: QueryObject) {
    return this.gate.statement(connection, () => this.root.query.call(this, connection, obj));
  },
  // Keep the driver's message before knex prefixes it with the SQL.
  _query(this: BoundClient, connection: unknown, obj: QueryObject) {
    return this.root._query.call(this, connection, obj).catch((err: unknown) => {
      if (err instanceof Error) Object.defineProperty(err, DRIVER_MESSAGE, { value: err.message });
      throw err;
    });
  },
  stream(this: BoundClient, connection: unknown, obj: unknown, stream: unknown, options: unknown) {
    return this.gate.statement(connection, () => this.root.stream.call(this, connection, obj, stream, options));
  },
  // Query events reach listeners of tx.db and of the user's knex instance alike.
  emit(this: BoundClient, event: string | symbol, ...args: unknown[]) {
    this.db.emit(event, ...args);
    return this.root.emit(event, ...args);
  },
};

const owned = refuse('commit() and rollback()', 'the transaction manager ends the transaction; use tx.commit(), tx.abort() or throw');

/**
 * Builds `tx.db` objects for one knex instance.
 *
 * Every method of a knex instance reaches its client through `this.context`;
 * knex builds the instance of each of its own transactions that way, around a
 * client of the transaction. Here each `db` is a function that inherits those
 * methods from the user's instance (so it has that instance's API, whatever its
 * knex version), through a template made once per manager, with a context and
 * a client of its own.
 */
export function knexBinder(root: Knex): (gate: StatementGate) => Knex.Transaction {
  const rootClient = clientOf(root);
  // `transacting` is what `.transacting(tx.db)` checks.
  const clientTemplate: Client = Object.assign(Object.create(rootClient), boundClientMethods, { root: rootClient, transacting: true });
  const templateContext: KnexContext = Object.assign(Object.create((root as KnexFunction).context), {
    transaction(this: KnexContext, container?: unknown) {
      if (typeof container !== 'function') {
        throw new Error('tx.db.transaction() needs a function: it runs that function in a savepoint');
      }
      return (this.client as BoundClient).gate.savepoint(container as (db: Knex.Transaction) => unknown);
    },
    transactionProvider: refuse('transactionProvider()', 'use tx.db.transaction(fn) for a savepoint'),
    destroy: refuse('destroy()', 'destroy the knex instance given to the TransactionManager'),
    initialize: refuse('initialize()', 'initialize the knex instance given to the TransactionManager'),
    withUserParams: refuse('withUserParams()', 'set user params on the knex instance given to the TransactionManager'),
  });
  const template: KnexFunction = Object.assign(Object.create(root), {
    context: templateContext,
    isTransaction: true,
    commit: owned,
    rollback: owned,
    savepoint(this: KnexFunction, container: (db: Knex.Transaction) => Promise<unknown>) {
      return this.transaction(container);
    },
    isCompleted(this: KnexFunction) {
      return (this.context.client as BoundClient).gate.ended;
    },
  });

  return (gate) => {
    const context = Object.create(templateContext) as KnexContext;
    const db = function knex(tableName?: string, options?: unknown) {
      const builder = context.queryBuilder as () => Knex.QueryBuilder;
      return tableName ? builder.call(context).table(tableName, options as undefined) : builder.call(context);
    } as unknown as KnexFunction;
    Object.setPrototypeOf(db, template);
    EventEmitter.call(db as unknown as EventEmitter); // listeners of its own, not the user's instance's
    const client = Object.create(clientTemplate) as BoundClient;
    EventEmitter.call(client as unknown as EventEmitter); // likewise for its client
    client.gate = gate;
    client.db = db as unknown as EventEmitter;
    context.client = client;
    db.context = context;
    return db;
  };
}

/**
 * Sends `sql` on `connection` as a statement of `db` (made by {@link knexBinder}):
 * knex's query events and the driver's error message are handled as for any
 * other, but it does not wait its turn at the attempt's gate. For the statements
 * that open and end the database transaction, which the attempt orders itself.
 */
export function sendPastGate(db: Knex.Transaction, connection: unknown, sql: string): Promise<QueryObject> {
  const client = db.client as BoundClient;
  return client.root.query.call(client, connection, { sql, bindings: [] });
}
