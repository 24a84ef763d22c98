/** A persistent scheduler on tables of a suite's own: made and migrated before its tests, dropped after. */
import { after, before } from 'node:test';
import type { Knex } from 'knex';
import { PersistentTransactionalScheduler, TransactionManager, type Worker } from '../../lib/index.js';
import type { TestDatabase } from './databases.js';
import { recordingLogger } from './helpers.js';

export interface PersistentSuite {
  knex: Knex;
  tm: TransactionManager;
  scheduler: PersistentTransactionalScheduler;
  /** The scheduler's table prefix (tables `${prefix}jobs` and `${prefix}schema`). */
  prefix: string;
}

/** Declares the hooks; `define` registers the suite's jobs before the migration. */
export function persistentSuite(database: TestDatabase, base: string, define: (scheduler: PersistentTransactionalScheduler) => void): PersistentSuite {
  const suite = {} as PersistentSuite;
  const workers: Worker[] = [];
  before(async () => {
    suite.knex = database.knex();
    suite.prefix = `${database.table(base)}_`;
    suite.tm = new TransactionManager(suite.knex, { logger: recordingLogger() });
    suite.scheduler = new PersistentTransactionalScheduler(suite.tm, { tablePrefix: suite.prefix });
    define(suite.scheduler);
    await suite.scheduler.migrate();
    // Every worker is remembered: a started one keeps its process alive, so one that a failed test left running is stopped after the suite, and the file ends.
    const startWorker = suite.scheduler.worker.bind(suite.scheduler);
    suite.scheduler.worker = (options) => {
      const worker = startWorker(options);
      workers.push(worker);
      return worker;
    };
  });
  after(async () => {
    await Promise.all(workers.map((worker) => worker.stop({ timeout: 1000 })));
    await suite.knex.schema
      .dropTableIfExists(`${suite.prefix}jobs`)
      .dropTableIfExists(`${suite.prefix}schema`)
      .dropTableIfExists(`${suite.prefix}recurring`)
      .dropTableIfExists(`${suite.prefix}queues`)
      .dropTableIfExists(`${suite.prefix}workers`);
  });
  return suite;
}
