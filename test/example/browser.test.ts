/**
 * The example app as a person uses it, in headless Chromium (Debian's chromium,
 * driven by playwright-core): log in, generate a report, watch the progress bar
 * move, see the totals; a failed job shows its error; another user cannot see
 * the job; a bad month is explained. A year report (a parallel batch of twelve
 * month reports) shows its progress, then the summary its callback wrote.
 * Screenshots are saved to test-artifacts/.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Knex } from 'knex';
import { chromium, type Browser, type Page } from 'playwright-core';
import { connect } from '../../example-app/db.js';
import { expectedTotals, expectedYear, startExample, type Example } from './serve.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const required = process.env.CI === 'true';
const skip = !existsSync(CHROMIUM) && !required ? `no Chromium at ${CHROMIUM} (apt-get install chromium; CI installs it)` : false;

describe('the example app in a browser', { skip }, () => {
  let dir: string;
  let knex: Knex;
  let example: Example;
  let browser: Browser;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'aftercommit-example-'));
    knex = connect(undefined, join(dir, 'example.sqlite'));
    // 2.4 s per report: several polls see the bar between 0 and 100 even on a busy machine.
    // 300 ms per month of a year report: its 12 months take 6 turns of the worker's 2 slots.
    example = await startExample(knex, { stepMs: 300, monthMs: 300 });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  });

  after(async () => {
    await browser?.close();
    await example?.stop();
    await knex?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  async function loggedIn(user: string): Promise<Page> {
    const page = await (await browser.newContext()).newPage();
    await page.goto(example.url);
    await page.selectOption('#user', user);
    await page.click('#login');
    await page.waitForSelector(`text=logged in as ${user}`);
    return page;
  }

  /** Clicks Generate and samples the progress bar until the job settles. */
  async function generate(page: Page, month: string, { fail = false } = {}) {
    await page.fill('#month', month);
    await page.setChecked('#fail', fail);
    await page.click('#generate');
    const seen: number[] = [];
    await page.waitForFunction("document.querySelector('#job')?.getAttribute('data-id')");
    const id = (await page.getAttribute('#job', 'data-id'))!;
    for (;;) {
      const value = Number((await page.getAttribute('#job [role=progressbar]', 'aria-valuenow')) ?? 0);
      if (seen.at(-1) !== value) seen.push(value);
      if (await page.isVisible('#totals')) break;
      if (await page.isVisible('#error')) break;
      await page.waitForTimeout(40);
    }
    return { id, seen };
  }

  it('log in, generate a report, watch the progress bar move, see the totals', async () => {
    const page = await loggedIn('alice');
    const { seen } = await generate(page, '2026-10');
    const between = seen.filter((v) => v > 0 && v < 100);
    assert.ok(between.length >= 2, `the bar moved through several values: ${seen.join(', ')}`);
    assert.deepEqual([...seen].sort((a, b) => a - b), seen, 'only forward');
    const expected = await expectedTotals(knex, 1, '2026-10');
    assert.equal(await page.textContent('#r-month'), '2026-10');
    assert.equal(await page.textContent('#r-orders'), String(expected.orders));
    assert.equal(await page.textContent('#r-total'), (expected.totalCents / 100).toFixed(2));
    mkdirSync('test-artifacts', { recursive: true });
    await page.waitForTimeout(300); // the bar's CSS transition
    await page.screenshot({ path: 'test-artifacts/example-report.png', fullPage: true });
    // The report link opens the stored report.
    const report = await page.request.get(example.url + (await page.getAttribute('#report-link', 'href'))!);
    assert.deepEqual(await report.json(), { id: shownId(await page.textContent('#report-link')), month: '2026-10', ...expected });
  });

  it('a failed job shows its error message', async () => {
    const page = await loggedIn('alice');
    await generate(page, '2026-09', { fail: true });
    assert.equal(await page.textContent('#error'), 'The report failed: the report for alice, 2026-09 failed half way (simulated)');
  });

  it('a second user cannot see the first user’s job', async () => {
    const alice = await loggedIn('alice');
    await alice.fill('#month', '2026-08');
    await alice.click('#generate');
    await alice.waitForFunction("document.querySelector('#job')?.getAttribute('data-id')");
    const id = (await alice.getAttribute('#job', 'data-id'))!;
    const bob = await loggedIn('bob');
    const asBob = await bob.request.get(`${example.url}/jobs/${id}`);
    assert.equal(asBob.status(), 404);
    assert.deepEqual(await asBob.json(), { error: 'no such job' });
    await alice.waitForSelector('#totals', { state: 'visible' });
  });

  it('a year report: the batch’s progress through the twelve months, then the summary its callback wrote', async () => {
    const page = await loggedIn('bob');
    const { id, seen } = await yearReport(page, '2026');
    assert.equal(await page.isVisible('#year-error'), false, `no error: ${await page.textContent('#year-error')}`);
    assert.ok(seen.some((v) => v > 0 && v < 100), `the bar showed months done before the last: ${seen.join(', ')}`);
    assert.deepEqual([...seen].sort((a, b) => a - b), seen, 'only forward');
    assert.equal(seen.at(-1), 100);
    const expected = await expectedYear(knex, 2, 2026);
    assert.ok(expected.orders > 0, 'the seed has orders in 2026');
    assert.equal(await page.textContent('#y-year'), '2026');
    assert.equal(await page.textContent('#y-orders'), String(expected.orders));
    assert.equal(await page.textContent('#y-total'), (expected.totalCents / 100).toFixed(2));
    mkdirSync('test-artifacts', { recursive: true });
    await page.waitForTimeout(300); // the bar's CSS transition
    await page.screenshot({ path: 'test-artifacts/example-year-report.png', fullPage: true });
    // The summary is committed data, written once by the callback, for its owner only.
    const { batchId, year, orders, totalCents } = await (await page.request.get(`${example.url}/year-summaries/2026`)).json();
    assert.deepEqual({ batchId, year, orders, totalCents }, { batchId: id, year: 2026, ...expected });
    assert.equal((await knex('year_summaries').where({ batch_id: id })).length, 1, 'one summary for the batch');
    const carol = await loggedIn('carol');
    assert.equal((await carol.request.get(`${example.url}/year-summaries/2026`)).status(), 404);
  });

  it('a bad year is explained, not a server error', async () => {
    const page = await loggedIn('carol');
    await page.fill('#year', 'next year');
    await page.click('#year-report');
    await page.waitForSelector('#year-error', { state: 'visible' });
    assert.equal(await page.textContent('#year-error'), 'year must look like 2026 (YYYY), got "next year"');
    await page.fill('#year', '2999');
    await page.click('#year-report');
    await page.waitForSelector('text=2999 is in the future: there are no orders yet');
    assert.deepEqual(example.errors, [], 'nothing reached the server’s error log');
  });

  it('a bad month is explained, not a server error', async () => {
    const page = await loggedIn('carol');
    await page.fill('#month', 'October');
    await page.click('#generate');
    await page.waitForSelector('#error', { state: 'visible' });
    assert.equal(await page.textContent('#error'), 'month must look like 2026-10 (YYYY-MM), got "October"');
    assert.deepEqual(example.errors, [], 'nothing reached the server’s error log');
  });
});

/** Clicks Year report and samples its progress bar until the summary (or an error) shows. */
async function yearReport(page: Page, year: string) {
  await page.fill('#year', year);
  await page.click('#year-report');
  const seen: number[] = [];
  for (;;) {
    const value = Number((await page.getAttribute('#year-job [role=progressbar]', 'aria-valuenow')) ?? 0);
    if (seen.at(-1) !== value) seen.push(value);
    if (await page.isVisible('#year-summary')) break;
    if (await page.isVisible('#year-error')) break;
    await page.waitForTimeout(40);
  }
  // The bar may have moved between the last reading and the summary showing.
  const last = Number((await page.getAttribute('#year-job [role=progressbar]', 'aria-valuenow')) ?? 0);
  if (seen.at(-1) !== last) seen.push(last);
  return { id: await page.getAttribute('#year-job', 'data-id'), seen };
}

/** The report id as the page shows it ("#3") → 3. */
function shownId(text: string | null): number {
  return Number(text!.replace('#', ''));
}
