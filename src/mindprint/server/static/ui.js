// What every page of the web UI shares: the token, the API call, escaping and formatting, the
// toast, the current page's timers, and what the server said at start-up (/api/info).

// -- token and API ------------------------------------------------------------------------------
const params = new URLSearchParams(location.search);
if (params.get('token')) {
  sessionStorage.setItem('mindprint-token', params.get('token'));
  params.delete('token');
  history.replaceState(null, '', location.pathname + (params.toString() ? '?' + params : '') + location.hash);
}
export const TOKEN = sessionStorage.getItem('mindprint-token') || '';
export const tq = (sep = '?') => (TOKEN ? `${sep}token=${encodeURIComponent(TOKEN)}` : '');

// A failed call throws an Error whose message is the server's detail; err.data keeps the whole
// answer (a 422 of POST /api/runs carries `fields`: [{key, message}] for the form).
export async function api(path, { method = 'GET', json, body } = {}) {
  const headers = {};
  if (TOKEN) headers['Authorization'] = `Bearer ${TOKEN}`;
  if (json !== undefined) { headers['Content-Type'] = 'application/json'; body = JSON.stringify(json); }
  const r = await fetch(path, { method, headers, body });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!r.ok) {
    const err = new Error((data && data.detail && (typeof data.detail === 'string' ? data.detail
      : data.detail.map(d => `${(d.loc || []).join('.')}: ${d.msg}`).join('\n'))) || `HTTP ${r.status}`);
    err.status = r.status; err.data = data;
    throw err;
  }
  return data;
}

// -- small helpers ------------------------------------------------------------------------------
export const $ = (sel, root = document) => root.querySelector(sel);
export const esc = s => String(s ?? '').replace(/[&<>"']/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
export const num = v => (typeof v === 'number' && isFinite(v) ? (Math.abs(v) >= 1000 ? v.toFixed(0) : Number(v.toPrecision(4))) : '–');
export const badge = s => `<span class="badge ${esc(s)}">${esc(s)}</span>`;
export const when = t => (t ? new Date(t * 1000).toLocaleString() : '–');
export function toast(msg) {
  const t = $('#toast'); t.textContent = msg; t.hidden = false;
  clearTimeout(toast._t); toast._t = setTimeout(() => (t.hidden = true), 5000);
}
// a duration in words: "≈ 2 h 05 min", "≈ 40 s"
export function duration(s) {
  if (!isFinite(s)) return '–';
  if (s < 90) return `${Math.max(1, Math.round(s))} s`;
  const m = Math.round(s / 60);
  return m < 90 ? `${m} min` : `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
}

// what /api/info said (filled once by app.js before the first page) and the config fields
export const state = { info: null, fields: null };

// -- the current page's timers and streams, stopped when the route changes ----------------------
let cleanup = [];
export const onLeave = f => cleanup.push(f);
export const every = (ms, f) => { const id = setInterval(f, ms); onLeave(() => clearInterval(id)); };
export function leavePage() { cleanup.forEach(f => f()); cleanup = []; }

// -- job actions shared by the runs, run and evaluation pages -----------------------------------
export async function runAction(id, act, kind = 'runs') {
  try {
    if (act === 'delete') {
      if (!confirm('Delete this job and its files?')) return false;
      await api(`/api/${kind}/${id}`, { method: 'DELETE' });
    } else {
      await api(`/api/${kind}/${id}/${act}`, { method: 'POST' });
    }
    return true;
  } catch (e) { toast(e.message); return false; }
}

// resume only where it can help (the server's `resumable`: interrupted, cancelled, or a crash);
// a run that failed on its config or data offers "edit and retry" (the form, filled) instead
export function actionButtons(j) {
  const b = [];
  if (['queued', 'running'].includes(j.status)) b.push('<button data-act="cancel">cancel</button>');
  if (j.resumable) b.push(`<button data-act="resume">${j.kind === 'train' ? 'resume' : 'run again'}</button>`);
  if (j.kind === 'train' && j.failure && !j.failure.resumable) {
    b.push(`<a class="button" data-act="retry" href="#/new/${esc(j.id)}">edit and retry</a>`);
  }
  if (!['queued', 'running'].includes(j.status)) b.push('<button class="danger" data-act="delete">delete</button>');
  return b.join('');
}
