/** Starts the example app in this process, for the example's suites. */
import type { Knex } from 'knex';
import { PersistentTransactionalScheduler, TransactionManager, type Worker } from '../../lib/index.js';
import { createApp } from '../../example-app/app.js';
import { prepareDatabase } from '../../example-app/db.js';
import { defineReportJob } from '../../example-app/report.js';
import { defineYearReportJobs } from '../../example-app/year-report.js';
import { recordingLogger } from '../support/helpers.js';
import { serve, type Served } from '../support/http.js';

export interface Example extends Served {
  errors: unknown[];
  stop(): Promise<void>;
}

export async function startExample(knex: Knex, { embeddedWorker = true, stepMs = 150, steps = 8, monthMs = 100 } = {}): Promise<Example> {
  const tm = new TransactionManager(knex, { logger: recordingLogger() });
  const scheduler = new PersistentTransactionalScheduler(tm, { entities: { users: 'id' } });
  defineReportJob(scheduler, tm, { steps, stepMs });
  defineYearReportJobs(scheduler, tm, { monthMs });
  await prepareDatabase(knex);
  await scheduler.migrate();
  const worker: Worker | undefined = embeddedWorker ? scheduler.worker({ concurrency: 2 }).start() : undefined;
  const app = createApp({ tm, scheduler });
  const errors: unknown[] = [];
  app.on('error', (err) => errors.push(err));
  const served = await serve(app);
  return {
    ...served,
    errors,
    async stop() {
      await served.close();
      await worker?.stop({ timeout: 5000 });
    },
  };
}

/** What a user's orders of a month add up to, straight from the database. */
export async function expectedTotals(knex: Knex, userId: number, month: string) {
  const orders = (await knex('orders').where({ user_id: userId, month })) as { amount_cents: number }[];
  return { orders: orders.length, totalCents: orders.reduce((sum, o) => sum + Number(o.amount_cents), 0) };
}

/** What a user's orders of a year add up to, straight from the database. */
export async function expectedYear(knex: Knex, userId: number, year: number) {
  const orders = (await knex('orders').where({ user_id: userId }).andWhere('month', 'like', `${year}-%`)) as { amount_cents: number }[];
  return { orders: orders.length, totalCents: orders.reduce((sum, o) => sum + Number(o.amount_cents), 0) };
}
