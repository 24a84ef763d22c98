/**
 * The knex object handed out as `tx.db`.
 *
 * It is a full knex instance (query builders, `raw`, `schema`, `fn`, `ref`,
 * `.transacting(tx.db)`) whose client borrows everything from the user's client
 * but routes connections and statements through the transaction attempt. That
 * is what lets the attempt begin lazily, see every statement (and every error)
 * before it reaches the driver, and refuse statements once the database has
 * rolled the transaction back. knex's own `knex.transaction()` is not used: its
 * `commit()` resolves even when COMMIT fails (knex#3847, knex#3370).
 *
 * Building a knex instance defines some 150 methods on it; knex does that for
 * each of its transactions. Here it is done once per manager (the template),
 * and each transaction's `db` inherits from the template, with its own context
 * and client: every knex method reaches the client through `this.context`.
 */
import { EventEmitter } from 'node:events';
import type { Knex } from 'knex';
import makeKnex from 'knex/lib/knex-builder/make-knex.js';
import { DRIVER_MESSAGE } from '../support/error-field.js';

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

type Client = Knex.Client & {
  _query(connection: unknown, obj: unknown): Promise<unknown>;
  query(connection: unknown, obj: unknown): Promise<unknown>;
  stream(connection: unknown, obj: unknown, stream: unknown, options: unknown): Promise<unknown>;
  queryBuilder(): Knex.QueryBuilder;
};

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
  releaseConnection() {
    return Promise.resolve();
  },
  query(this: BoundClient, connection: unknown, obj: unknown) {
    return this.gate.statement(connection, () => this.root.query.call(this, connection, obj));
  },
  // The driver call itself: keep the driver's message before knex prefixes it with the SQL.
  _query(this: BoundClient, connection: unknown, obj: unknown) {
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

/** Builds `tx.db` objects for one knex instance. */
export function knexBinder(root: Knex): (gate: StatementGate) => Knex.Transaction {
  const rootClient = root.client as Client;
  const clientTemplate: Client = Object.assign(Object.create(rootClient), boundClientMethods, {
    root: rootClient,
    transacting: true,
  });
  // A listener table of its own: makeKnex subscribes to its client, which must
  // not add listeners to the user's client.
  EventEmitter.call(clientTemplate as unknown as EventEmitter);
  const template = makeKnex(clientTemplate) as KnexFunction;
  Object.assign(template.context, {
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
  Object.assign(template, {
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
  template.userParams = root.userParams;

  return (gate) => {
    const context = Object.create(template.context) as KnexContext;
    const db = function knex(tableName?: string, options?: unknown) {
      const builder = context.queryBuilder as () => Knex.QueryBuilder;
      return tableName ? builder.call(context).table(tableName, options as undefined) : builder.call(context);
    } as unknown as KnexFunction;
    Object.setPrototypeOf(db, template);
    EventEmitter.call(db as unknown as EventEmitter); // listeners of its own, not the template's
    const client = Object.create(clientTemplate) as BoundClient;
    EventEmitter.call(client as unknown as EventEmitter);
    client.gate = gate;
    client.db = db as unknown as EventEmitter;
    context.client = client;
    db.context = context;
    return db;
  };
}
