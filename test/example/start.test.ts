/**
 * The README's first command on a fresh checkout: `npm start` serves the page
 * with the embedded SQLite database, no database server involved.
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { once } from 'node:events';
import { request } from '../support/http.js';

it('npm start creates and seeds its database, listens, prints the URL and serves the page', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'aftercommit-start-'));
  // What `npm start` runs, with the database file in a temporary place and any free port.
  const child = spawn(process.execPath, ['--import', 'tsx', 'example-app/server.ts'], {
    env: { ...process.env, PORT: '0', EXAMPLE_SQLITE_FILE: join(dir, 'example.sqlite'), DATABASE_URL: '' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
    const url = /(http:\/\/localhost:\d+\/)/.exec(line)![1]!;
    assert.match(line, /database: embedded SQLite/);
    const page = await request(url);
    assert.equal(page.status, 200);
    assert.match(page.body as string, /<button id="generate">Generate report<\/button>/);
    const scheduled = await request(`${url}reports`, { method: 'POST', headers: { 'X-User': '2', 'content-type': 'application/json' }, body: JSON.stringify({ month: '2026-05' }) });
    assert.equal(scheduled.status, 202);
    assert.match(page.body as string, /<button id="year-report">Year report<\/button>/);
    const year = await request(`${url}year-reports`, { method: 'POST', headers: { 'X-User': '2', 'content-type': 'application/json' }, body: JSON.stringify({ year: '2026' }) });
    assert.equal(year.status, 202);
    // The jobs dashboard: the demo's admin (alice, user 1) sees it and the jobs bob scheduled; bob gets 404.
    const overview = await request(`${url}admin/jobs/api/overview`, { headers: { 'X-User': '1' } });
    assert.equal(overview.status, 200);
    assert.ok(overview.body.workers.length >= 1, 'the embedded worker is listed');
    assert.ok((await request(`${url}admin/jobs/api/jobs?owner=2`, { headers: { 'X-User': '1' } })).body.jobs.length >= 2);
    assert.equal((await request(`${url}admin/jobs`, { headers: { 'X-User': '2' } })).status, 404);
    assert.equal((await request(`${url}admin/jobs`, { headers: { 'X-User': '1' } })).status, 200);
  } finally {
    child.kill('SIGTERM');
    assert.equal((await once(child, 'exit'))[0], 0);
    rmSync(dir, { recursive: true, force: true });
  }
});
