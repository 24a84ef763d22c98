/**
 * The example's database: embedded SQLite (a file under example-app/data/)
 * unless DATABASE_URL names a MySQL/MariaDB or PostgreSQL server. Tables are
 * created and seeded on first start.
 */
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import knexFactory, { type Knex } from 'knex';

export const DEFAULT_SQLITE_FILE = join(import.meta.dirname, 'data', 'example.sqlite');

export function connect(url = process.env.DATABASE_URL, sqliteFile = process.env.EXAMPLE_SQLITE_FILE ?? DEFAULT_SQLITE_FILE): Knex {
  if (!url) {
    mkdirSync(dirname(sqliteFile), { recursive: true });
    return knexFactory({
      client: 'better-sqlite3',
      connection: { filename: sqliteFile },
      useNullAsDefault: true,
      // Several connections with WAL, so pages can read while a report job writes.
      pool: {
        min: 1,
        max: 4,
        afterCreate(connection: { pragma(sql: string): unknown }, done: (err: Error | null, connection: unknown) => void) {
          connection.pragma('journal_mode = WAL');
          // No busy timeout: better-sqlite3 waits synchronously, so a transaction waiting for the write
          // lock would stop this whole process, the transaction that holds the lock included, until the
          // timeout. Failing at once with SQLITE_BUSY lets aftercommit retry it, alone, when its turn comes
          // (two month reports of a year report starting together, a page polling while a job reads).
          connection.pragma('busy_timeout = 0');
          done(null, connection);
        },
      },
    });
  }
  const client = url.startsWith('postgres') ? 'pg' : url.startsWith('mysql') ? 'mysql2' : undefined;
  if (!client) throw new Error(`DATABASE_URL must start with mysql:// or postgres://, got ${url}`);
  return knexFactory({ client, connection: url, pool: { min: 0, max: 20 } });
}

export const USERS = [
  { id: 1, name: 'alice' },
  { id: 2, name: 'bob' },
  { id: 3, name: 'carol' },
];

/** Creates the app's tables when missing, and seeds users and orders into an empty database. */
export async function prepareDatabase(knex: Knex): Promise<void> {
  if (!(await knex.schema.hasTable('users'))) {
    await knex.schema.createTable('users', (t) => {
      t.integer('id').primary();
      t.string('name', 50).notNullable();
    });
  }
  if (!(await knex.schema.hasTable('orders'))) {
    await knex.schema.createTable('orders', (t) => {
      t.increments('id');
      t.integer('user_id').notNullable().index();
      t.string('month', 7).notNullable();
      t.integer('amount_cents').notNullable();
    });
  }
  if (!(await knex.schema.hasTable('reports'))) {
    await knex.schema.createTable('reports', (t) => {
      t.increments('id');
      t.integer('user_id').notNullable();
      t.string('month', 7).notNullable();
      t.integer('orders').notNullable();
      t.integer('total_cents').notNullable();
      t.bigInteger('created_at').notNullable();
    });
  }
  if (!(await knex.schema.hasTable('year_summaries'))) {
    // Written by the year report's callback (yearSummary), one row per year report: the page shows the latest.
    await knex.schema.createTable('year_summaries', (t) => {
      t.increments('id');
      t.string('batch_id', 32).notNullable().index();
      t.integer('user_id').notNullable();
      t.integer('year').notNullable();
      t.integer('orders').notNullable();
      t.integer('total_cents').notNullable();
      t.bigInteger('written_at').notNullable();
      t.index(['user_id', 'year']);
    });
  }
  if ((await knex('users').count({ n: '*' }).first())?.n == 0) {
    await knex('users').insert(USERS);
    // Deterministic orders for every user and month of 2026: the same totals on every machine.
    const orders = [];
    for (const user of USERS) {
      for (let month = 1; month <= 12; month++) {
        for (let i = 0; i < 3 + ((user.id * month) % 5); i++) {
          orders.push({ user_id: user.id, month: `2026-${String(month).padStart(2, '0')}`, amount_cents: 1000 + ((user.id * 7919 + month * 104729 + i * 1299709) % 9000) });
        }
      }
    }
    for (let i = 0; i < orders.length; i += 100) await knex('orders').insert(orders.slice(i, i + 100));
  }
}
