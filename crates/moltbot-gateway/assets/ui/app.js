// The moltbot Control UI: chat with streamed replies, sessions, health and a metrics
// glance, model versions and traffic, cron jobs, pairing requests, capabilities and exec
// approvals. Plain DOM code with no build step: the gateway embeds this file as it is.
// Every value from the server is written with textContent, never parsed as HTML.
'use strict';

const $ = (sel) => document.querySelector(sel);
const el = (tag, props = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k === 'onclick') node.addEventListener('click', v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c ?? ''));
  return node;
};

// The gateway token lives in localStorage (like a saved login); the admin token only for
// this tab's lifetime.
let token = localStorage.getItem('moltbot-token') || '';
let adminToken = sessionStorage.getItem('moltbot-admin-token') || '';

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, { method, body, admin = false, text = false } = {}) {
  const headers = {};
  const tok = admin ? adminToken : token;
  if (tok) headers.Authorization = 'Bearer ' + tok;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const resp = await fetch(path, {
    method: method || (body !== undefined ? 'POST' : 'GET'),
    headers,
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  if (resp.status === 401 && !admin) {
    showLogin();
    throw new HttpError(401, 'sign in first');
  }
  const raw = await resp.text();
  if (!resp.ok) {
    let message = raw || 'HTTP ' + resp.status;
    try { message = JSON.parse(raw).error.message || message; } catch (e) { /* not JSON */ }
    throw new HttpError(resp.status, message);
  }
  if (text) return raw;
  return raw ? JSON.parse(raw) : {};
}

function toast(message, bad = false) {
  const t = $('#toast');
  t.textContent = message;
  t.className = bad ? 'bad' : '';
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
}

function showError(id, e) {
  const p = $(id);
  if (!e) { p.hidden = true; return; }
  p.textContent = e.message || String(e);
  p.hidden = false;
}

const when = (ms) => (ms ? new Date(ms).toLocaleString() : '—');

function fillTable(id, rows) {
  const body = $(id + ' tbody');
  body.replaceChildren(...rows);
  if (!rows.length) {
    const cols = $(id + ' thead tr').children.length;
    body.append(el('tr', {}, el('td', { colSpan: cols, className: 'hint' }, 'nothing here')));
  }
}

// ---- sign in -------------------------------------------------------------------------

function showLogin(message) {
  $('#login').hidden = false;
  showError('#login-error', message ? new Error(message) : null);
  $('#login-form').token.focus();
}

$('#login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const candidate = ev.target.token.value.trim();
  const resp = await fetch('/api/v1/sessions?limit=1', {
    headers: { Authorization: 'Bearer ' + candidate },
  });
  if (resp.status === 401) {
    showLogin('that token was refused');
    return;
  }
  token = candidate;
  localStorage.setItem('moltbot-token', token);
  showError('#login-error', null);
  ev.target.token.value = '';
  $('#login').hidden = true;
  $('#logout').hidden = false;
  loadHistory();
  refreshAll();
});

$('#logout').addEventListener('click', () => {
  localStorage.removeItem('moltbot-token');
  sessionStorage.removeItem('moltbot-admin-token');
  location.reload();
});

// ---- tabs ----------------------------------------------------------------------------

const refreshers = {};
let current = 'chat';

function showTab() {
  const name = (location.hash || '#chat').slice(1);
  current = refreshers[name] ? name : 'chat';
  for (const s of document.querySelectorAll('.tab')) s.hidden = s.id !== 'tab-' + current;
  for (const a of document.querySelectorAll('#tabs a')) {
    a.classList.toggle('active', a.dataset.tab === current);
  }
  refreshers[current]().catch(() => {});
}
window.addEventListener('hashchange', showTab);

function refreshAll() {
  showTab();
  pollApprovals();
}

// ---- chat ----------------------------------------------------------------------------

const log = $('#log');
const newSessionId = () => 'web-' + crypto.randomUUID();
let sessionId = sessionStorage.getItem('moltbot-session') || newSessionId();
sessionStorage.setItem('moltbot-session', sessionId);

function addMessage(cls, text) {
  const div = el('div', { className: 'msg ' + cls }, text);
  log.append(div);
  log.scrollTop = log.scrollHeight;
  return div;
}

async function loadHistory() {
  log.replaceChildren();
  try {
    const body = await api('/api/v1/sessions/' + encodeURIComponent(sessionId));
    for (const m of body.messages) {
      if (m.role === 'user' || m.role === 'assistant') addMessage(m.role, m.content).dataset.history = '1';
    }
  } catch (e) {
    if (e.status !== 404) addMessage('error', e.message);
  }
}

function selectSession(id) {
  sessionId = id;
  sessionStorage.setItem('moltbot-session', id);
  loadHistory();
  refreshSessions().catch(() => {});
}

async function refreshSessions() {
  const body = await api('/api/v1/sessions?limit=50');
  const items = body.sessions.map((s) => el('li', {
    className: s.id === sessionId ? 'active' : '',
    title: s.id,
    dataset: { session: s.id },
    onclick: () => selectSession(s.id),
  }, s.title || s.id, el('small', {}, `${s.channel} · ${s.message_count} messages · ${when(s.updated_at)}`)));
  $('#sessions').replaceChildren(...items);
}
refreshers.chat = refreshSessions;

$('#new-chat').addEventListener('click', () => {
  sessionId = newSessionId();
  sessionStorage.setItem('moltbot-session', sessionId);
  log.replaceChildren();
  refreshSessions().catch(() => {});
});

// Read a `text/event-stream` body and call `onEvent(name, data)` per event.
async function readSse(resp, onEvent) {
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  let event = 'message';
  let data = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i).replace(/\r$/, '');
      buf = buf.slice(i + 1);
      if (line === '') {
        if (data) onEvent(event, JSON.parse(data));
        event = 'message';
        data = '';
      } else if (line.startsWith('event:')) event = line.slice(6).trim();
      else if (line.startsWith('data:')) data += line.slice(5).trim();
    }
  }
}

$('#chat-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const form = ev.target;
  const message = form.message.value.trim();
  if (!message) return;
  form.message.value = '';
  addMessage('user', message);
  const out = addMessage('assistant', '…');
  let text = '';
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = 'Bearer ' + token;
  try {
    const resp = await fetch('/api/v1/chat', {
      method: 'POST',
      headers,
      body: JSON.stringify({ session_id: sessionId, message, stream: true }),
    });
    if (resp.status === 401) showLogin();
    if (!resp.ok) {
      const body = await resp.json().catch(() => ({}));
      out.className = 'msg error';
      out.textContent = (body.error && body.error.message) || 'HTTP ' + resp.status;
      return;
    }
    await readSse(resp, (event, data) => {
      if (event === 'delta') {
        text += data.text;
        out.textContent = text;
      } else if (event === 'tool') {
        const what = data.phase === 'result' ? `${data.name} → ${data.ok === false ? 'failed' : 'done'}` : `calling ${data.name}`;
        const note = el('div', { className: 'msg tool' }, what);
        // Images a tool produced (a browser screenshot) are shown inline.
        for (const a of data.attachments || []) {
          if (/^image\/(png|jpeg|webp)$/.test(a.mime)) {
            note.append(el('img', { src: `data:${a.mime};base64,${a.data_base64}`, alt: `${data.name} output`, className: 'shot' }));
          }
        }
        log.insertBefore(note, out);
      } else if (event === 'done') {
        if (!text) out.textContent = data.reply;
        const route = data.route ? ` · ${data.route.route}` : '';
        out.append(el('span', { className: 'meta' }, `${data.model}${route} · ${Math.round(data.latency_ms)} ms`));
      } else if (event === 'error') {
        out.className = 'msg error';
        out.textContent = data.error.message;
      }
      log.scrollTop = log.scrollHeight;
    });
  } catch (e) {
    out.className = 'msg error';
    out.textContent = String(e);
  } finally {
    out.dataset.done = '1';
    refreshSessions().catch(() => {});
  }
});

// ---- overview: health and a metrics glance --------------------------------------------

function statusCell(status) {
  const cls = status === 'ok' || status === 'connected' || status === 'running' ? 'ok'
    : status === 'loading' || status === 'starting' || status === 'restarting' ? 'warn' : 'bad';
  return el('td', { className: cls }, status);
}

async function refreshStatus() {
  try {
    const h = await (await fetch('/health')).json();
    const m = h.components.model;
    $('#status').textContent = `${h.status} · model ${m.id || m.status} · v${h.version}`;
    return h;
  } catch (e) {
    $('#status').textContent = 'offline';
    return null;
  }
}

function parseProm(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = line.match(/^([A-Za-z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/);
    if (m) out.push({ name: m[1], labels: m[2] || '', value: parseFloat(m[3]) });
  }
  return out;
}

const sum = (samples, name, filter = () => true) =>
  samples.filter((s) => s.name === name && filter(s.labels)).reduce((a, s) => a + s.value, 0);

// A quantile of a Prometheus histogram (summed over its labels), interpolated in its bucket.
function quantile(samples, name, q) {
  const buckets = new Map();
  for (const s of samples) {
    if (s.name !== name + '_bucket') continue;
    const le = (s.labels.match(/le="([^"]+)"/) || [])[1];
    if (le === undefined) continue;
    const bound = le === '+Inf' ? Infinity : parseFloat(le);
    buckets.set(bound, (buckets.get(bound) || 0) + s.value);
  }
  const sorted = [...buckets.entries()].sort((a, b) => a[0] - b[0]);
  const total = sorted.length ? sorted[sorted.length - 1][1] : 0;
  if (!total) return null;
  const rank = q * total;
  let prevBound = 0;
  let prevCount = 0;
  for (const [bound, count] of sorted) {
    if (count >= rank) {
      if (bound === Infinity) return prevBound;
      const span = count - prevCount;
      return prevBound + (span ? (bound - prevBound) * (rank - prevCount) / span : 0);
    }
    prevBound = bound;
    prevCount = count;
  }
  return prevBound;
}

async function refreshOverview() {
  const h = await refreshStatus();
  const rows = [];
  if (h) {
    rows.push(el('tr', {}, el('td', {}, 'overall'), statusCell(h.status), el('td', {}, `uptime ${Math.round(h.uptime_ms / 1000)} s`)));
    for (const [name, c] of Object.entries(h.components)) {
      if (name === 'channels' || name === 'supervised') {
        for (const [sub, s] of Object.entries(c)) {
          const detail = s.error || s.last_error || (s.restarts ? `${s.restarts} restarts` : '');
          rows.push(el('tr', {}, el('td', {}, `${name === 'channels' ? 'channel' : 'task'} ${sub}`), statusCell(s.status), el('td', {}, detail)));
        }
        continue;
      }
      const detail = c.id || c.detail || c.error || (c.turns_in_flight !== undefined ? `${c.turns_in_flight}/${c.max_concurrent_turns} turns` : '');
      rows.push(el('tr', {}, el('td', {}, name), statusCell(c.status), el('td', {}, detail)));
    }
  }
  fillTable('#health', rows);
  let samples = [];
  try {
    samples = parseProm(await api('/metrics', { text: true }));
    $('#metrics-note').textContent = 'From /metrics; Grafana (deploy/grafana/moltbot.json) shows them over time.';
  } catch (e) {
    $('#metrics-note').textContent = 'metrics unavailable: ' + e.message;
  }
  const ms = (v) => (v === null ? '—' : v.toFixed(1) + ' ms');
  const kvHit = sum(samples, 'moltbot_local_kv_cache_total', (l) => l.includes('result="hit"'));
  const kvAll = sum(samples, 'moltbot_local_kv_cache_total');
  const glance = [
    ['HTTP requests', sum(samples, 'moltbot_http_requests_total')],
    ['HTTP 5xx', sum(samples, 'moltbot_http_requests_total', (l) => /status="5/.test(l))],
    ['errors', sum(samples, 'moltbot_errors_total')],
    ['turns in flight', sum(samples, 'moltbot_concurrent_users')],
    ['inference p50', ms(quantile(samples, 'moltbot_inference_latency', 0.5))],
    ['inference p95', ms(quantile(samples, 'moltbot_inference_latency', 0.95))],
    ['time to first token p95', ms(quantile(samples, 'moltbot_time_to_first_token', 0.95))],
    ['generated tokens', sum(samples, 'moltbot_generated_tokens_total')],
    ['KV cache hit ratio', kvAll ? (kvHit / kvAll).toFixed(3) : '—'],
    ['WebSocket connections', sum(samples, 'moltbot_ws_connections')],
    ['resident memory', (sum(samples, 'process_resident_memory_bytes') / 1048576).toFixed(1) + ' MiB'],
  ];
  fillTable('#metrics', glance.map(([k, v]) => el('tr', {}, el('td', {}, k), el('td', {}, v))));
}
refreshers.overview = refreshOverview;

// ---- models: versions, traffic, load (admin token) -----------------------------------

$('#admin-form').admin.value = adminToken;
$('#admin-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  adminToken = ev.target.admin.value.trim();
  sessionStorage.setItem('moltbot-admin-token', adminToken);
  refreshModels().catch(() => {});
});

async function refreshModels() {
  try {
    const body = await api('/admin/models', { admin: true });
    showError('#models-error', null);
    fillTable('#models', body.versions.map((v) => {
      const state = v.state === 'warming' ? `warming ${v.done}/${v.total}` : v.state;
      const cell = statusCell(v.state === 'ready' ? 'ok' : v.state);
      cell.textContent = v.error ? `${state}: ${v.error}` : state;
      return el('tr', { dataset: { version: v.version } },
        el('td', {}, v.version), el('td', { title: v.source }, v.model), el('td', {}, v.role),
        cell,
        el('td', {}, `${v.traffic_percent}%`), el('td', {}, v.requests), el('td', {}, v.errors));
    }));
  } catch (e) {
    const hint = e.status === 401 ? 'the admin token is missing or wrong (ADMIN_TOKEN)' : e.message;
    showError('#models-error', new Error(hint));
    fillTable('#models', []);
  }
}
refreshers.models = refreshModels;

async function adminAction(path, body) {
  try {
    await api(path, { admin: true, body: body || {} });
    toast('done');
  } catch (e) {
    toast(e.message, true);
  }
  refreshModels().catch(() => {});
}

for (const b of document.querySelectorAll('#traffic [data-weight]')) {
  b.addEventListener('click', () => adminAction('/admin/traffic', { new_model_weight: Number(b.dataset.weight) }));
}
$('#promote').addEventListener('click', () => adminAction('/admin/model/promote'));
$('#rollback').addEventListener('click', () => adminAction('/admin/model/rollback'));
$('#load-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const f = ev.target;
  adminAction('/admin/model/load', {
    model_path: f.model_path.value.trim(),
    warmup: f.warmup.checked,
    warmup_requests: Number(f.warmup_requests.value || 0),
  });
});

// ---- cron ----------------------------------------------------------------------------

function describeTarget(t) {
  return t.kind === 'chat' ? `${t.channel} ${t.chat_id}` : `session ${t.id}`;
}

async function refreshCron() {
  try {
    const body = await api('/api/v1/cron');
    showError('#cron-error', null);
    fillTable('#cron', body.jobs.map((j) => el('tr', { dataset: { job: j.id } },
      el('td', {}, j.name || j.id.slice(0, 8)),
      el('td', {}, `${j.schedule_kind} ${j.schedule_expr} (${j.tz})`),
      el('td', {}, `${j.payload.kind}: ${j.payload.text || j.payload.name || ''}`),
      el('td', {}, describeTarget(j.target)),
      el('td', {}, j.enabled ? when(j.next_run_ms) : 'disabled'),
      el('td', {}, j.last_status ? `${j.last_status} ${when(j.last_run_ms)}` : '—'),
      el('td', {},
        el('button', { type: 'button', onclick: () => cronAction(`/api/v1/cron/${j.id}/run`, 'POST') }, 'Run now'),
        ' ',
        el('button', { type: 'button', onclick: () => cronAction(`/api/v1/cron/${j.id}`, 'DELETE') }, 'Remove')))));
  } catch (e) {
    showError('#cron-error', e);
    fillTable('#cron', []);
  }
}
refreshers.cron = refreshCron;

async function cronAction(path, method) {
  try {
    await api(path, { method, body: method === 'POST' ? {} : undefined });
    toast(method === 'DELETE' ? 'removed' : 'queued');
  } catch (e) {
    toast(e.message, true);
  }
  refreshCron().catch(() => {});
}

$('#cron-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const body = { name: f.name.value.trim() || undefined };
  body[f.kind.value] = f.expr.value.trim();
  if (f.tz.value.trim()) body.tz = f.tz.value.trim();
  body[f.payload.value] = f.text.value;
  if (f.target.value === 'session') body.session = sessionId;
  else {
    body.channel = f.channel.value.trim();
    body.to = f.to.value.trim();
  }
  try {
    await api('/api/v1/cron', { body });
    toast('job added');
    f.expr.value = '';
    f.text.value = '';
  } catch (e) {
    toast(e.message, true);
  }
  refreshCron().catch(() => {});
});

// ---- pairing -------------------------------------------------------------------------

async function approvePairing(channel, code) {
  try {
    const r = await api('/api/v1/pairing/approve', { body: { channel, code } });
    toast(`approved ${r.sender_name || r.sender_id} on ${r.channel}`);
  } catch (e) {
    toast(e.message, true);
  }
  refreshPairing().catch(() => {});
}

async function refreshPairing() {
  try {
    const body = await api('/api/v1/pairing');
    showError('#pairing-error', null);
    fillTable('#pairing', body.requests.map((r) => el('tr', { dataset: { code: r.code } },
      el('td', {}, r.channel),
      el('td', {}, r.sender_name ? `${r.sender_name} (${r.sender_id})` : r.sender_id),
      el('td', {}, el('code', {}, r.code)),
      el('td', {}, when(r.expires_at)),
      el('td', {}, el('button', { type: 'button', dataset: { approve: r.code }, onclick: () => approvePairing(r.channel, r.code) }, 'Approve')))));
    fillTable('#allowed', body.allowed.map((a) => el('tr', { dataset: { sender: a.sender_id } },
      el('td', {}, a.channel),
      el('td', {}, a.sender_name ? `${a.sender_name} (${a.sender_id})` : a.sender_id),
      el('td', {}, `${when(a.approved_at)} via ${a.via}`))));
  } catch (e) {
    showError('#pairing-error', e);
  }
}
refreshers.pairing = refreshPairing;

$('#pairing-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  approvePairing(ev.target.channel.value, ev.target.code.value.trim().toUpperCase());
  ev.target.code.value = '';
});

// ---- capabilities and approvals ------------------------------------------------------

async function refreshCapabilities() {
  const body = await api('/api/v1/capabilities');
  const a = body.agent;
  $('#agent').textContent = a.enabled
    ? `Agent loop on: up to ${a.max_steps} tool steps, ${a.turn_timeout_secs} s per turn.`
    : 'Agent loop off: replies never call tools.';
  fillTable('#capabilities', body.capabilities.map((c) => el('tr', { dataset: { capability: c.name } },
    el('td', {}, c.name), el('td', {}, c.kind), statusCell(c.status === 'loaded' ? 'ok' : c.status),
    el('td', {}, c.reason ? `${c.description} (${c.reason})` : c.description))));
}
refreshers.capabilities = refreshCapabilities;

async function decide(id, approve) {
  try {
    await api('/api/v1/approvals/' + encodeURIComponent(id), { body: { approve } });
    toast(approve ? 'approved' : 'denied');
  } catch (e) {
    toast(e.message, true);
  }
  refreshApprovals().catch(() => {});
}

async function refreshApprovals() {
  const body = await api('/api/v1/approvals');
  fillTable('#approvals', body.approvals.map((r) => el('tr', { dataset: { approval: r.id } },
    el('td', {}, el('code', {}, r.command)), el('td', {}, r.tool), el('td', {}, r.session_id),
    el('td', {}, when(r.expires_ms)),
    el('td', {},
      el('button', { type: 'button', onclick: () => decide(r.id, true) }, 'Approve'), ' ',
      el('button', { type: 'button', onclick: () => decide(r.id, false) }, 'Deny')))));
  return body.approvals.length;
}
refreshers.approvals = refreshApprovals;

async function pollApprovals() {
  try {
    const body = await api('/api/v1/approvals');
    const badge = $('#approvals-badge');
    badge.textContent = body.approvals.length;
    badge.hidden = body.approvals.length === 0;
  } catch (e) { /* capabilities off or signed out */ }
}

// ---- start ---------------------------------------------------------------------------

(async () => {
  $('#logout').hidden = !token;
  refreshStatus();
  // One probe decides whether to ask for the token before anything else is shown.
  try {
    await api('/api/v1/sessions?limit=1');
  } catch (e) {
    if (e.status === 401) return;
  }
  loadHistory();
  refreshAll();
})();

setInterval(() => {
  refreshStatus();
  if ($('#login').hidden) {
    pollApprovals();
    if (current !== 'chat') refreshers[current]().catch(() => {});
  }
}, 5000);
