/**
 * The persistent scheduler's tables, and migrations that are idempotent and
 * safe from several processes at once (a database lock around them).
 */
import type { Knex } from 'knex';
import type { TransactionManager } from '../../transactions/manager.js';
import { clusterOf, dialectOf } from '../../dialects/index.js';

/** Names of the scheduler's tables. */
export interface TableNames {
  jobs: string;
  schema: string;
  /** The last instant each recurring job fired for. */
  recurring: string;
  /** Queues an operator paused: workers claim none of their jobs. */
  queues: string;
  /** The workers running now, with their heartbeats and finished jobs of the last hour. */
  workers: string;
}

export function tableNames(prefix: string): TableNames {
  if (!/^[A-Za-z_][A-Za-z0-9_]{0,40}$/.test(prefix)) {
    throw new TypeError(`tablePrefix must be letters, digits and _ (at most 41), got ${JSON.stringify(prefix)}`);
  }
  return { jobs: `${prefix}jobs`, schema: `${prefix}schema`, recurring: `${prefix}recurring`, queues: `${prefix}queues`, workers: `${prefix}workers` };
}

/** One step of the schema; steps are applied in order and recorded in the schema table. */
interface Step {
  version: number;
  up(db: Knex | Knex.Transaction, tables: TableNames): Promise<void>;
  /** Undoes `up`, for knex's migrator. */
  down(db: Knex, tables: TableNames): Promise<void>;
}

const steps: Step[] = [
  {
    version: 1,
    async up(db, { jobs }) {
      if (await db.schema.hasTable(jobs)) return; // created by an earlier, unrecorded run
      await db.schema.createTable(jobs, (t) => {
        t.string('id', 32).primary();
        t.string('name', 100).notNullable();
        t.string('queue', 64).notNullable();
        t.string('state', 16).notNullable(); // pending | running | done | failed
        t.integer('priority').notNullable(); // lower runs first
        t.bigInteger('run_at').notNullable(); // ms since the epoch, from the scheduler's clock
        t.text('args', 'mediumtext').notNullable();
        t.text('meta').notNullable();
        t.string('owner', 191).nullable(); // meta.user as text, for getResult's visibility check
        t.integer('runs').notNullable(); // claims so far
        t.integer('failures').notNullable(); // runs that failed with an application error
        t.integer('max_attempts').notNullable();
        t.text('backoff').notNullable(); // JSON { initial, factor, max }
        t.integer('timeout_ms').nullable();
        t.integer('lease_ms').notNullable();
        t.string('lease', 32).nullable(); // the token of the current claim: completion is fenced on it
        t.string('locked_by', 100).nullable();
        t.bigInteger('locked_until').nullable();
        t.double('progress_fraction').nullable();
        t.string('progress_message', 500).nullable();
        t.text('result', 'mediumtext').nullable();
        t.text('error').nullable();
        t.string('dedupe_key', 191).nullable().unique({ indexName: `${jobs}_dedupe` }); // set while pending only
        t.bigInteger('created_at').notNullable();
        t.bigInteger('finished_at').nullable();
        t.bigInteger('expires_at').nullable();
        // The claim's index: equality on state and queue, then exactly the claim's ORDER BY.
        t.index(['state', 'queue', 'priority', 'run_at', 'id'], `${jobs}_claim`);
        t.index(['state', 'locked_until'], `${jobs}_lease`); // expired leases
        t.index(['expires_at'], `${jobs}_expiry`);
      });
    },
    async down(db, { jobs, schema }) {
      await db.schema.dropTableIfExists(jobs).dropTableIfExists(schema);
    },
  },
  {
    // Text in UTF-8 compared exactly, and dedupe keys scoped by owner.
    version: 2,
    async up(db, { jobs }) {
      // First, so that the column and indexes added below are created in the exact collation too.
      await dialectOf(db).exactUtf8Text(db, jobs);
      await db.schema.alterTable(jobs, (t) => {
        t.dropUnique(['dedupe_key'], `${jobs}_dedupe`);
        // A key is its owner's: two users scheduling with the same key get a job each.
        t.unique(['owner', 'dedupe_key'], { indexName: `${jobs}_owner_dedupe` });
        // A unique index never finds two NULLs equal, so (NULL, key) needs an index of its own: the key
        // again, set only for jobs scheduled without an owner (and cleared with dedupe_key).
        t.string('anonymous_dedupe_key', 191).nullable().unique({ indexName: `${jobs}_anonymous_dedupe` });
      });
      await db(jobs).whereNull('owner').whereNotNull('dedupe_key').update({ anonymous_dedupe_key: db.ref('dedupe_key') });
    },
    async down(db, { jobs, schema }) {
      // The text stays UTF-8 and exact: converting it back could lose characters.
      await db.schema.alterTable(jobs, (t) => {
        t.dropUnique(['anonymous_dedupe_key'], `${jobs}_anonymous_dedupe`);
        t.dropUnique(['owner', 'dedupe_key'], `${jobs}_owner_dedupe`);
      });
      await db.schema.alterTable(jobs, (t) => t.dropColumn('anonymous_dedupe_key'));
      // Fails while two owners hold the same key: one key per table is what version 1 allows.
      await db.schema.alterTable(jobs, (t) => t.unique(['dedupe_key'], { indexName: `${jobs}_dedupe` }));
      await db(schema).where({ version: 2 }).delete(); // so that migrate() applies it again
    },
  },
  {
    // Batches, callbacks, quotas and recurring jobs.
    version: 3,
    async up(db, { jobs, recurring }) {
      await db.schema.alterTable(jobs, (t) => {
        t.string('kind', 16).notNullable().defaultTo('job'); // job | serial | parallel
        t.string('parent_id', 32).nullable(); // the batch this row is a step of
        t.integer('step_index').nullable(); // its place in that batch, from 0
        t.integer('steps_total').nullable(); // of a batch
        t.integer('steps_done').nullable(); // of a batch: steps whose outcome is recorded
        t.boolean('stop_on_failure').notNullable().defaultTo(false); // of a serial batch
        t.text('callbacks').nullable(); // JSON { onSuccess?, onFailure? }: stored job specs
        t.string('concurrency_key', 191).nullable();
        t.bigInteger('seq').notNullable().defaultTo(0); // submission order, after priority and run_at
        t.bigInteger('started_at').nullable(); // the last claim, for rate limits
        t.string('recurring_key', 191).nullable(); // with recurring_instant: one row per recurring job and instant
        t.bigInteger('recurring_instant').nullable(); // the instant it fires for (run_at may move on a retry)
        t.index(['parent_id', 'step_index'], `${jobs}_steps`);
        t.index(['state', 'queue', 'concurrency_key'], `${jobs}_concurrency`);
        t.index(['queue', 'started_at'], `${jobs}_started`);
        t.unique(['recurring_key', 'recurring_instant'], { indexName: `${jobs}_recurring` });
      });
      // The claim follows priority, run_at, then submission order (ids are random).
      await db.schema.alterTable(jobs, (t) => {
        t.dropIndex(['state', 'queue', 'priority', 'run_at', 'id'], `${jobs}_claim`);
        t.index(['state', 'queue', 'priority', 'run_at', 'seq'], `${jobs}_claim`);
      });
      if (!(await db.schema.hasTable(recurring))) {
        await db.schema.createTable(recurring, (t) => {
          t.string('key', 191).primary();
          t.bigInteger('last_instant').notNullable(); // ms since the epoch
        });
        await dialectOf(db).exactUtf8Text(db, recurring);
      }
    },
    async down(db, { jobs, recurring, schema }) {
      await db.schema.dropTableIfExists(recurring);
      await db.schema.alterTable(jobs, (t) => {
        t.dropIndex(['state', 'queue', 'priority', 'run_at', 'seq'], `${jobs}_claim`);
        t.index(['state', 'queue', 'priority', 'run_at', 'id'], `${jobs}_claim`);
      });
      await db.schema.alterTable(jobs, (t) => {
        t.dropUnique(['recurring_key', 'recurring_instant'], `${jobs}_recurring`);
        t.dropIndex(['queue', 'started_at'], `${jobs}_started`);
        t.dropIndex(['state', 'queue', 'concurrency_key'], `${jobs}_concurrency`);
        t.dropIndex(['parent_id', 'step_index'], `${jobs}_steps`);
      });
      await db.schema.alterTable(jobs, (t) =>
        t.dropColumns('kind', 'parent_id', 'step_index', 'steps_total', 'steps_done', 'stop_on_failure', 'callbacks', 'concurrency_key', 'seq', 'started_at', 'recurring_key', 'recurring_instant'),
      );
      await db(schema).where({ version: 3 }).delete();
    },
  },
  {
    // Paused queues, the registry of running workers, and the admin's newest-first listing.
    version: 4,
    async up(db, { jobs, queues, workers }) {
      // Unchanged by claims and outcomes (only inserts and deletes touch it): no cost on a job's way through.
      await db.schema.alterTable(jobs, (t) => t.index(['created_at', 'id'], `${jobs}_created`));
      if (!(await db.schema.hasTable(queues))) {
        await db.schema.createTable(queues, (t) => {
          t.string('name', 64).primary();
          t.boolean('paused').notNullable();
          t.bigInteger('changed_at').notNullable(); // ms since the epoch
          t.string('changed_by', 191).nullable(); // who paused or resumed it, as the app named them
        });
      }
      if (!(await db.schema.hasTable(workers))) {
        await db.schema.createTable(workers, (t) => {
          t.string('id', 100).primary(); // locked_by of the jobs it claims
          t.string('host', 100).notNullable();
          t.integer('pid').notNullable();
          t.text('queues').notNullable(); // JSON array
          t.integer('concurrency').notNullable();
          t.bigInteger('started_at').notNullable();
          t.bigInteger('heartbeat_at').notNullable();
        });
      }
    },
    async down(db, { jobs, queues, workers, schema }) {
      await db.schema.dropTableIfExists(workers);
      await db.schema.dropTableIfExists(queues);
      await db.schema.alterTable(jobs, (t) => t.dropIndex(['created_at', 'id'], `${jobs}_created`));
      await db(schema).where({ version: 4 }).delete();
    },
  },
  {
    // The admin's lookup by request id, each job's runs, each worker's finished jobs per minute (the overview's chart)
    // and the address its process receives wake-ups on.
    version: 5,
    async up(db, { jobs, workers }) {
      // Each column and the index checked on its own: MySQL commits each ALTER, so a step cut short is
      // taken up where it stopped. The request id and committed_at are written once, at the insert, like
      // created_at, and run_log with the statement that ends a run: no statement of their own.
      await addColumn(db, jobs, 'request_id', (t) => t.string('request_id', 128).nullable());
      await addColumn(db, jobs, 'committed_at', (t) => t.bigInteger('committed_at').nullable());
      await addColumn(db, jobs, 'run_log', (t) => t.text('run_log').nullable()); // JSON, see run-log.ts
      if (!(await dialectOf(db).hasIndex(db, jobs, `${jobs}_request`))) await db.schema.alterTable(jobs, (t) => t.index(['request_id'], `${jobs}_request`));
      await addColumn(db, workers, 'finished', (t) => t.text('finished').nullable()); // JSON, see finished-history.ts
      // host:port a MySQL process's workers receive wake-ups on (wake-up.ts); null: none (PostgreSQL's come by NOTIFY).
      await addColumn(db, workers, 'wake_address', (t) => t.string('wake_address', 64).nullable());
    },
    async down(db, { jobs, workers, schema }) {
      if (await dialectOf(db).hasIndex(db, jobs, `${jobs}_request`)) await db.schema.alterTable(jobs, (t) => t.dropIndex(['request_id'], `${jobs}_request`));
      for (const [table, column] of [[workers, 'finished'], [workers, 'wake_address'], [jobs, 'request_id'], [jobs, 'committed_at'], [jobs, 'run_log']] as const) {
        if (await db.schema.hasColumn(table, column)) await db.schema.alterTable(table, (t) => t.dropColumn(column));
      }
      await db(schema).where({ version: 5 }).delete();
    },
  },
];

const SCHEMA_VERSION = steps[steps.length - 1]!.version;

/** Adds `column` to `table` unless it is there already (a step cut short on MySQL). */
async function addColumn(db: Knex | Knex.Transaction, table: string, column: string, define: (t: Knex.AlterTableBuilder) => void): Promise<void> {
  if (!(await db.schema.hasColumn(table, column))) await db.schema.alterTable(table, define);
}

/** Applies the steps `db` has not recorded yet (up to `upTo`); returns their versions. */
async function applyPending(db: Knex | Knex.Transaction, tables: TableNames, upTo = SCHEMA_VERSION): Promise<number[]> {
  if (!(await db.schema.hasTable(tables.schema))) {
    await db.schema.createTable(tables.schema, (t) => {
      t.integer('version').primary();
      t.bigInteger('applied_at').notNullable();
    });
  }
  const done = new Set((await db(tables.schema).select('version')).map((r: { version: number }) => Number(r.version)));
  const applied: number[] = [];
  for (const step of steps) {
    if (done.has(step.version) || step.version > upTo) continue;
    await step.up(db, tables);
    await db(tables.schema).insert({ version: step.version, applied_at: Date.now() });
    applied.push(step.version);
  }
  return applied;
}

/** Brings the tables up to the current version; a no-op when they are. Safe from several processes at once. */
export async function migrate(manager: TransactionManager, tables: TableNames): Promise<number[]> {
  const cluster = await clusterOf(manager.knex, manager.dialect);
  if (cluster) {
    // The dialect's lock would be one node's alone: the cluster's is held around the whole migration.
    const timedOut = () => migratingElsewhere(tables);
    return cluster.holdingLock(manager.knex, `migrate:${tables.jobs}`, MIGRATION_WAIT_MS, timedOut, () => migrateUnderDialectLock(manager, tables));
  }
  return migrateUnderDialectLock(manager, tables);
}

/** How long migrate() waits for another process's migration. */
const MIGRATION_WAIT_MS = 120_000;

const migratingElsewhere = (tables: TableNames) => new Error(`another process has been migrating ${tables.jobs} for ${MIGRATION_WAIT_MS / 1000} s; not migrating alongside it`);

async function migrateUnderDialectLock(manager: TransactionManager, tables: TableNames): Promise<number[]> {
  const lock = manager.dialect.migrationLock(`aftercommit:${tables.jobs}`); // MySQL lock names: 64 characters at most
  return manager.run(
    async (tx) => {
      if (lock.acquire) {
        const answer = await tx.db.raw(lock.acquire);
        const acquired = Array.isArray(answer) ? (answer[0] as { acquired?: unknown }[])[0]?.acquired : 1;
        if (Number(acquired) !== 1) throw migratingElsewhere(tables);
      }
      try {
        return await applyPending(tx.db, tables);
      } finally {
        if (lock.release) await tx.db.raw(lock.release);
      }
    },
    { name: 'aftercommit migrate', escalate: false },
  );
}

/**
 * The same steps as a knex migration source, one migration per step, for apps
 * that run their schema with knex's migrator:
 * `knex.migrate.latest({ migrationSource })`. Each step is also recorded in the
 * scheduler's schema table, so `migrate()` and the migrator agree.
 */
export function migrationSource(tables: TableNames): Knex.MigrationSource<Step> {
  return {
    getMigrations: async () => steps,
    getMigrationName: (step) => `aftercommit_${tables.jobs}_${String(step.version).padStart(3, '0')}`,
    // knex's migrator runs `up` in its own transaction (or not, with disableTransactions): no nesting here.
    getMigration: async (step) => ({
      up: (knex: Knex) => applyPending(knex, tables, step.version),
      down: (knex: Knex) => step.down(knex, tables),
    }),
  };
}
