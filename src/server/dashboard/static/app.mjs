/* global document, window, location, history, sessionStorage, fetch, URLSearchParams, uPlot */
// The post-scheduler dashboard: plain DOM, no framework, no build step. It reads the
// HTTP API (/api/...) with the API token and nothing else. Every piece of data goes
// into the page through textContent or createElement, never as HTML: a post whose text
// is `<script>...</script>` shows as that text. (The page's Content-Security-Policy,
// script-src 'self', is the second guard.)

/** how often the page reads the API again (also on the Refresh button) */
const REFRESH_MS = 5_000;
/** the token is kept for this tab only; it is never put in a URL the server sees */
const TOKEN_KEY = 'post-scheduler.api-token';
/** the week-ahead calendar reads at most CALENDAR_PAGES pages of CALENDAR_PAGE posts */
const CALENDAR_PAGE = 500;
const CALENDAR_PAGES = 4;
/** failed and unknown posts listed (newest first) */
const ATTENTION_LIMIT = 100;
const CYCLES_LIMIT = 10;
const COUNTS = ['duePending', 'scheduledLater', 'processing', 'published', 'failed', 'cancelled', 'unknown'];
const ALERT_COUNTS = new Set(['failed', 'unknown']);

/** an API answer of 401: the token is asked for again */
class Unauthorized extends Error {}

const $ = (id) => {
  const node = document.getElementById(id);
  if (node === null) throw new Error(`the page has no #${id}`);
  return node;
};

/** An element with text children only: strings become text nodes, never markup. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (name === 'class') node.className = value;
    else node.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === 'string' || typeof child === 'number' ? String(child) : child);
  }
  return node;
}

// ---- the token -------------------------------------------------------------------

/** `#token=...` in the address (the fragment never reaches the server), else this tab's stored one. */
function takeToken() {
  const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (m !== null) {
    let given = m[1] ?? '';
    try {
      given = decodeURIComponent(given);
    } catch {
      // not percent-encoded as a URL would be: taken as written
    }
    sessionStorage.setItem(TOKEN_KEY, given);
    // out of the address bar, the history and any copy of the link
    history.replaceState(null, '', location.pathname + location.search);
    return given;
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

let token = takeToken();
let asking = false;

function askToken(reason) {
  asking = true;
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $('main').hidden = true;
  $('login').hidden = false;
  $('login-reason').textContent = reason;
  $('token-input').focus();
}

$('login').addEventListener('submit', (event) => {
  event.preventDefault();
  const input = $('token-input');
  token = input.value.trim();
  input.value = '';
  sessionStorage.setItem(TOKEN_KEY, token);
  asking = false;
  $('login').hidden = true;
  $('main').hidden = false;
  void refresh();
});

// ---- the API ---------------------------------------------------------------------

async function api(method, path) {
  const headers = {};
  if (token !== null && token !== '') headers['authorization'] = `Bearer ${token}`;
  const res = await fetch(path, { method, headers, cache: 'no-store' });
  let body = null;
  try {
    body = await res.json();
  } catch {
    // not JSON: the status says enough
  }
  if (res.status === 401) {
    if (!asking) askToken(token === null ? 'The server needs its API token.' : 'The server refused that token (401): enter it again.');
    throw new Unauthorized('unauthorized');
  }
  if (!res.ok) {
    const why = body !== null && typeof body.error === 'string' ? body.error : `HTTP ${res.status}`;
    throw new Error(`${method} ${path}: ${why}`);
  }
  return body;
}

// ---- figures ---------------------------------------------------------------------

/** 850ms, 12.3s, 4m 10s, 2h 5m (as `status` prints them) */
function humanMs(ms) {
  if (ms === null || ms === undefined) return '–';
  if (ms < 1000) return `${ms}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const s = Math.round(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

const dateTime = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
const timeOfDay = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const clock = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayName = new Intl.DateTimeFormat(undefined, { weekday: 'short', month: 'short', day: 'numeric' });
const when = (iso) => (iso === null || iso === undefined ? '–' : dateTime.format(new Date(iso)));

async function loadStatus() {
  const status = await api('GET', '/api/status');
  for (const name of COUNTS) {
    const dd = $(`count-${name}`);
    const n = Number(status.counts?.[name] ?? 0);
    dd.textContent = String(n);
    if (ALERT_COUNTS.has(name)) dd.classList.toggle('alert', n > 0);
  }
  const notes = [];
  if (status.estimated === true) notes.push('Published, failed and cancelled are estimates (a large PostgreSQL table).');
  for (const p of status.operatorPaused ?? []) notes.push(`Channel ${p.channel} paused since ${when(p.since)}.`);
  for (const p of status.pausedChannels ?? []) notes.push(`Channel ${p.channel} rate-limited until ${when(p.until)}.`);
  $('counts-note').textContent = notes.join(' ');
  const l = status.glance?.lateness ?? {};
  $('lateness-p50').textContent = humanMs(l.p50Ms);
  $('lateness-p90').textContent = humanMs(l.p90Ms);
  $('lateness-p99').textContent = humanMs(l.p99Ms);
  $('lateness-max').textContent = humanMs(l.maxMs);
  const hours = Math.round(Number(l.windowMs ?? 0) / 3_600_000);
  $('lateness-title').textContent = `Lateness (published posts of the last ${hours} h: ${Number(l.posts ?? 0)})`;
}

// ---- the activity chart (uPlot) --------------------------------------------------

let chart = null;

/** One x axis (seconds) for the three series: every minute of the range, plus each cycle's start. */
function activityData(a) {
  const step = a.bucketMs / 1000;
  const from = Math.floor(Date.parse(a.from) / 1000 / step) * step;
  const to = Date.parse(a.to) / 1000;
  const perMinute = (points) => {
    const m = new Map();
    for (const p of points) {
      const t = Math.floor(Date.parse(p.at) / 1000 / step) * step;
      m.set(t, (m.get(t) ?? 0) + p.posts);
    }
    return m;
  };
  const published = perMinute(a.published);
  const failed = perMinute(a.failed);
  const backlog = new Map(a.backlog.map((b) => [Date.parse(b.at) / 1000, b.due]));
  const xs = new Set(backlog.keys());
  for (let t = from; t <= to; t += step) xs.add(t);
  const x = [...xs].sort((p, q) => p - q);
  const minute = (m) => x.map((t) => (t % step === 0 ? (m.get(t) ?? 0) : null));
  return [x, x.map((t) => backlog.get(t) ?? null), minute(published), minute(failed)];
}

async function loadActivity() {
  const a = await api('GET', `/api/activity?hours=${encodeURIComponent($('hours').value)}`);
  const data = activityData(a);
  const box = $('chart');
  if (chart !== null) {
    chart.setData(data);
    return;
  }
  const stepped = uPlot.paths.stepped({ align: 1 });
  chart = new uPlot(
    {
      width: Math.max(box.clientWidth, 300),
      height: 280,
      scales: { x: { time: true } },
      // whole posts: no 0.5 ticks
      axes: [{}, { label: 'posts', incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000] }],
      series: [
        {},
        { label: 'backlog (due at cycle start)', stroke: '#1f6feb', width: 2, spanGaps: true, points: { show: true, size: 5 } },
        { label: 'published / min', stroke: '#067647', fill: 'rgba(6,118,71,0.15)', paths: stepped, spanGaps: true, points: { show: false } },
        { label: 'failed / min', stroke: '#b42318', paths: stepped, spanGaps: true, points: { show: false } },
      ],
    },
    data,
    box,
  );
}

window.addEventListener('resize', () => {
  if (chart !== null) chart.setSize({ width: Math.max($('chart').clientWidth, 300), height: 280 });
});
$('hours').addEventListener('change', () => void refresh());

// ---- the week ahead --------------------------------------------------------------

/** Pending posts from now to the end of the 7th day, following `next` cursors up to a bound. */
async function loadCalendar() {
  const now = new Date();
  const start = new Date(now.getFullYear(), now.getMonth(), now.getDate());
  const end = new Date(start.getFullYear(), start.getMonth(), start.getDate() + 7);
  const posts = [];
  let cursor = null;
  let pages = 0;
  do {
    const q = new URLSearchParams({ status: 'pending', from: now.toISOString(), to: end.toISOString(), order: 'next', limit: String(CALENDAR_PAGE) });
    if (cursor !== null) q.set('cursor', cursor);
    const page = await api('GET', `/api/posts?${q.toString()}`);
    posts.push(...page.posts);
    cursor = page.next ?? null;
    pages += 1;
  } while (cursor !== null && pages < CALENDAR_PAGES);

  const days = [];
  for (let i = 0; i < 7; i++) {
    const from = new Date(start.getFullYear(), start.getMonth(), start.getDate() + i);
    const to = new Date(start.getFullYear(), start.getMonth(), start.getDate() + i + 1);
    const byChannel = new Map();
    for (const p of posts) {
      const t = Date.parse(p.runAt);
      if (t < from.getTime() || t >= to.getTime()) continue;
      const list = byChannel.get(p.channel) ?? [];
      list.push(p);
      byChannel.set(p.channel, list);
    }
    const column = el('div', { class: 'day', 'data-day': i }, el('h3', {}, i === 0 ? `Today, ${dayName.format(from)}` : dayName.format(from)));
    if (byChannel.size === 0) column.append(el('p', { class: 'muted' }, 'nothing scheduled'));
    for (const channel of [...byChannel.keys()].sort()) {
      const list = byChannel.get(channel);
      column.append(el('h4', {}, `${channel} (${list.length})`));
      column.append(
        el(
          'ul',
          {},
          ...list.map((p) => el('li', { 'data-post-id': p.id, title: p.text ?? '' }, el('time', { datetime: p.runAt }, clock.format(new Date(p.runAt))), shorten(p.text ?? '', 120))),
        ),
      );
    }
    days.push(column);
  }
  $('calendar').replaceChildren(...days);
  $('calendar-note').textContent =
    cursor !== null ? `Showing the first ${posts.length} posts of the week; more are scheduled (see GET /api/posts).` : `${posts.length} posts scheduled in the week ahead.`;
}

function shorten(text, n) {
  return text.length <= n ? text : `${text.slice(0, n - 1)}…`;
}

// ---- failed and unknown posts, with their actions --------------------------------

/** posts acted on from this page (answered or refused): listed with their current status until the page is reloaded */
const followed = new Set();
/** post id -> the answer to the last action on it ({ text, error }) */
const notes = new Map();
const ACTIONS = [
  { action: 'retry', label: 'Retry', from: ['failed', 'unknown'] },
  { action: 'mark-published', label: 'Mark published', from: ['unknown'] },
  { action: 'cancel', label: 'Cancel', from: ['unknown'], confirm: 'Confirm cancel' },
];

async function loadAttention() {
  const page = await api('GET', `/api/posts?status=failed,unknown&order=newest&limit=${ATTENTION_LIMIT}`);
  const posts = [...page.posts];
  const listed = new Set(posts.map((p) => p.id));
  const others = await Promise.all(
    [...followed].filter((id) => !listed.has(id)).map((id) => api('GET', `/api/posts/${id}`).then((d) => summary(d.post), () => null)),
  );
  for (const p of others) if (p !== null) posts.push(p);
  renderAttention(posts);
}

/** GET /api/posts/:id's post in the shape of a list row */
function summary(post) {
  return { ...post, text: (post.parts ?? []).map((part) => part.text).join('\n\n') };
}

function renderAttention(posts) {
  const rows = posts.map((p) => {
    const status = el('td', { class: `status status-${p.status}` }, p.status);
    const note = notes.get(p.id);
    const actions = el('td', { class: 'actions' });
    const row = el(
      'tr',
      { 'data-post-id': p.id },
      el('td', {}, `#${p.id}`),
      status,
      el('td', {}, p.channel ?? '–'),
      el('td', {}, when(p.runAt)),
      el('td', {}, String(p.attempts)),
      el('td', { class: 'text' }, p.text ?? ''),
      el('td', { class: 'last-error' }, p.lastError ?? ''),
      actions,
    );
    for (const a of ACTIONS) {
      if (!a.from.includes(p.status)) continue;
      const button = el('button', { type: 'button', 'data-action': a.action }, a.label);
      button.addEventListener('click', () => {
        if (a.confirm !== undefined && button.textContent !== a.confirm) {
          button.textContent = a.confirm;
          return;
        }
        void act(p, a, row);
      });
      actions.append(button);
    }
    if (note !== undefined) actions.append(el('p', { class: note.error ? 'note error' : 'note muted' }, note.text));
    return row;
  });
  $('attention').tBodies[0].replaceChildren(...rows);
  $('attention-empty').hidden = rows.length > 0;
}

async function act(post, a, row) {
  for (const b of row.querySelectorAll('button')) b.disabled = true;
  // listed from now on with its current status and the answer, even when it leaves failed/unknown
  followed.add(post.id);
  try {
    const answer = await api('POST', `/api/posts/${post.id}/${a.action}`);
    // what was done and what the server answered; the status column shows where the post is now
    const done = `${a.label} at ${timeOfDay.format(new Date())} → ${answer.status}`;
    notes.set(post.id, { text: done, error: false });
    // the row at once; the rest of the page on the refresh below
    const status = row.querySelector('td.status');
    status.textContent = answer.status;
    status.className = `status status-${answer.status}`;
    row.querySelector('td.actions').replaceChildren(el('p', { class: 'note muted' }, done));
  } catch (e) {
    if (e instanceof Unauthorized) return;
    notes.set(post.id, { text: `${a.label} refused: ${e instanceof Error ? e.message : String(e)}`, error: true });
    const actions = row.querySelector('td.actions');
    for (const b of actions.querySelectorAll('button')) b.disabled = false;
    for (const n of actions.querySelectorAll('.note')) n.remove();
    actions.append(el('p', { class: 'note error' }, notes.get(post.id).text));
    return;
  }
  await refresh();
}

// ---- recent cycles ---------------------------------------------------------------

async function loadCycles() {
  const { cycles } = await api('GET', `/api/cycles?limit=${CYCLES_LIMIT}`);
  const rows = cycles.map((c) =>
    el(
      'tr',
      { 'data-cycle-id': c.id },
      el('td', {}, `#${c.id}`),
      el('td', {}, when(c.startedAt)),
      el('td', {}, c.host),
      el('td', {}, c.state),
      el('td', {}, String(c.pending)),
      el('td', {}, `${c.workersSpawned} spawned, ${c.workersSucceeded} ok, ${c.workersFailed} failed`),
      el('td', {}, humanMs(c.durationMs)),
      el('td', {}, c.exitCode === null ? '–' : String(c.exitCode)),
      el(
        'td',
        {},
        el(
          'ul',
          { class: 'runs' },
          ...(c.runs ?? []).map((r) =>
            el(
              'li',
              { 'data-worker-id': r.workerId },
              `${r.workerId}: ${r.signal !== null && r.signal !== undefined ? `killed (${r.signal})` : r.exitCode === null ? 'running' : `exit ${r.exitCode}`}` +
                ` · ${r.published} published, ${r.retried} retried, ${r.failed} failed · ${humanMs(r.durationMs)}`,
            ),
          ),
        ),
      ),
    ),
  );
  $('cycles').tBodies[0].replaceChildren(...rows);
  $('cycles-empty').hidden = rows.length > 0;
}

// ---- refreshing ------------------------------------------------------------------

const SECTIONS = [
  ['Counts', loadStatus],
  ['Activity', loadActivity],
  ['Week ahead', loadCalendar],
  ['Failed and unknown', loadAttention],
  ['Cycles', loadCycles],
];
let running = null;
let queued = null;

/** Reads every section again. One reading at a time: a call during one runs once more after it. */
function refresh() {
  if (running !== null) {
    queued ??= running.then(() => {
      queued = null;
      return refresh();
    });
    return queued;
  }
  running = readAll().finally(() => (running = null));
  return running;
}

async function readAll() {
  const results = await Promise.allSettled(SECTIONS.map(([, load]) => load()));
  if (asking) return;
  $('main').hidden = false;
  const errors = results.flatMap((r, i) => (r.status === 'rejected' ? [`${SECTIONS[i][0]}: ${r.reason instanceof Error ? r.reason.message : String(r.reason)}`] : []));
  $('error').hidden = errors.length === 0;
  $('error').textContent = errors.join(' · ');
  $('updated').textContent = `updated ${timeOfDay.format(new Date())}`;
}

$('refresh').addEventListener('click', () => void refresh());
window.setInterval(() => {
  if (!asking && document.visibilityState !== 'hidden') void refresh();
}, REFRESH_MS);
void refresh();
