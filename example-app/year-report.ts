/**
 * The year report: a parallel batch of twelve `monthReport` jobs (one per month,
 * any worker takes any of them) with an `onSuccess` callback, `yearSummary`, that
 * adds up the months and writes the year's summary. Scheduled by POST /year-reports:
 *
 *   scheduler
 *     .with({ onSuccess: scheduler.job('yearSummary', user, year) })
 *     .parallel(...months.map((month) => scheduler.job('monthReport', user, month)));
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { JobHandle, ParentOutcome, PersistentContext, PersistentTransactionalScheduler, StepOutcome, TransactionManager } from '../lib/index.js';

export interface YearReportOptions {
  /** How long each month's pretend work takes, ms: slow enough for the page's progress bar to move. */
  monthMs?: number;
}

/** What a month's report returns: small (the batch stores its steps' values whole); the orders stay in their table. */
export interface MonthTotals {
  month: string;
  orders: number;
  totalCents: number;
}

export interface YearSummary {
  summaryId: number;
  year: number;
  orders: number;
  totalCents: number;
}

/** The twelve months of `year`, as the orders table writes them: 2026-01 … 2026-12. */
export function monthsOf(year: number): string[] {
  return Array.from({ length: 12 }, (_, i) => `${year}-${String(i + 1).padStart(2, '0')}`);
}

export function defineYearReportJobs(scheduler: PersistentTransactionalScheduler, tm: TransactionManager, options: YearReportOptions = {}) {
  const monthMs = options.monthMs ?? Number(process.env.MONTH_REPORT_MS ?? 500);

  // A step of the batch: one month's totals, returned as its value.
  scheduler.define('monthReport', async (job: JobHandle, context: PersistentContext, month: string): Promise<MonthTotals> => {
    const user = await context.get<{ id: number }>('user');
    const orders = (await job.db('orders').where({ user_id: user.id, month }).select('amount_cents')) as { amount_cents: number }[];
    // Done reading: commit before the pretend work, so no connection is held while it "computes".
    await tm.current!.commit();
    await sleep(monthMs, undefined, { signal: job.signal });
    return { month, orders: orders.length, totalCents: orders.reduce((sum, order) => sum + Number(order.amount_cents), 0) };
  });

  // The batch's onSuccess callback: its own arguments, then the batch's outcome, whose value
  // is one { state: 'done', value } per month (onSuccess runs only when every step is done).
  // It runs once, in a transaction of its own: the summary commits with its result.
  scheduler.define('yearSummary', async (job: JobHandle, context: PersistentContext, year: number, batch: ParentOutcome): Promise<YearSummary> => {
    const user = await context.get<{ id: number }>('user');
    const steps = batch.state === 'done' ? (batch.value as StepOutcome[]) : [];
    if (steps.length !== 12 || steps.some((step) => step.state !== 'done')) throw new Error(`the year report of ${year} is missing months`); // never, with onSuccess
    const months = steps.map((step) => (step as { value: MonthTotals }).value);
    const orders = months.reduce((sum, month) => sum + month.orders, 0);
    const totalCents = months.reduce((sum, month) => sum + month.totalCents, 0);
    const [inserted] = await job.db('year_summaries').insert(
      { batch_id: batch.id, user_id: user.id, year, orders, total_cents: totalCents, written_at: Date.now() },
      ['id'],
    );
    const summaryId = typeof inserted === 'object' ? (inserted as { id: number }).id : inserted!;
    return { summaryId: Number(summaryId), year, orders, totalCents };
  });
}
