/**
 * The example's jobs module, for separate worker processes:
 *   npm run worker   (node --import tsx lib/cli.ts worker --jobs example-app/jobs.ts)
 * Uses DATABASE_URL like the web process.
 */
import { PersistentTransactionalScheduler, TransactionManager } from '../lib/index.js';
import { connect } from './db.js';
import { defineReportJob } from './report.js';
import { defineYearReportJobs } from './year-report.js';

const knex = connect();
const tm = new TransactionManager(knex);
export const scheduler = new PersistentTransactionalScheduler(tm, { entities: { users: 'id' } });
defineReportJob(scheduler, tm);
defineYearReportJobs(scheduler, tm);
