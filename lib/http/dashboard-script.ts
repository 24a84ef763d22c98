/**
 * The jobs dashboard's script (served as `{prefix}/app.js`): reads and acts
 * through the JSON admin API (admin-api.ts), builds the page's rows with DOM
 * calls and textContent only (no HTML from data), and refreshes every two
 * seconds.
 */

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
    for (const [key, value] of new FormData(event.target)) {
      if (!value) continue;
      // The API takes creation times as ms since the epoch; the inputs give local date and time.
      filter.set(key, key === 'since' || key === 'until' ? String(new Date(value).getTime()) : value);
    }
    jobs();
  });
  $('#open').addEventListener('click', () => {
    const id = $('#lookup').value.trim().toLowerCase();
    if (!/^[0-9a-f]{32}$/.test(id)) {
      $('#message').textContent = 'a job id is 32 hex digits';
      return;
    }
    detail(id).catch(() => { $('#message').textContent = 'no job ' + id; });
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
