/**
 * The three databases every suite runs against: SQLite (a temporary file),
 * MariaDB/MySQL and PostgreSQL (the local servers). Each suite gets tables of its
 * own (`db.table('accounts')` → a unique name), so test files run in parallel.
 */
import { after, describe } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import knexFactory, { type Knex } from 'knex';
import { servers, type ServerName } from './servers.js';

export type DialectName = 'sqlite' | ServerName;
export const DIALECTS: DialectName[] = ['sqlite', 'mysql', 'postgres'];

/** What makes a knex instance from a configuration: the `knex` function of some version of knex. */
export type KnexFactory = (config: Knex.Config) => Knex;

export interface TestDatabase {
  readonly name: DialectName;
  /**
   * A new knex instance on this database, made by `factory` (another version of
   * knex, for instance; by default the knex devDependency); destroyed when the
   * suite ends.
   */
  knex(config?: Partial<Knex.Config>, factory?: KnexFactory): Knex;
  /** A table name unique to this suite; the table is dropped when the suite ends. */
  table(base: string): string;
  /** Connection settings, for code that must connect by itself (child processes). */
  readonly config: Knex.Config;
}

function serverUrl(name: ServerName): string {
  return servers.find((s) => s.name === name)!.url;
}

/** Why the suites of `name` are skipped, or false when they run. */
function skipReason(name: DialectName): string | false {
  if (name === 'sqlite') return false;
  const listed = process.env.AFTERCOMMIT_TEST_SERVERS;
  if (listed === undefined || listed.split(',').includes(name)) return false;
  return `${name} server not reachable (run with CI=true to make this a failure)`;
}

// knex prints connection errors itself; tests that kill connections expect them.
const quiet = process.env.AFTERCOMMIT_TEST_VERBOSE ? {} : { log: { warn() {}, error() {}, debug() {}, deprecate() {} } };

function baseConfig(name: DialectName, dir: () => string): Knex.Config {
  return { ...quiet, ...dialectConfig(name, dir) };
}

function dialectConfig(name: DialectName, dir: () => string): Knex.Config {
  switch (name) {
    case 'sqlite':
      return { client: 'better-sqlite3', connection: { filename: join(dir(), 'test.sqlite') }, useNullAsDefault: true };
    case 'mysql':
      return { client: 'mysql2', connection: serverUrl('mysql'), pool: { min: 0, max: 10 } };
    case 'postgres':
      return { client: 'pg', connection: serverUrl('postgres'), pool: { min: 0, max: 10 } };
  }
}

function createTestDatabase(name: DialectName): TestDatabase & { cleanup(): Promise<void> } {
  let directory: string | undefined;
  const dir = () => (directory ??= mkdtempSync(join(tmpdir(), 'aftercommit-test-')));
  const config = baseConfig(name, dir);
  const instances: Knex[] = [];
  const tables: string[] = [];
  const suffix = randomBytes(4).toString('hex');
  return {
    name,
    config,
    knex(extra = {}, factory = knexFactory) {
      const instance = factory({ ...config, ...extra });
      instances.push(instance);
      return instance;
    },
    table(base) {
      const table = `${base}_${suffix}`;
      tables.push(table);
      return table;
    },
    async cleanup() {
      const admin = instances[0] ?? knexFactory(config);
      for (const table of tables.reverse()) await admin.schema.dropTableIfExists(table).catch(() => undefined);
      if (!instances.includes(admin)) await admin.destroy();
      await Promise.all(instances.map((k) => k.destroy()));
      if (directory) rmSync(directory, { recursive: true, force: true });
    },
  };
}

/** Declares `body` once per dialect (or per dialect in `only`), each with its own TestDatabase. */
export function eachDialect(title: string, body: (db: TestDatabase) => void, only: DialectName[] = DIALECTS): void {
  for (const name of only) {
    describe(`${title} [${name}]`, { skip: skipReason(name) }, () => {
      const db = createTestDatabase(name);
      body(db);
      after(() => db.cleanup()); // after the suite's own after hooks, which may still use the database
    });
  }
}

/** Kills the server session behind a transaction's connection (MySQL/MariaDB or PostgreSQL), from the `admin` connection. */
export async function killSessionOf(database: TestDatabase, admin: Knex, db: Knex.Transaction): Promise<void> {
  if (database.name === 'mysql') await admin.raw(`KILL ${(await db.raw('SELECT CONNECTION_ID() AS id'))[0][0].id}`);
  else await admin.raw('SELECT pg_terminate_backend(?)', [(await db.raw('SELECT pg_backend_pid() AS id')).rows[0].id]);
}
