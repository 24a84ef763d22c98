/** The sales report job: reads a user's orders of a month in its own transaction, slowly on purpose. */
import { setTimeout as sleep } from 'node:timers/promises';
import type { JobHandle, PersistentContext, PersistentTransactionalScheduler, TransactionManager } from '../lib/index.js';

export interface ReportOptions {
  /** Steps of the report's pretend work, each reported as progress. */
  steps?: number;
  /** How long each step takes, ms. */
  stepMs?: number;
}

export interface ReportResult {
  reportId: number;
  month: string;
  orders: number;
  totalCents: number;
}

export function defineReportJob(scheduler: PersistentTransactionalScheduler, tm: TransactionManager, options: ReportOptions = {}) {
  const steps = options.steps ?? Number(process.env.REPORT_STEPS ?? 10);
  const stepMs = options.stepMs ?? Number(process.env.REPORT_STEP_MS ?? 300);

  scheduler.define(
    'salesReport',
    async (job: JobHandle, context: PersistentContext, month: string, simulateFailure = false): Promise<ReportResult> => {
      const user = await context.get<{ id: number; name: string }>('user'); // as committed, in this job's transaction
      const orders = (await job.db('orders').where({ user_id: user.id, month }).select('amount_cents')) as { amount_cents: number }[];
      // Done reading: commit before the slow part, so no lock is held while the report "computes".
      await tm.current!.commit();

      let totalCents = 0;
      for (let step = 1; step <= steps; step++) {
        job.signal.throwIfAborted();
        await sleep(stepMs, undefined, { signal: job.signal });
        for (const order of orders.slice(Math.floor(((step - 1) * orders.length) / steps), Math.floor((step * orders.length) / steps))) {
          totalCents += Number(order.amount_cents);
        }
        await job.progress(step / steps, `step ${step} of ${steps}: ${Math.floor((step * orders.length) / steps)} of ${orders.length} orders`);
        if (simulateFailure && step === Math.ceil(steps / 2)) throw new Error(`the report for ${user.name}, ${month} failed half way (simulated)`);
      }
      const [inserted] = await job.db('reports').insert(
        { user_id: user.id, month, orders: orders.length, total_cents: totalCents, created_at: Date.now() },
        ['id'],
      );
      const reportId = typeof inserted === 'object' ? (inserted as { id: number }).id : inserted!;
      return { reportId: Number(reportId), month, orders: orders.length, totalCents };
    },
    { timeout: 10 * 60_000 },
  );
}
