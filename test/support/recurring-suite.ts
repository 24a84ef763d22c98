/** What the recurring-job suites share: the `tick` job's effects table and worker processes, and what a fired instant looks like. */
import type { TestDatabase } from './databases.js';
import { multiProcessSuite } from './workers.js';

export const EVERY_SECOND = '* * * * * *';

export interface Fired {
  id: string;
  runAt: number;
  createdAt: number;
  state: string;
  effects: number;
}

/**
 * The hooks of a suite: the effects table the `tick` job writes (one row per run: the job, the key
 * it was declared under, the process), the scheduler's tables under a prefix of their own, and
 * worker processes (the real CLI with test/fixtures/recurring-jobs.ts) for the suite that spawns them.
 */
export function recurringSuite(database: TestDatabase) {
  return multiProcessSuite(database, {
    fixture: 'test/fixtures/recurring-jobs.ts',
    lease: 5000,
    jobs: ['tick'],
    effects: (table) => {
      table.string('job_id', 32).notNullable();
      table.string('key_name', 191).notNullable();
      table.integer('pid').notNullable();
    },
  });
}
