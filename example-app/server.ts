/**
 * Starts the example: `npm start`. Embedded SQLite (example-app/data/) and a
 * worker in this process, unless DATABASE_URL names a server; then
 * `npm run worker` starts more worker processes (EMBEDDED_WORKER=0 leaves the
 * jobs to them).
 */
import { PersistentTransactionalScheduler, TransactionManager } from '../lib/index.js';
import { createApp } from './app.js';
import { connect, prepareDatabase } from './db.js';
import { defineReportJob } from './report.js';
import { defineYearReportJobs } from './year-report.js';

const knex = connect();
const tm = new TransactionManager(knex);
const scheduler = new PersistentTransactionalScheduler(tm, { entities: { users: 'id' } });
defineReportJob(scheduler, tm);
defineYearReportJobs(scheduler, tm);

await prepareDatabase(knex);
await scheduler.migrate();
const worker = process.env.EMBEDDED_WORKER === '0' ? undefined : scheduler.worker({ concurrency: 2 }).start();

const app = createApp({ tm, scheduler });
const port = Number(process.env.PORT ?? 3000);
const server = app.listen(port, () => {
  const { port: listening } = server.address() as { port: number };
  const where = process.env.DATABASE_URL ? process.env.DATABASE_URL.replace(/\/\/[^@/]*@/, '//') : 'embedded SQLite (example-app/data/example.sqlite)';
  console.log(`aftercommit example: http://localhost:${listening}/  (database: ${where}; worker: ${worker ? 'in this process' : 'separate (npm run worker)'})`);
});

async function shutdown() {
  server.close();
  await worker?.stop({ timeout: 5000 });
  await knex.destroy();
  process.exit(0);
}
process.on('SIGINT', () => void shutdown());
process.on('SIGTERM', () => void shutdown());
