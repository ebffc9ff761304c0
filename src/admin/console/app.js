// Switchboard's management console. Plain standard JavaScript, no framework, no build
// step: the router serves this file as it is. Every figure and action goes through the
// JSON admin API (docs/admin-api.md) of the origin that served the page.
//
// Credentials: the login form turns them into an Authorization header value kept in this
// tab's sessionStorage and sent explicitly with `credentials: "omit"`, so the browser
// never holds ambient credentials another site could make it send (and never shows its
// own Basic prompt). Texts from the router (queue names, bodies, headers, errors) go into
// the page as text nodes only, never as HTML.
'use strict';

const AUTH_KEY = 'switchboard.console.auth';
const EVERY_MS = Math.max(250, Number(new URLSearchParams(location.search).get('every')) || 1000);
const HISTORY = 120; // samples kept for the overview's charts
const SCREENS = ['overview', 'queues', 'connections', 'routes', 'links', 'dead-letters'];

const $ = (id) => document.getElementById(id);

const state = {
  auth: sessionStorage.getItem(AUTH_KEY),
  // 'admin' (logged in), 'local' (no admin configured: loopback callers read figures only)
  mode: null,
  screen: 'overview',
  timer: null,
  busy: false,
  samples: [], // overview: {t, received, delivered, connections, ready}
  lastMetrics: null,
  lastQueues: null, // {t, byName: Map(name → stats)}
};

class ApiError extends Error {
  constructor(status, message, data) {
    super(message);
    this.status = status;
    this.data = data;
  }
}

/** A request to the admin API; resolves with the parsed JSON (or text). */
async function api(method, path, body, auth = state.auth) {
  const headers = { Accept: 'application/json' };
  if (auth) headers.Authorization = auth;
  const init = { method, headers, credentials: 'omit', cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  const text = await r.text();
  let data = text;
  try { data = JSON.parse(text); } catch (_) { /* plain text */ }
  if (!r.ok) {
    let why = (data && data.error) || (typeof data === 'string' && data.trim()) || r.statusText;
    if (data && data.failed) why = `stopped at a message that could not go: ${JSON.stringify(data.failed)}`;
    throw new ApiError(r.status, why, data);
  }
  return data;
}

/** Creates an element: h('button', {type: 'button', onclick: f}, 'text', child…). */
function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'class') e.className = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function say(text, isError = false) {
  const s = $('status');
  s.textContent = text;
  s.classList.toggle('error', isError);
}

function fail(e) {
  if (e instanceof ApiError && e.status === 401 && state.mode === 'admin') {
    logout('The router asked for the login again.');
    return;
  }
  say(e.message || String(e), true);
}

const fmtTime = (ms) => (ms ? new Date(ms).toLocaleString() : '');
const fmtRate = (x) => (x === null || x === undefined || !Number.isFinite(x) ? '' : x < 10 ? x.toFixed(1) : Math.round(x).toString());
const q = encodeURIComponent;

// ---- login ----------------------------------------------------------------------------

function basic(user, password) {
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return `Basic ${btoa(bin)}`;
}

async function start() {
  $('login-form').addEventListener('submit', onLogin);
  $('logout').addEventListener('click', () => logout('Logged out.'));
  $('routes-reload').addEventListener('click', reloadRoutes);
  $('explain-form').addEventListener('submit', onExplain);
  window.addEventListener('hashchange', () => show(screenOfHash(), true));
  buildCharts();
  if (state.auth) {
    try {
      await api('GET', '/connections');
      return enter('admin');
    } catch (e) {
      sessionStorage.removeItem(AUTH_KEY);
      state.auth = null;
    }
  }
  // Without credentials: a router with no admin configured answers loopback callers.
  try {
    await api('GET', '/routes', undefined, null);
    enter('local');
  } catch (e) {
    showLogin(e.status === 401 ? '' : e.message);
  }
}

function showLogin(why) {
  stopTimer();
  state.mode = null;
  for (const s of document.querySelectorAll('.screen')) s.hidden = true;
  $('nav').hidden = true;
  $('logout').hidden = true;
  $('who').textContent = '';
  $('login').hidden = false;
  $('login-error').textContent = why || '';
  $('login-user').focus();
}

async function onLogin(ev) {
  ev.preventDefault();
  const user = $('login-user').value;
  const token = $('login-token').value.trim();
  const auth = token ? `Bearer ${token}` : basic(user, $('login-password').value);
  $('login-error').textContent = 'Checking…';
  try {
    // An admin-only endpoint: a user who is not an admin is told so here.
    await api('GET', '/connections', undefined, auth);
  } catch (e) {
    $('login-error').textContent = e.status === 401 ? 'Wrong user, password or token.' : e.message;
    return;
  }
  state.auth = auth;
  sessionStorage.setItem(AUTH_KEY, auth);
  $('login-password').value = '';
  $('login-token').value = '';
  enter('admin', token ? 'token' : user);
}

function logout(why) {
  sessionStorage.removeItem(AUTH_KEY);
  state.auth = null;
  say(why);
  showLogin('');
}

function enter(mode, who) {
  state.mode = mode;
  $('login').hidden = true;
  $('nav').hidden = false;
  $('logout').hidden = mode !== 'admin';
  $('who').textContent = mode === 'admin'
    ? `Logged in${who ? ` as ${who}` : ''}`
    : 'No admin is configured: figures only (actions need an admin user or token).';
  show(screenOfHash(), false);
  startTimer();
}

// ---- screens and refresh --------------------------------------------------------------

function screenOfHash() {
  const s = location.hash.replace(/^#/, '');
  return SCREENS.includes(s) ? s : 'overview';
}

function show(screen, moveFocus) {
  if (!state.mode) return;
  state.screen = screen;
  for (const s of SCREENS) $(`screen-${s}`).hidden = s !== screen;
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.getAttribute('href') === `#${screen}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.title = `${$(`${screen}-title`).textContent} · Switchboard console`;
  if (moveFocus) $(`${screen}-title`).focus();
  tick();
}

function startTimer() {
  stopTimer();
  state.timer = setInterval(tick, EVERY_MS);
}

function stopTimer() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
}

const REFRESH = {
  overview: refreshOverview,
  queues: refreshQueues,
  connections: refreshConnections,
  routes: refreshRoutes,
  links: refreshLinks,
  'dead-letters': refreshDeadLetters,
};

async function tick() {
  if (state.busy || !state.mode) return;
  state.busy = true;
  try {
    await sample();
    await REFRESH[state.screen]();
  } catch (e) {
    fail(e);
  } finally {
    state.busy = false;
  }
}

/**
 * Keeps a table body in step with `items` without rebuilding it: rows are matched by
 * key, cells updated in place, so a focused button inside a row keeps its focus.
 */
function syncRows(tbody, items, key, cells, actions) {
  const existing = new Map([...tbody.rows].map((r) => [r.dataset.key, r]));
  let before = tbody.firstElementChild;
  for (const item of items) {
    const k = key(item);
    let row = existing.get(k);
    const texts = cells(item);
    if (!row) {
      row = h('tr', { 'data-key': k });
      texts.forEach((_, i) => row.append(i === 0 ? h('th', { scope: 'row' }) : h('td')));
      if (actions) row.append(h('td', { class: 'actions' }, actions(() => row.item)));
    }
    existing.delete(k);
    row.item = item;
    texts.forEach((t, i) => {
      const s = t === undefined || t === null ? '' : String(t);
      if (row.cells[i].textContent !== s) row.cells[i].textContent = s;
    });
    if (row !== before) tbody.insertBefore(row, before);
    else before = before.nextElementSibling;
  }
  for (const r of existing.values()) r.remove();
}

// ---- overview -------------------------------------------------------------------------

/** Prometheus text → Map(name → summed value over every label set). */
function parseMetrics(text) {
  const sums = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const v = Number(m[3]);
    if (Number.isFinite(v)) sums.set(m[1], (sums.get(m[1]) || 0) + v);
  }
  return sums;
}

const CHARTS = [
  { key: 'received', title: 'Messages received /s', rate: true },
  { key: 'delivered', title: 'Messages delivered /s', rate: true },
  { key: 'ready', title: 'Messages ready in queues' },
  { key: 'connections', title: 'Open connections' },
];

/** Samples the figures the overview charts, whichever screen is shown. */
async function sample() {
  const [text, queues] = await Promise.all([api('GET', '/metrics'), api('GET', '/queues')]);
  const m = parseMetrics(typeof text === 'string' ? text : '');
  const t = performance.now();
  const now = {
    t,
    received: m.get('switchboard_messages_received_total') || 0,
    delivered: m.get('switchboard_messages_delivered_total') || 0,
  };
  const prev = state.lastMetrics;
  state.lastMetrics = now;
  const qs = queues.queues || [];
  const point = {
    ready: qs.reduce((a, x) => a + x.ready, 0),
    connections: m.get('switchboard_connections') || 0,
    received: prev ? Math.max(0, (now.received - prev.received) / ((t - prev.t) / 1000)) : null,
    delivered: prev ? Math.max(0, (now.delivered - prev.delivered) / ((t - prev.t) / 1000)) : null,
  };
  state.samples.push(point);
  if (state.samples.length > HISTORY) state.samples.shift();
  state.metrics = m;
  state.queues = qs;
  state.queuesPrev = state.queuesNow;
  state.queuesNow = { t, byName: new Map(qs.map((x) => [x.name, x])) };
  state.unrouted = queues.unrouted;
  state.blocked = queues.publishers_blocked;
}

function buildCharts() {
  const box = $('charts');
  for (const c of CHARTS) {
    const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
    svg.setAttribute('viewBox', '0 0 240 60');
    svg.setAttribute('role', 'img');
    svg.setAttribute('class', 'chart');
    const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
    line.setAttribute('fill', 'none');
    line.setAttribute('class', 'line');
    svg.append(line);
    c.svg = svg;
    c.line = line;
    c.now = h('span', { class: 'now', 'data-chart': c.key });
    box.append(h('figure', { 'data-chart': c.key }, h('figcaption', {}, `${c.title}: `, c.now), svg));
  }
}

async function refreshOverview() {
  const m = state.metrics;
  const [routes, links, dead] = await Promise.all([
    api('GET', '/routes'),
    api('GET', '/links'),
    state.mode === 'admin' ? api('GET', '/dead-letters') : Promise.resolve(null),
  ]);
  const up = (links || []).filter((l) => ['connected', 'blocked', 'standby'].includes(l.state)).length;
  const figures = [
    ['Connections', m.get('switchboard_connections') || 0],
    ['Queues', state.queues.length],
    ['Messages ready', state.samples.at(-1).ready],
    ['Dead letters', dead ? dead.dead_letter_queues.reduce((a, d) => a + d.ready, 0) : 'needs an admin'],
    ['Routes', `${routes.status.routes} (table version ${routes.status.version})`],
    ['Last reload', routes.status.ok ? 'ok' : `failed (${routes.status.errors.length} errors)`],
    ['Links up', `${up} of ${(links || []).length}`],
    ['Publishers blocked', state.blocked || 'no'],
  ];
  const dl = $('overview-figures');
  dl.replaceChildren(...figures.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, String(v))]));
  for (const c of CHARTS) drawChart(c);
}

function drawChart(c) {
  const values = state.samples.map((s) => s[c.key]).filter((v) => v !== null);
  const last = values.length ? values[values.length - 1] : null;
  const peak = Math.max(1, ...values);
  const n = HISTORY - 1;
  const offset = HISTORY - values.length;
  const pts = values.map((v, i) => `${(((offset + i) / n) * 240).toFixed(1)},${(58 - (v / peak) * 56).toFixed(1)}`);
  c.line.setAttribute('points', pts.join(' '));
  const shown = c.rate ? fmtRate(last) : String(last ?? '');
  c.now.textContent = shown;
  c.svg.setAttribute('aria-label', `${c.title}, last ${values.length} samples: now ${shown || 'unknown'}, peak ${c.rate ? fmtRate(peak) : peak}`);
}

// ---- queues ---------------------------------------------------------------------------

function queueRate(name, field) {
  const a = state.queuesPrev && state.queuesPrev.byName.get(name);
  const b = state.queuesNow && state.queuesNow.byName.get(name);
  if (!a || !b) return null;
  const dt = (state.queuesNow.t - state.queuesPrev.t) / 1000;
  return dt > 0 ? Math.max(0, (b[field] - a[field]) / dt) : null;
}

async function refreshQueues() {
  syncRows($('queues-rows'), state.queues, (x) => x.name,
    (x) => [x.name, x.ready, x.unacked, x.consumers, fmtRate(queueRate(x.name, 'published')),
      fmtRate(queueRate(x.name, 'delivered')), x.dead_lettered],
    (item) => [
      h('button', { type: 'button', onclick: () => peekQueue(item().name) }, 'Peek'),
      h('button', { type: 'button', onclick: () => moveForm(item().name) }, 'Move…'),
      h('button', { type: 'button', onclick: () => purgeForm(item().name) }, 'Purge…'),
    ]);
}

function openPanel(prefix, title) {
  const panel = $(`${prefix}-panel`);
  panel.hidden = false;
  $(`${prefix}-panel-title`).textContent = title;
  $(`${prefix}-panel-body`).replaceChildren();
  return $(`${prefix}-panel-body`);
}

function focusPanel(prefix) {
  $(`${prefix}-panel-title`).focus();
}

async function peekQueue(name) {
  const body = openPanel('queue', `Messages in ${name}`);
  try {
    const r = await api('GET', `/queues/${q(name)}/messages?limit=50`);
    body.append(
      h('p', {}, `${r.ready} ready; the first ${r.messages.length} shown. Peeking leaves them in the queue.`),
      h('p', {}, h('button', { type: 'button', onclick: () => peekQueue(name) }, 'Refresh')),
      messageList(name, r.messages, () => peekQueue(name), false),
    );
    focusPanel('queue');
  } catch (e) {
    fail(e);
  }
}

function moveForm(name) {
  const body = openPanel('queue', `Move messages out of ${name}`);
  const to = h('input', { id: 'move-to', required: true, placeholder: 'queue:NAME' });
  const count = h('input', { id: 'move-count', type: 'number', min: '1' });
  const form = h('form', {},
    h('p', {}, h('label', { for: 'move-to' }, 'To (queue:NAME or topic:NAME)'), ' ', to),
    h('p', {}, h('label', { for: 'move-count' }, 'How many (empty: every ready message)'), ' ', count),
    h('p', {}, h('button', { type: 'submit' }, 'Move')));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const req = { to: to.value.trim() };
    if (count.value) req.count = Number(count.value);
    try {
      const r = await api('POST', `/queues/${q(name)}/move`, req);
      say(`Moved ${r.moved} message(s) from ${name} to ${to.value.trim()}.`);
      tick();
    } catch (e) {
      fail(e);
    }
  });
  body.append(form);
  to.focus();
}

function purgeForm(name) {
  const body = openPanel('queue', `Purge ${name}`);
  confirmIn(body, `Remove every ready message of ${name}? Messages delivered and not yet acknowledged stay.`, 'Purge', async () => {
    const r = await api('POST', `/queues/${q(name)}/purge`);
    say(`Purged ${r.purged} message(s) from ${name}.`);
    $('queue-panel').hidden = true;
    tick();
  });
}

/** An inline confirmation: a question, a button that acts, one that cancels. */
function confirmIn(container, question, label, act) {
  const box = h('div', { class: 'confirm', role: 'group', 'aria-label': question });
  const undo = () => { box.remove(); };
  const yes = h('button', {
    type: 'button',
    class: 'danger',
    onclick: async () => {
      try { await act(); } catch (e) { fail(e); }
      box.remove();
    },
  }, label);
  box.append(h('p', {}, question), yes, ' ', h('button', { type: 'button', onclick: undo }, 'Cancel'));
  container.append(box);
  yes.focus();
}

/** Cards of messages (peek results) with their actions. */
function messageList(queue, messages, refresh, deadLetters) {
  const list = h('ol', { class: 'messages' });
  for (const m of messages) list.append(h('li', {}, messageCard(queue, m, refresh, deadLetters)));
  if (!messages.length) list.append(h('li', {}, 'No ready messages.'));
  return list;
}

function messageCard(queue, m, refresh, deadLetters) {
  const facts = [
    ['Id', m.id], ['Sequence', m.seq], ['Destination', m.destination],
    ['Deliveries', m.deliveries], ['Redelivered', m.redelivered ? 'yes' : 'no'],
    ['Sent', fmtTime(m.timestamp_ms)], ['Expires', fmtTime(m.expiry_ms)],
    ['Content type', m.content_type], ['Persistent', m.persistent ? 'yes' : 'no'],
    ['Priority', m.priority], ['Correlation id', m.correlation_id], ['Reply to', m.reply_to],
    ['From', m.origin ? `${m.origin.protocol} ${m.origin.peer}` : ''],
  ];
  if (m.death) {
    facts.unshift(['Died because', m.death.reason], ['Died in', m.death.queue],
      ['Sent to', m.death.destination], ['Deliveries before', m.death.deliveries]);
  }
  const dl = h('dl', { class: 'facts' }, facts.filter(([, v]) => v !== null && v !== undefined && v !== '')
    .flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, String(v))]));
  const headers = h('table', { class: 'headers' },
    h('caption', {}, `Headers (${m.headers.length})`),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col' }, 'Value'))),
    h('tbody', {}, m.headers.map(([k, v]) => h('tr', {}, h('td', {}, k), h('td', {}, v)))));
  const note = `${m.body_size} bytes${m.body_encoding === 'base64' ? ', binary: shown in base64' : ''}${m.truncated ? ', cut short' : ''}`;
  const body = h('figure', { class: 'body' }, h('figcaption', {}, `Body (${note})`), h('pre', { class: 'body-text', tabindex: '0' }, m.body));
  const actions = h('div', { class: 'actions' });
  const path = `/queues/${q(queue)}/messages/${q(m.id)}`;
  const seq = `?seq=${m.seq}`;
  if (deadLetters) {
    const target = m.death && m.death.destination;
    actions.append(h('button', {
      type: 'button',
      class: 'replay',
      onclick: async () => {
        try {
          const r = await api('POST', `${path}/replay${seq}`, {});
          say(`Replayed ${r.moved} message(s) to ${Object.keys(r.to || {}).join(', ') || target}.`);
          await refresh();
        } catch (e) { fail(e); }
      },
    }, target ? `Replay to ${target}` : 'Replay'));
    const id = `replay-to-${m.seq}`;
    const other = h('input', { id, placeholder: 'queue:NAME' });
    const form = h('form', { class: 'inline' }, h('label', { for: id }, 'or to'), ' ', other, ' ',
      h('button', { type: 'submit' }, 'Replay there'));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      try {
        const r = await api('POST', `${path}/replay${seq}`, { to: other.value.trim() });
        say(`Replayed ${r.moved} message(s) to ${other.value.trim()}.`);
        await refresh();
      } catch (e) { fail(e); }
    });
    actions.append(' ', form);
  }
  actions.append(' ', h('button', {
    type: 'button',
    class: 'delete',
    onclick: () => confirmIn(actions, `Delete message ${m.id} for good?`, 'Delete', async () => {
      await api('DELETE', `${path}${seq}`);
      say(`Deleted message ${m.id}.`);
      await refresh();
    }),
  }, 'Delete…'));
  // Collapsed in a peek (a list to scan), open among dead letters (each one to judge).
  const preview = m.body_encoding === 'text' ? m.body.slice(0, 80) : '(binary)';
  return h('article', { class: 'message', 'data-id': m.id, 'aria-label': `Message ${m.seq}` },
    h('details', { open: deadLetters },
      h('summary', {}, h('strong', {}, `Message ${m.seq}`), ` ${preview}`), dl, headers, body, actions));
}

// ---- connections ----------------------------------------------------------------------

async function refreshConnections() {
  const r = await api('GET', '/connections');
  syncRows($('connections-rows'), r.connections, (c) => String(c.id),
    (c) => [c.id, c.protocol, c.listener, c.user, c.client_id, c.peer, fmtTime(c.since_unix_ms)],
    (item) => [h('button', {
      type: 'button',
      onclick: (ev) => confirmIn(ev.target.parentElement, `Close connection ${item().id} (${item().peer})?`, 'Close', async () => {
        await api('DELETE', `/connections/${item().id}`);
        say(`Closed connection ${item().id}.`);
        tick();
      }),
    }, 'Close…')]);
}

// ---- routes ---------------------------------------------------------------------------

/** `file:line:column: message` → its parts (the reload's error format). */
function splitError(text) {
  const m = /^(.*?):(\d+):(\d+): ([\s\S]*)$/.exec(text);
  return m ? { file: m[1], line: m[2], column: m[3], message: m[4] } : null;
}

let shownErrors = '';

async function refreshRoutes() {
  const r = await api('GET', '/routes');
  const st = r.status;
  const dl = $('routes-status');
  dl.replaceChildren(...[
    ['Table version in force', st.version], ['Routes', st.routes],
    ['Last reload', `${st.ok ? 'ok' : 'failed: the previous table stays in force'} (${st.trigger}, ${fmtTime(st.at_unix_ms)})`],
    ['Reload attempts', st.attempts],
  ].flatMap(([k, v]) => [h('dt', {}, k), h('dd', { 'data-field': k }, String(v))]));
  const key = JSON.stringify(st.errors);
  if (key !== shownErrors) {
    shownErrors = key;
    const box = $('routes-errors');
    if (!st.errors.length) box.replaceChildren();
    else {
      box.replaceChildren(h('h3', {}, `The last reload failed (${st.errors.length} error${st.errors.length > 1 ? 's' : ''})`),
        h('ul', { class: 'errors' }, st.errors.map((e) => {
          const p = splitError(e);
          return p
            ? h('li', {}, h('code', {}, p.file), `, line ${p.line}, column ${p.column}: ${p.message}`)
            : h('li', {}, e);
        })));
    }
  }
  const files = new Map();
  for (const route of r.routes) files.set(route.file, (files.get(route.file) || 0) + 1);
  syncRows($('files-rows'), [...files], ([f]) => f, ([f, n]) => [f, n, st.version]);
  syncRows($('routes-rows'), r.routes, (x) => x.name,
    (x) => [x.name, `${x.file}:${x.line}`, x.from, x.targets + (x.passthrough ? ' + passthrough' : ''), x.matches, x.errors]);
}

async function reloadRoutes() {
  try {
    const r = await api('POST', '/routes/reload');
    say(`Reloaded: table version ${r.version}, ${r.routes} routes.`);
  } catch (e) {
    if (e.status === 422) say('The reload failed; the previous table stays in force (errors below).', true);
    else fail(e);
  }
  await tick();
}

async function onExplain(ev) {
  ev.preventDefault();
  const headers = $('explain-headers').value.split('\n').map((l) => l.trim()).filter(Boolean).map((l) => {
    const i = l.indexOf('=');
    return i < 0 ? [l, ''] : [l.slice(0, i), l.slice(i + 1)];
  });
  const words = [$('explain-protocol').value, ...$('explain-address').value.trim().split(/\s+/)];
  const out = $('explain-output');
  try {
    const r = await api('POST', '/explain', { query: words, headers, body: $('explain-body').value });
    out.textContent = r.text;
    out.classList.remove('error');
  } catch (e) {
    out.textContent = e.message;
    out.classList.add('error');
  }
}

// ---- links ----------------------------------------------------------------------------

async function refreshLinks() {
  const links = await api('GET', '/links');
  syncRows($('links-rows'), links, (l) => l.name,
    (l) => [l.name, l.kind, l.peer, l.state, l.held_by, fmtTime(l.since_unix_ms), l.counters.received,
      l.counters.published, l.counters.reconnects, l.last_error]);
  let text;
  try {
    text = JSON.stringify(await api('GET', '/cluster'), null, 2);
  } catch (e) {
    if (e.status !== 404) throw e;
    text = 'This router runs alone (not in a cluster).';
  }
  if ($('cluster').textContent !== text) $('cluster').textContent = text;
}

// ---- dead letters ---------------------------------------------------------------------

async function refreshDeadLetters() {
  const r = await api('GET', '/dead-letters');
  syncRows($('dlq-rows'), r.dead_letter_queues, (d) => d.queue,
    (d) => [d.queue, d.ready, d.from.join(', ')],
    (item) => [
      h('button', { type: 'button', class: 'show', onclick: () => showDeadLetters(item().queue) }, 'Show messages'),
      h('button', {
        type: 'button',
        onclick: async () => {
          try {
            const x = await api('POST', `/queues/${q(item().queue)}/replay`, {});
            say(`Replayed ${x.moved} message(s) from ${item().queue}.`);
            tick();
          } catch (e) { fail(e); }
        },
      }, 'Replay all'),
    ]);
}

async function showDeadLetters(name) {
  const body = openPanel('dlq', `Dead letters in ${name}`);
  try {
    const r = await api('GET', `/queues/${q(name)}/messages?limit=50`);
    body.append(
      h('p', {}, `${r.ready} dead letter(s); the first ${r.messages.length} shown.`),
      h('p', {}, h('button', { type: 'button', onclick: () => showDeadLetters(name) }, 'Refresh')),
      messageList(name, r.messages, () => showDeadLetters(name).then(tick), true),
    );
    focusPanel('dlq');
  } catch (e) {
    fail(e);
  }
}

start();
