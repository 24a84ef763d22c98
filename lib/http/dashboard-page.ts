/**
 * The jobs dashboard's page: its HTML document and its style, served with its
 * script (dashboard-script.ts) by the package itself (no CDN) under a strict
 * Content-Security-Policy.
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
<label>created from <input name="since" type="datetime-local"></label>
<label>until <input name="until" type="datetime-local"></label>
<button type="submit">Show</button>
<label>job id <input id="lookup" form="none" size="34" placeholder="32 hex digits"></label><button type="button" id="open">Open</button>
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
