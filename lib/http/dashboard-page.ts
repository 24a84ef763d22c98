/**
 * The jobs dashboard's page: one HTML document, its script and its style,
 * served by the package itself (no CDN) under a strict Content-Security-Policy.
 * The script reads and acts through the JSON admin API (admin-api.ts) and
 * refreshes itself every two seconds.
 */

/** The policy the page is served with: only its own script and style, only its own API. */
export const PAGE_POLICY =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const escapeHtml = (text: string) => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** The HTML document, for a dashboard mounted at `prefix`. */
export function pageHtml(prefix: string, readOnly: boolean): string {
  const base = escapeHtml(prefix);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Jobs</title>
<link rel="stylesheet" href="${base}/app.css">
<script src="${base}/app.js" defer></script>
</head>
<body data-api="${base}/api" data-read-only="${readOnly ? '1' : '0'}">
<header><h1>Jobs</h1><span id="updated" aria-live="polite"></span></header>
<main>
<section>
<h2>Queues</h2>
<table id="queues"><thead><tr><th>queue</th><th>waiting</th><th>pending</th><th>running</th><th>oldest due</th><th>done here</th><th>failed here</th><th></th></tr></thead><tbody></tbody></table>
</section>
<section>
<h2>Finished in the last hour <span id="finished-total" class="note"></span></h2>
<svg id="finished" viewBox="0 0 600 80" preserveAspectRatio="none" role="img" aria-label="jobs finished per minute"></svg>
<p class="legend"><span class="swatch done"></span>done <span class="swatch failed"></span>failed, per minute, by the workers running now</p>
</section>
<section id="recurring-section" hidden>
<h2>Recurring jobs</h2>
<table id="recurring"><thead><tr><th>key</th><th>job</th><th>cron</th><th>last fired for</th><th>next</th></tr></thead><tbody></tbody></table>
</section>
<section>
<h2>Workers</h2>
<table id="workers"><thead><tr><th>worker</th><th>queues</th><th>concurrency</th><th>last heartbeat</th></tr></thead><tbody></tbody></table>
</section>
<section>
<h2>Requests <small>(this process)</small></h2>
<table id="requests"><thead><tr><th>route</th><th>requests</th><th>retried</th><th>conflicts by kind</th><th>escalations</th><th>exhausted</th><th>not retry-safe</th></tr></thead><tbody></tbody></table>
</section>
<section>
<h2>Jobs</h2>
<form id="filter">
<label>state <select name="state"><option value="">any</option><option>waiting</option><option>pending</option><option>running</option><option>done</option><option>failed</option></select></label>
<label>queue <input name="queue" size="10"></label>
<label>name <input name="name" size="12"></label>
<label>owner <input name="owner" size="10"></label>
<label>request id <input name="requestId" size="14"></label>
<button type="submit">Show</button>
<span class="actions"><button type="button" id="retry-all">Retry all matching</button><button type="button" id="delete-all">Delete all matching</button></span>
</form>
<table id="jobs"><thead><tr><th>id</th><th>name</th><th>queue</th><th>state</th><th>owner</th><th>request</th><th>created</th></tr></thead><tbody></tbody></table>
<button type="button" id="more" hidden>More</button>
</section>
<section id="detail" hidden>
<h2>Job <code id="detail-id"></code></h2>
<p><button type="button" id="same-request">Jobs of this request</button> <span class="actions"><button type="button" id="retry">Retry</button><button type="button" id="run-now">Run now</button><button type="button" id="remove">Remove</button></span></p>
<dl id="detail-fields"></dl>
<div id="detail-steps-part" hidden><h3>Steps</h3>
<table id="detail-steps"><thead><tr><th>#</th><th>id</th><th>name</th><th>state</th><th>finished</th></tr></thead><tbody></tbody></table></div>
<h3>Runs</h3>
<table id="detail-runs"><thead><tr><th>run</th><th>worker</th><th>claimed</th><th>ended</th><th>outcome</th></tr></thead><tbody></tbody></table>
<h3>Arguments</h3><pre id="detail-args"></pre>
<h3>Metadata</h3><pre id="detail-meta"></pre>
<h3>Outcome</h3><pre id="detail-outcome"></pre>
</section>
<p id="message" role="status"></p>
</main>
</body>
</html>
`;
}

export const PAGE_CSS = `
:root { font: 14px/1.4 system-ui, sans-serif; color: #1d2430; background: #f6f7f9; }
body { margin: 0; }
header { display: flex; align-items: baseline; gap: 1rem; padding: .6rem 1.2rem; background: #1d2430; color: #fff; }
header h1 { font-size: 1.2rem; margin: 0; }
#updated { color: #b8c2d3; font-size: .85rem; }
main { padding: .6rem 1.2rem; max-width: 1100px; }
section { background: #fff; border: 1px solid #dde2ea; border-radius: 6px; padding: .4rem .8rem .8rem; margin-bottom: .8rem; overflow-x: auto; }
h2 { font-size: 1rem; margin: .4rem 0; }
h3 { font-size: .9rem; margin: .6rem 0 .2rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid #eef1f5; white-space: nowrap; }
th { font-weight: 600; color: #566175; font-size: .85rem; }
tbody tr[data-id] { cursor: pointer; }
tbody tr[data-id]:hover { background: #f0f4fb; }
.state { padding: 0 .4rem; border-radius: 3px; font-size: .85rem; }
.state-done { background: #e2f4e7; } .state-failed { background: #fbe3e3; } .state-running { background: #e3ecfb; } .state-pending, .state-waiting { background: #f5efd9; }
.paused { color: #9a5b00; font-weight: 600; }
form { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; margin-bottom: .5rem; }
button { font: inherit; padding: .15rem .6rem; border: 1px solid #b9c3d3; border-radius: 4px; background: #fff; cursor: pointer; }
button:hover { background: #eef2f8; }
.actions { display: inline-flex; gap: .4rem; }
body[data-read-only="1"] .actions, body[data-read-only="1"] .queue-action { display: none; }
pre { background: #f6f7f9; padding: .5rem; border-radius: 4px; overflow-x: auto; margin: 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .1rem 1rem; margin: 0; }
dt { color: #566175; }
#message { min-height: 1.2em; color: #566175; }
#finished { width: 100%; height: 80px; display: block; }
#finished .done, .swatch.done { fill: #3f9d5b; background: #3f9d5b; }
#finished .failed, .swatch.failed { fill: #d0453f; background: #d0453f; }
.swatch { display: inline-block; width: .7rem; height: .7rem; margin: 0 .2rem 0 .6rem; border-radius: 2px; }
.legend, .note { color: #566175; font-size: .85rem; font-weight: normal; margin: .2rem 0 0; }
`;

export const PAGE_JS = `'use strict';
(function () {
  const body = document.body;
  const api = body.dataset.api;
  const $ = (selector) => document.querySelector(selector);
  const time = (ms) => (ms ? new Date(Number(ms)).toLocaleString() : '');
  let filter = new URLSearchParams();
  let shown;

  function cell(row, text, className) {
    const td = row.insertCell();
    td.textContent = text === null || text === undefined ? '' : String(text);
    if (className) td.className = className;
    return td;
  }

  async function get(path) {
    const response = await fetch(api + path, { credentials: 'same-origin' });
    if (!response.ok) throw new Error(path + ': ' + response.status);
    return response.json();
  }

  async function act(method, path, what) {
    const response = await fetch(api + path, { method, credentials: 'same-origin', headers: { 'X-Aftercommit-Admin': '1' } });
    const answer = await response.json().catch(() => ({}));
    $('#message').textContent = response.ok ? what + ': ' + answer.affected + ' affected' : what + ' failed: ' + (answer.error || response.status);
    await refresh();
  }

  async function overview() {
    const { queues, paused, runs, workers, finished, recurring } = await get('/overview');
    chart(finished);
    $('#recurring-section').hidden = recurring.length === 0;
    const recurringRows = $('#recurring tbody');
    recurringRows.replaceChildren();
    for (const job of recurring) {
      const row = recurringRows.insertRow();
      cell(row, job.key);
      cell(row, job.job);
      cell(row, job.cron + ' (' + job.timezone + ')');
      cell(row, time(job.lastInstant));
      cell(row, time(job.nextInstant));
    }
    const tbody = $('#queues tbody');
    tbody.replaceChildren();
    for (const [name, gauges] of Object.entries(queues)) {
      const row = tbody.insertRow();
      row.dataset.queue = name;
      const isPaused = paused.includes(name);
      cell(row, isPaused ? name + ' (paused)' : name, isPaused ? 'paused' : '');
      cell(row, gauges.waiting);
      cell(row, gauges.pending);
      cell(row, gauges.running);
      cell(row, gauges.oldestDueMs === null ? '' : Math.round(gauges.oldestDueMs / 1000) + ' s');
      cell(row, runs[name] ? runs[name].done : 0);
      cell(row, runs[name] ? runs[name].failed : 0);
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'queue-action';
      button.textContent = isPaused ? 'Resume' : 'Pause';
      button.addEventListener('click', () => act('POST', '/queues/' + encodeURIComponent(name) + (isPaused ? '/resume' : '/pause'), (isPaused ? 'resume ' : 'pause ') + name));
      row.insertCell().append(button);
    }
    const workerRows = $('#workers tbody');
    workerRows.replaceChildren();
    for (const worker of workers) {
      const row = workerRows.insertRow();
      cell(row, worker.id + (worker.alive ? '' : ' (not alive)'));
      cell(row, worker.queues.join(', '));
      cell(row, worker.concurrency);
      cell(row, time(worker.heartbeatAt));
    }
  }

  // Stacked bars, one per minute, oldest left; drawn with SVG elements (the policy allows no inline style).
  function chart(finished) {
    const svg = $('#finished');
    const ns = 'http://www.w3.org/2000/svg';
    const peak = Math.max(1, ...finished.done.map((n, i) => n + finished.failed[i]));
    const width = 600 / finished.done.length;
    svg.replaceChildren();
    finished.done.forEach((done, i) => {
      let top = 80;
      for (const [state, n] of [['done', done], ['failed', finished.failed[i]]]) {
        if (n === 0) continue;
        const height = (n / peak) * 78;
        top -= height;
        const bar = document.createElementNS(ns, 'rect');
        bar.setAttribute('class', state);
        bar.setAttribute('x', String(i * width + 0.5));
        bar.setAttribute('y', String(top));
        bar.setAttribute('width', String(Math.max(1, width - 1)));
        bar.setAttribute('height', String(height));
        const title = document.createElementNS(ns, 'title');
        title.textContent = n + ' ' + state + ', ' + new Date(finished.minute - (finished.done.length - 1 - i) * 60000).toLocaleTimeString();
        bar.append(title);
        svg.append(bar);
      }
    });
    const sum = (list) => list.reduce((a, b) => a + b, 0);
    $('#finished-total').textContent = sum(finished.done) + ' done, ' + sum(finished.failed) + ' failed';
  }

  async function requests() {
    const { routes } = await get('/requests');
    const tbody = $('#requests tbody');
    tbody.replaceChildren();
    for (const route of routes) {
      const row = tbody.insertRow();
      row.dataset.route = route.route;
      cell(row, route.route);
      cell(row, route.requests);
      cell(row, route.retried);
      cell(row, Object.entries(route.conflicts).filter(([, n]) => n > 0).map(([kind, n]) => kind + ' ' + n).join(', '));
      cell(row, route.escalations);
      cell(row, route.exhausted);
      cell(row, route.notRetrySafe);
    }
  }

  async function jobs(after) {
    const query = new URLSearchParams(filter);
    query.set('limit', '50');
    if (after) query.set('after', after);
    const page = await get('/jobs?' + query);
    const tbody = $('#jobs tbody');
    if (!after) tbody.replaceChildren();
    for (const job of page.jobs) {
      const row = tbody.insertRow();
      row.dataset.id = job.id;
      cell(row, job.id.slice(0, 8));
      cell(row, job.name);
      cell(row, job.queue);
      cell(row, job.state, 'state state-' + job.state);
      cell(row, job.owner);
      cell(row, job.note ? job.note + (job.requestId ? ' (' + job.requestId + ')' : '') : '');
      cell(row, time(job.createdAt));
      row.addEventListener('click', () => detail(job.id));
    }
    const more = $('#more');
    more.hidden = !page.next;
    more.onclick = () => jobs(page.next);
  }

  async function detail(id) {
    const job = await get('/jobs/' + id);
    shown = id;
    $('#detail').hidden = false;
    $('#detail-id').textContent = id;
    const fields = $('#detail-fields');
    fields.replaceChildren();
    const add = (name, value) => {
      const dt = document.createElement('dt');
      dt.textContent = name;
      const dd = document.createElement('dd');
      dd.textContent = value === null || value === undefined ? '' : String(value);
      dd.dataset.field = name;
      fields.append(dt, dd);
    };
    add('name', job.name);
    add('queue', job.queue);
    add('state', job.state);
    add('owner', job.owner);
    add('request', job.note ? job.note + (job.requestId ? ' (' + job.requestId + ')' : '') : '');
    add('committed by', job.committedAttempt === null ? '' : 'attempt ' + job.committedAttempt + (job.committedAttempt > 1 ? ' (the request was retried)' : ''));
    add('trace', job.traceparent ? job.traceparent.split('-')[1] : '');
    $('#same-request').hidden = !job.requestId;
    $('#same-request').onclick = () => {
      filter = new URLSearchParams({ requestId: job.requestId });
      for (const input of $('#filter').elements) if (input.name) input.value = input.name === 'requestId' ? job.requestId : '';
      jobs();
    };
    add('progress', job.progress ? Math.round(job.progress.fraction * 100) + '% ' + (job.progress.message || '') : '');
    add('runs', job.runs + ' (failures ' + job.failures + ' of ' + job.maxAttempts + ')');
    add('worker', job.lockedBy ? job.lockedBy + ' until ' + time(job.lockedUntil) : '');
    add('scheduled', time(job.createdAt));
    add('committed', time(job.committedAt));
    add('due', time(job.runAt));
    add('claimed', time(job.startedAt));
    add('finished', time(job.finishedAt));
    $('#detail-steps-part').hidden = !job.steps;
    const steps = $('#detail-steps tbody');
    steps.replaceChildren();
    (job.steps || []).forEach((step, index) => {
      const row = steps.insertRow();
      row.dataset.id = step.id;
      cell(row, index + 1);
      cell(row, step.id.slice(0, 8));
      cell(row, step.name);
      cell(row, step.state, 'state state-' + step.state);
      cell(row, time(step.finishedAt));
      row.addEventListener('click', () => detail(step.id));
    });
    const runs = $('#detail-runs tbody');
    runs.replaceChildren();
    for (const run of job.runLog) {
      const row = runs.insertRow();
      cell(row, run.run);
      cell(row, run.worker);
      cell(row, time(run.claimedAt));
      cell(row, time(run.endedAt));
      cell(row, run.outcome + (run.error ? ' (' + run.error + ')' : ''), 'state state-' + (run.outcome === 'done' ? 'done' : run.outcome === 'failed' ? 'failed' : 'pending'));
    }
    $('#detail-args').textContent = JSON.stringify(job.args, null, 2);
    $('#detail-meta').textContent = JSON.stringify(job.meta, null, 2);
    $('#detail-outcome').textContent = job.error ? job.error.name + ': ' + job.error.message : job.result === undefined ? '' : JSON.stringify(job.result, null, 2);
  }

  async function refresh() {
    try {
      await Promise.all([overview(), requests(), jobs()]);
      if (shown) await detail(shown).catch(() => { shown = undefined; $('#detail').hidden = true; });
      $('#updated').textContent = 'updated ' + new Date().toLocaleTimeString();
    } catch (err) {
      $('#updated').textContent = 'could not update: ' + err.message;
    }
  }

  $('#filter').addEventListener('submit', (event) => {
    event.preventDefault();
    filter = new URLSearchParams();
    for (const [key, value] of new FormData(event.target)) if (value) filter.set(key, value);
    jobs();
  });
  $('#retry-all').addEventListener('click', () => act('POST', '/jobs/retry?' + filter, 'retry all matching'));
  $('#delete-all').addEventListener('click', () => act('POST', '/jobs/delete?' + filter, 'delete all matching'));
  $('#retry').addEventListener('click', () => act('POST', '/jobs/' + shown + '/retry', 'retry'));
  $('#run-now').addEventListener('click', () => act('POST', '/jobs/' + shown + '/run-now', 'run now'));
  $('#remove').addEventListener('click', () => act('DELETE', '/jobs/' + shown, 'remove'));
  refresh();
  setInterval(refresh, 2000);
})();
`;
