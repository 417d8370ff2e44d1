// Mindprint web UI: plain ES modules, no build step. Pages are routed on location.hash.
import { LineChart, COLORS } from './chart.js';
import { pageChat } from './chat.js';

// -- token and API ------------------------------------------------------------------------------
const params = new URLSearchParams(location.search);
if (params.get('token')) {
  sessionStorage.setItem('mindprint-token', params.get('token'));
  params.delete('token');
  history.replaceState(null, '', location.pathname + (params.toString() ? '?' + params : '') + location.hash);
}
const TOKEN = sessionStorage.getItem('mindprint-token') || '';
const tq = (sep = '?') => (TOKEN ? `${sep}token=${encodeURIComponent(TOKEN)}` : '');

async function api(path, { method = 'GET', json, body } = {}) {
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
const $ = (sel, root = document) => root.querySelector(sel);
const esc = s => String(s ?? '').replace(/[&<>"']/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
const num = v => (typeof v === 'number' && isFinite(v) ? (Math.abs(v) >= 1000 ? v.toFixed(0) : Number(v.toPrecision(4))) : '–');
const badge = s => `<span class="badge ${esc(s)}">${esc(s)}</span>`;
const when = t => (t ? new Date(t * 1000).toLocaleString() : '–');
function toast(msg) {
  const t = $('#toast'); t.textContent = msg; t.hidden = false;
  clearTimeout(toast._t); toast._t = setTimeout(() => (t.hidden = true), 5000);
}
let INFO = null, FIELDS = null;
let cleanup = [];            // timers and streams of the current page
const onLeave = f => cleanup.push(f);
const every = (ms, f) => { const id = setInterval(f, ms); onLeave(() => clearInterval(id)); };

// -- router -------------------------------------------------------------------------------------
const routes = {
  datasets: pageDatasets, new: pageNewRun, runs: pageRuns, run: pageRun,
  compare: pageCompare, evals: pageEvals, eval: pageEval,
  chat: (main, arg) => pageChat(main, arg, { api, esc, token: TOKEN, toast, onLeave }),
};
// a page's id argument, checked by kind before any request is built from it (an id such as
// '../datasets/d-…' would otherwise turn a run page's Delete into a dataset's)
const HEX = '[0-9a-f]{12}';
const ID_OF = { run: new RegExp(`^r-${HEX}$`), eval: new RegExp(`^[ec]-${HEX}$`),
  compare: new RegExp(`^r-${HEX}(,r-${HEX})*$`) };
async function route() {
  cleanup.forEach(f => f()); cleanup = [];
  const [name, raw] = (location.hash.replace(/^#\/?/, '') || 'runs').split('/');
  document.querySelectorAll('nav a').forEach(a => a.classList.toggle('active', a.dataset.nav === name));
  // each visit renders into a fresh container: a page still awaiting its data when the hash
  // changes writes into its own detached one, never over the page that replaced it
  const main = document.createElement('div');
  $('#main').replaceChildren(main);
  try {
    const arg = decodeURIComponent(raw || '');
    if (ID_OF[name] && !ID_OF[name].test(arg)) throw new Error(`not a ${name} id: ${arg}`);
    await (routes[name] || pageRuns)(main, arg);
  } catch (e) {
    main.innerHTML = `<div class="card errors">${esc(e.message)}</div>`;
  }
}
window.addEventListener('hashchange', route);

async function boot() {
  try {
    INFO = await api('/api/info');
    $('#server-info').textContent = `mindprint ${INFO.version} · backends: ${INFO.backends.join(', ') || 'none'}`;
  } catch (e) {
    $('#main').innerHTML = `<div class="card errors">${esc(e.message)}\n\n${e.status === 401 || e.status === 403
      ? 'Open the address mindprint serve printed, with ?token=… at its end.' : ''}</div>`;
    return;
  }
  route();
}

// -- datasets -----------------------------------------------------------------------------------
function reportHtml(ds) {
  const r = ds.report;
  const topics = Object.entries(r.topics || {}).map(([k, v]) => `${esc(k)} ${v}`).join(', ');
  let html = `<div><b>${esc(ds.name)}</b> (${esc(ds.id)}): ${r.valid} valid of ${r.total} lines,
    ${r.invalid} invalid · format <b>${esc(ds.format || '?')}</b>${topics ? ' · topics: ' + topics : ''}
    ${ds.ok ? '<span class="ok">✓ ready</span>' : ''}</div>`;
  if (r.problems.length) {
    html += `<table class="problems"><tr><th class="num">line</th><th>problem</th></tr>` +
      r.problems.map(p => `<tr><td class="num">${p.line ?? ''}</td><td>${esc(p.problem)}</td></tr>`).join('') + '</table>';
  }
  return html;
}

async function pageDatasets(main) {
  main.innerHTML = `<h1>Datasets</h1>
  <div class="card"><form id="upload-form" class="row">
    <input type="file" id="upload-file" accept="${INFO.upload_suffixes.join(',')}" required>
    <button class="primary" id="upload-button">Upload and validate</button>
    <span class="muted">JSON Lines, a JSON array, CSV/TSV or Parquet: chat, ShareGPT, alpaca, text, preference, kto or prompt records (max ${(INFO.max_upload_bytes / 2 ** 20).toFixed(0)} MB)</span>
  </form><div id="upload-report"></div></div>
  <table id="datasets-table"><thead><tr><th>name</th><th>id</th><th>format</th><th class="num">records</th>
    <th class="num">invalid</th><th>uploaded</th><th></th></tr></thead><tbody></tbody></table>
  <div id="preview"></div>`;
  $('#upload-form').onsubmit = async ev => {
    ev.preventDefault();
    const f = $('#upload-file').files[0];
    if (!f) return;
    const fd = new FormData(); fd.append('file', f, f.name);
    const out = $('#upload-report');
    out.innerHTML = '<p class="muted">Uploading…</p>';
    try {
      const ds = await api('/api/datasets', { method: 'POST', body: fd });
      out.innerHTML = reportHtml(ds);
      load();
    } catch (e) {
      out.innerHTML = `<div class="errors">${esc(e.message)}${e.data && e.data.problems ? '\n' + e.data.problems.map(esc).join('\n') : ''}</div>`;
    }
  };
  async function load() {
    const list = await api('/api/datasets');
    $('#datasets-table tbody').innerHTML = list.map(d => `<tr data-id="${esc(d.id)}"><td>${esc(d.name)}</td>
      <td><code>${esc(d.id)}</code></td><td>${esc(d.format || '?')}</td><td class="num">${d.report.valid}</td>
      <td class="num">${d.report.invalid}</td><td>${when(d.created_at)}</td>
      <td class="actions"><button data-act="preview">preview</button><button data-act="report">report</button>
      <button class="danger" data-act="delete">delete</button></td></tr>`).join('') ||
      '<tr><td colspan="7" class="muted">No datasets yet: upload a .jsonl file.</td></tr>';
    main.querySelectorAll('#datasets-table button').forEach(b => b.onclick = async () => {
      const id = b.closest('tr').dataset.id, d = list.find(x => x.id === id);
      if (b.dataset.act === 'preview') {
        const p = await api(`/api/datasets/${id}/preview?limit=20`);
        $('#preview').innerHTML = `<h2>${esc(p.name)}: first ${p.rows.length} records</h2><pre>${
          p.rows.map(r => `${r.line}: ${esc(r.record !== undefined ? JSON.stringify(r.record) : r.text)}`).join('\n')}</pre>`;
      } else if (b.dataset.act === 'report') {
        $('#preview').innerHTML = `<h2>Validation report</h2><div class="card">${reportHtml(d)}</div>`;
      } else if (confirm(`Delete ${d.name}?`)) {
        try { await api(`/api/datasets/${id}`, { method: 'DELETE' }); load(); } catch (e) { toast(e.message); }
      }
    });
  }
  await load();
}

// -- new run ------------------------------------------------------------------------------------
// methods, their option sections and the records they train on come from /api/info
// (mindprint.registry); this only words the record kinds
const RECORD_WORDS = { chat: 'chat data', text: 'plain text', preference: 'preference pairs', kto: 'labelled completions',
  prompt: 'prompts + rewards' };
const methodDataHint = () => {
  const groups = {};
  for (const m of INFO.methods) {
    const words = INFO.method_info[m].trains_on.map(k => RECORD_WORDS[k] || k).join(' or ');
    (groups[words] = groups[words] || []).push(m);
  }
  return Object.entries(groups).map(([words, ms]) => `${ms.join(', ')}: ${words}`).join(' · ');
};
const COMMON = {
  Training: ['train.max_steps', 'train.batch_size', 'train.grad_accum', 'train.lr', 'train.warmup_steps',
    'train.schedule', 'train.eval_every', 'train.save_every', 'train.seed', 'train.max_minutes'],
  LoRA: ['lora.r', 'lora.alpha', 'lora.dropout', 'lora.targets', 'lora.dora', 'lora.rslora'],
  Data: ['data.max_length', 'data.format', 'data.system_prompt', 'data.eval_split'],
};
const SECTION_TITLES = { kl: 'KL-SFT', dpo: 'DPO / IPO', orpo: 'ORPO', kto: 'KTO', simpo: 'SimPO', grpo: 'GRPO family' };

function fieldHtml(f) {
  const key = esc(f.key), d = f.default;
  const shown = Array.isArray(d) ? d.join(', ') : d ?? '';
  let input;
  if (f.kind === 'bool') input = `<input type="checkbox" data-key="${key}" ${d ? 'checked' : ''}>`;
  else if (f.kind === 'choice' && !f.free) {
    input = `<select data-key="${key}">${f.choices.map(c => `<option ${c === d ? 'selected' : ''}>${esc(c)}</option>`).join('')}</select>`;
  } else {
    const list = f.kind === 'choice' ? `list="dl-${key}"` : '';
    input = `<input type="text" data-key="${key}" value="${esc(shown)}" ${list} placeholder="${f.nullable ? 'default: none' : ''}">` +
      (f.kind === 'choice' ? `<datalist id="dl-${key}">${f.choices.map(c => `<option value="${esc(c)}">`).join('')}</datalist>` : '');
  }
  return `<label class="field"><span class="key">${key}</span>${input}<small>${esc(f.description)}</small></label>`;
}

function readField(el, f) {
  if (f.kind === 'bool') return el.checked;
  const v = el.value.trim();
  if (v === '') return f.nullable ? null : undefined;
  if (f.kind === 'int' || f.kind === 'float') return isNaN(Number(v)) ? v : Number(v);
  if (f.kind === 'list' || (f.kind === 'choice' && f.free && v.includes(','))) {
    return v.split(',').map(s => s.trim()).filter(Boolean).map(s => (isNaN(Number(s)) ? s : Number(s)));
  }
  return v;
}

function setKey(obj, dotted, value) {
  const parts = dotted.split('.');
  let node = obj;
  parts.slice(0, -1).forEach(p => { node = node[p] = node[p] || {}; });
  node[parts[parts.length - 1]] = value;
}

async function pageNewRun(main) {
  FIELDS = FIELDS || await api('/api/config/fields');
  const byKey = Object.fromEntries(FIELDS.map(f => [f.key, f]));
  const datasets = await api('/api/datasets');
  const dsOptions = (none) => (none ? '<option value="">(none)</option>' : '') +
    datasets.map(d => `<option value="${esc(d.id)}">${esc(d.name)} · ${esc(d.format || '?')} · ${d.report.valid} records</option>`).join('');
  main.innerHTML = `<h1>New run</h1>
  <form id="run-form">
  <fieldset><legend>Run</legend><div class="grid">
    <label class="field"><span class="key">name</span><input id="run-name" type="text" placeholder="my first run"></label>
    <label class="field"><span class="key">method</span><select id="method">${INFO.methods.map(m => `<option>${m}</option>`).join('')}</select>
      <small>${esc(methodDataHint())}</small></label>
    <label class="field"><span class="key">backend</span><select id="backend">${INFO.backends.map(b => `<option>${b}</option>`).join('')}</select>
      <small>only backends installed on this server are listed</small></label>
    <label class="field"><span class="key">model</span><input id="model" type="text" value="${esc(byKey['model.name'].default)}">
      <small>${esc(byKey['model.name'].description)}</small></label>
    <label class="field"><span class="key">data.train</span><select id="train-dataset" required>${dsOptions(false)}</select>
      <small>${datasets.length ? 'an uploaded dataset' : 'upload a dataset first (Datasets page)'}</small></label>
    <label class="field"><span class="key">data.eval</span><select id="eval-dataset">${dsOptions(true)}</select>
      <small>held-out records for eval loss (optional)</small></label>
  </div></fieldset>
  <div id="common-fields"></div>
  <div id="method-fields"></div>
  <fieldset><legend>More settings</legend>
    <textarea id="overrides" rows="3" placeholder="one key=value per line, like --set: train.weight_decay=0.01"></textarea>
  </fieldset>
  <div class="row"><button class="primary" id="submit-run">Start run</button><span id="form-status" class="muted"></span></div>
  <div id="form-errors" class="errors"></div>
  </form>`;
  $('#common-fields').innerHTML = Object.entries(COMMON).map(([title, keys]) =>
    `<fieldset><legend>${title}</legend><div class="grid">${keys.map(k => fieldHtml(byKey[k])).join('')}</div></fieldset>`).join('');
  const renderMethod = () => {
    const m = $('#method').value;
    $('#method-fields').innerHTML = INFO.method_info[m].options.map(sec => {
      const keys = FIELDS.filter(f => f.key.startsWith(sec + '.') && !['grpo.rewards', 'grpo.reward_weights'].includes(f.key));
      let extra = '';
      if (sec === 'grpo') {
        extra = `<h3>Reward functions</h3><table id="rewards"><tr><th>use</th><th>reward</th><th>weight</th></tr>` +
          INFO.rewards.map(r => `<tr><td><input type="checkbox" data-reward="${r}" ${r === 'content_similarity' ? 'checked' : ''}></td>
            <td>${r}</td><td><input type="text" data-weight="${r}" value="1" size="5"></td></tr>`).join('') +
          `<tr><td><input type="checkbox" data-reward="custom"></td><td><input type="text" id="custom-reward"
            placeholder="installed.module:function" size="28"></td><td><input type="text" data-weight="custom" value="1" size="5"></td></tr></table>`;
      }
      return `<fieldset data-section="${sec}"><legend>${SECTION_TITLES[sec]}</legend><div class="grid">${keys.map(fieldHtml).join('')}</div>${extra}</fieldset>`;
    }).join('');
  };
  $('#method').onchange = renderMethod;
  renderMethod();
  $('#run-form').onsubmit = async ev => {
    ev.preventDefault();
    const cfg = { method: $('#method').value, backend: $('#backend').value, model: $('#model').value.trim(),
      data: { train: [$('#train-dataset').value].filter(Boolean), eval: [$('#eval-dataset').value].filter(Boolean) } };
    main.querySelectorAll('[data-key]').forEach(el => {
      const v = readField(el, byKey[el.dataset.key]);
      if (v !== undefined) setKey(cfg, el.dataset.key, v);
    });
    if (cfg.method === 'grpo') {
      const rewards = [], weights = [];
      main.querySelectorAll('[data-reward]').forEach(cb => {
        if (!cb.checked) return;
        const name = cb.dataset.reward === 'custom' ? $('#custom-reward').value.trim() : cb.dataset.reward;
        rewards.push(name);
        const w = main.querySelector(`[data-weight="${cb.dataset.reward}"]`).value.trim();
        weights.push(isNaN(Number(w)) ? w : Number(w));
      });
      cfg.grpo = { ...(cfg.grpo || {}), rewards, reward_weights: weights };
    }
    const overrides = $('#overrides').value.split('\n').map(s => s.trim()).filter(Boolean);
    $('#form-errors').textContent = '';
    $('#form-status').textContent = 'Checking…';
    try {
      const job = await api('/api/runs', { method: 'POST', json: { name: $('#run-name').value, config: cfg, overrides } });
      location.hash = `#/run/${job.id}`;
    } catch (e) {
      $('#form-status').textContent = '';
      $('#form-errors').textContent = e.message;
    }
  };
}

// -- runs ---------------------------------------------------------------------------------------
async function runAction(id, act, kind = 'runs') {
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

function actionButtons(j) {
  const b = [];
  if (['queued', 'running'].includes(j.status)) b.push('<button data-act="cancel">cancel</button>');
  if (j.resumable) b.push(`<button data-act="resume">${j.kind === 'train' ? 'resume' : 'run again'}</button>`);
  if (!['queued', 'running'].includes(j.status)) b.push('<button class="danger" data-act="delete">delete</button>');
  return b.join('');
}

async function pageRuns(main) {
  main.innerHTML = `<h1>Runs</h1>
  <div class="row" style="margin-bottom:8px"><a class="button primary" href="#/new">New run</a>
    <button id="compare-selected" disabled>Compare selected</button></div>
  <table id="runs-table"><thead><tr><th></th><th>name</th><th>method</th><th>backend</th><th>status</th>
    <th class="num">step</th><th class="num">loss</th><th class="num">eval loss</th><th>started</th><th></th></tr></thead><tbody></tbody></table>`;
  const selected = new Set();
  async function load() {
    const runs = await api('/api/runs');
    $('#runs-table tbody').innerHTML = runs.map(r => `<tr data-id="${esc(r.id)}">
      <td><input type="checkbox" ${selected.has(r.id) ? 'checked' : ''}></td>
      <td><a href="#/run/${esc(r.id)}">${esc(r.name)}</a></td><td>${esc(r.method)}</td><td>${esc(r.backend)}</td>
      <td class="status">${badge(r.status)}</td><td class="num">${r.step}/${r.max_steps}</td><td class="num">${num(r.loss)}</td>
      <td class="num">${num(r.eval_loss)}</td><td>${when(r.started_at)}</td><td class="actions">${actionButtons(r)}</td></tr>`).join('') ||
      '<tr><td colspan="10" class="muted">No runs yet.</td></tr>';
    main.querySelectorAll('#runs-table tbody tr[data-id]').forEach(tr => {
      const id = tr.dataset.id;
      tr.querySelector('input[type=checkbox]').onchange = e => {
        e.target.checked ? selected.add(id) : selected.delete(id);
        $('#compare-selected').disabled = selected.size < 1;
      };
      tr.querySelectorAll('button').forEach(b => b.onclick = async () => { if (await runAction(id, b.dataset.act)) load(); });
    });
  }
  $('#compare-selected').onclick = () => { location.hash = `#/compare/${[...selected].join(',')}`; };
  await load();
  every(2000, load);
}

const REWARD_KEY = /(^|_)reward$|^rewards\/.*(mean|margin|accuracy)$|pref_accuracy$/;

async function pageRun(main, id) {
  let job = await api(`/api/runs/${id}`);
  main.innerHTML = `<h1><span id="run-name">${esc(job.name)}</span> <span id="run-status">${badge(job.status)}</span></h1>
  <div class="card">
    <div class="row"><span>step <b id="run-step">${job.step}</b> / ${job.max_steps}</span>
      <span class="muted">${esc(job.method)} · ${esc(job.backend)} · ${esc(job.model)} · <code>${esc(job.id)}</code></span></div>
    <div id="run-error" class="errors"></div>
    <div class="row actions" id="run-actions" style="margin-top:8px"></div>
  </div>
  <div class="charts" id="charts"></div>
  <h2>Evaluate</h2><div class="card" id="eval-box"></div>
  <div id="samples"></div>
  <h2>Log</h2><pre id="run-log"></pre>
  <h2>Config</h2><pre id="run-config">${esc(JSON.stringify(job.config, null, 2))}</pre>`;
  const charts = $('#charts');
  const C = { loss: new LineChart(charts, 'loss'), reward: new LineChart(charts, 'reward'),
    lr: new LineChart(charts, 'learning rate'), tps: new LineChart(charts, 'tokens per second') };
  const clearAll = () => Object.values(C).forEach(c => c.clear());
  const addRow = row => {
    const s = row.step;
    if (typeof s !== 'number') return;
    if ('loss' in row) C.loss.add('train loss', s, row.loss, COLORS[0]);
    if ('eval_loss' in row) C.loss.add('eval loss', s, row.eval_loss, COLORS[1]);
    if ('lr' in row) C.lr.add('lr', s, row.lr, COLORS[2]);
    if ('tokens_per_s' in row) C.tps.add('tokens/s', s, row.tokens_per_s, COLORS[3]);
    for (const [k, v] of Object.entries(row)) if (REWARD_KEY.test(k)) C.reward.add(k, s, v);
  };
  const header = j => {
    job = { ...job, ...j };
    $('#run-status').innerHTML = badge(job.status);
    $('#run-step').textContent = job.step;
    $('#run-error').textContent = job.error || '';
    const extra = job.has_adapter ? `<a class="button" id="download-adapter" href="/api/runs/${id}/adapter.zip${tq()}">download adapter (.zip)</a>` : '';
    $('#run-actions').innerHTML = actionButtons(job) + extra;
    $('#run-actions').querySelectorAll('button').forEach(b => b.onclick = async () => {
      if (await runAction(id, b.dataset.act)) {
        if (b.dataset.act === 'delete') location.hash = '#/runs';
        else { header(await api(`/api/runs/${id}`)); if (b.dataset.act === 'resume') stream(); }
      }
    });
  };
  header(job);
  let es = null;
  function stream() {
    if (es) es.close();
    es = new EventSource(`/api/runs/${id}/events${tq()}`);
    es.onopen = clearAll;                     // the stream always starts from the first row
    es.addEventListener('metrics', e => JSON.parse(e.data).forEach(addRow));
    es.addEventListener('reset', clearAll);
    es.addEventListener('status', e => header(JSON.parse(e.data)));
    es.addEventListener('end', async () => { es.close(); es = null; header(await api(`/api/runs/${id}`)); loadLog(); loadEvalBox(); });
  }
  onLeave(() => es && es.close());
  stream();
  async function loadLog() {
    try { $('#run-log').textContent = await (await fetch(`/api/runs/${id}/log?tail=60${tq('&')}`)).text(); } catch { /* page left */ }
  }
  loadLog();
  every(3000, () => { if (['queued', 'running'].includes(job.status)) loadLog(); });
  // The eval box is refreshed when the page opens and again when the event stream ends (at once for
  // a finished run), so a refresh updates the list and the dataset choices in place and never
  // rebuilds a form the user may already be filling in.
  async function loadEvalBox() {
    const [datasets, evals, samples] = await Promise.all([api('/api/datasets'), api(`/api/evals?run=${id}`),
      api(`/api/runs/${id}/samples?limit=20`)]);
    const box = $('#eval-box');
    if (!box) return;                            // the page was left meanwhile
    if (!box.querySelector('#eval-list')) box.innerHTML = '<div id="eval-list"></div><div id="eval-form-box"></div>';
    $('#eval-list').innerHTML = evals.length ? '<ul>' + evals.map(e => `<li><a href="#/eval/${e.id}">${esc(e.name)}</a> ${badge(e.status)} ${when(e.created_at)}</li>`).join('') + '</ul>' : '';
    const opts = '<option value="">(none)</option>' + datasets.map(d => `<option value="${esc(d.id)}">${esc(d.name)} · ${esc(d.format || '?')}</option>`).join('');
    const personOpts = opts.replace('(none)', "(the run's training data)");   // whose answers define the voice
    let form = $('#eval-form');
    if (form) {                                  // keep the user's choices; refresh the dataset list
      form.querySelectorAll('select').forEach(sel => {
        const keep = sel.value;
        sel.innerHTML = sel.name === 'person' ? personOpts : opts;
        sel.value = [...sel.options].some(o => o.value === keep) ? keep : '';
      });
    } else if (job.has_adapter) {
      $('#eval-form-box').innerHTML = `<form id="eval-form" class="grid">
        <label class="field"><span class="key">prompts (content similarity, style)</span><select name="prompts">${opts}</select></label>
        <label class="field"><span class="key">chat (perplexity)</span><select name="chat">${opts}</select></label>
        <label class="field"><span class="key">preference (accuracy)</span><select name="preference">${opts}</select></label>
        <label class="field"><span class="key">person (voice match: whose answers)</span><select name="person">${personOpts}</select></label>
        <label class="field"><span class="key">max prompts</span><input name="max_prompts" value="16"></label>
        <label class="field"><span class="key">max new tokens</span><input name="max_new_tokens" value="128"></label>
        <div><button class="primary">Evaluate base vs tuned</button></div></form><div id="eval-errors" class="errors"></div>`;
      form = $('#eval-form');
      form.onsubmit = async ev => {
        ev.preventDefault();
        const fd = new FormData(form);
        const pick = k => (fd.get(k) ? [fd.get(k)] : []);
        try {
          const e = await api('/api/evals', { method: 'POST', json: { run: id, prompts: pick('prompts'), chat: pick('chat'),
            preference: pick('preference'), person: pick('person'), max_prompts: Number(fd.get('max_prompts')) || null,
            max_new_tokens: Number(fd.get('max_new_tokens')) || null } });
          location.hash = `#/eval/${e.id}`;
        } catch (e) { $('#eval-errors').textContent = e.message; }
      };
    } else {
      $('#eval-form-box').innerHTML = '<p class="muted">An adapter is needed: evaluate once the run has finished.</p>';
    }
    $('#samples').innerHTML = samples.length ? '<h2>Sampled completions</h2>' + samples.slice(-6).map(s =>
      `<div class="sample"><div class="muted">step ${s.step ?? ''}</div><pre>${esc(JSON.stringify(s, null, 1))}</pre></div>`).join('') : '';
  }
  loadEvalBox();
}

// -- compare runs -------------------------------------------------------------------------------
async function pageCompare(main, ids) {
  const list = ids.split(',').filter(Boolean);
  if (!list.length) { main.innerHTML = '<p>Select runs on the <a href="#/runs">Runs</a> page.</p>'; return; }
  const [cmp, datasets, ...metrics] = await Promise.all([api(`/api/compare?runs=${list.join(',')}`), api('/api/datasets'),
    ...list.map(i => api(`/api/runs/${i}/metrics`))]);
  main.innerHTML = `<h1>Compare ${cmp.runs.length} runs</h1><div class="charts" id="charts"></div>
    <h2>Config differences</h2><div id="cfg"></div><h2>Metrics</h2><div id="met"></div>
    <h2>Evaluation</h2><div id="evs"></div>
    <h2>Answers side by side</h2><div class="card"><form id="cmp-form" class="row">
      <select name="prompts">${datasets.map(d => `<option value="${esc(d.id)}">${esc(d.name)}</option>`).join('')}</select>
      <input name="max_new_tokens" value="128" size="5"> <button class="primary">Generate with base and each adapter</button>
    </form><div id="cmp-errors" class="errors"></div></div>`;
  const charts = $('#charts');
  const loss = new LineChart(charts, 'train loss'), evl = new LineChart(charts, 'eval loss');
  const rew = new LineChart(charts, 'reward'), tps = new LineChart(charts, 'tokens per second');
  cmp.runs.forEach((r, i) => {
    const rows = metrics[i], color = COLORS[i % COLORS.length], label = `${r.name} (${r.id})`;
    const pts = k => rows.filter(x => typeof x[k] === 'number' && typeof x.step === 'number').map(x => [x.step, x[k]]);
    loss.setSeries(label, pts('loss'), color);
    evl.setSeries(label, pts('eval_loss'), color);
    tps.setSeries(label, pts('tokens_per_s'), color);
    const rk = [...new Set(rows.flatMap(Object.keys))].find(k => REWARD_KEY.test(k));
    if (rk) rew.setSeries(`${label} ${rk}`, pts(rk), color);
  });
  const head = '<tr><th></th>' + cmp.runs.map(r => `<th><a href="#/run/${r.id}">${esc(r.name)}</a></th>`).join('') + '</tr>';
  const cell = v => (typeof v === 'number' ? num(v) : esc(typeof v === 'object' && v !== null ? JSON.stringify(v) : v ?? '–'));
  $('#cfg').innerHTML = cmp.config_differences.length ? `<table>${head}${cmp.config_differences.map(d =>
    `<tr><td><code>${esc(d.key)}</code></td>${d.values.map(v => `<td>${cell(v)}</td>`).join('')}</tr>`).join('')}</table>`
    : '<p class="muted">Identical configs (apart from where they are stored).</p>';
  $('#met').innerHTML = `<table id="compare-metrics">${head}${cmp.metrics.map(d =>
    `<tr><td>${esc(d.key)}</td>${d.values.map(v => `<td class="num">${cell(v)}</td>`).join('')}</tr>`).join('')}</table>`;
  const evs = cmp.eval_reports;
  if (evs.some(Boolean)) {
    const keys = [...new Set(evs.filter(Boolean).flatMap(e => Object.values(e.summary).flatMap(Object.keys)))];
    $('#evs').innerHTML = `<table>${head}${keys.map(k => `<tr><td>${esc(k)}</td>${evs.map(e => `<td class="num">${e
      ? e.variants.map(v => `${v}: ${cell(e.summary[v][k])}`).join(' · ') : '–'}</td>`).join('')}</tr>`).join('')}</table>`;
  } else $('#evs').innerHTML = '<p class="muted">No evaluations yet: evaluate a run from its page.</p>';
  $('#cmp-form').onsubmit = async ev => {
    ev.preventDefault();
    const fd = new FormData(ev.target);
    try {
      const j = await api('/api/compares', { method: 'POST', json: { runs: list, prompts: [fd.get('prompts')],
        max_new_tokens: Number(fd.get('max_new_tokens')) || null } });
      location.hash = `#/eval/${j.id}`;
    } catch (e) { $('#cmp-errors').textContent = e.message; }
  };
}

// -- evaluations --------------------------------------------------------------------------------
async function pageEvals(main) {
  main.innerHTML = `<h1>Evaluations and comparisons</h1><table id="evals-table"><thead><tr><th>name</th><th>kind</th>
    <th>status</th><th>created</th><th></th></tr></thead><tbody></tbody></table>`;
  async function load() {
    const list = await api('/api/evals');
    $('#evals-table tbody').innerHTML = list.map(e => `<tr data-id="${esc(e.id)}"><td><a href="#/eval/${esc(e.id)}">${esc(e.name)}</a></td>
      <td>${esc(e.kind)}</td><td>${badge(e.status)}</td><td>${when(e.created_at)}</td><td class="actions">${actionButtons(e)}</td></tr>`).join('') ||
      '<tr><td colspan="5" class="muted">None yet: evaluate a run from its page, or compare runs.</td></tr>';
    main.querySelectorAll('#evals-table button').forEach(b => b.onclick = async () => {
      if (await runAction(b.closest('tr').dataset.id, b.dataset.act, 'evals')) load();
    });
  }
  await load();
  every(3000, load);
}

async function pageEval(main, id) {
  main.innerHTML = `<h1 id="eval-title"></h1><div class="card" id="eval-head"></div><div id="eval-body"></div>
    <h2>Log</h2><pre id="eval-log"></pre>`;
  let shown = false;
  async function load() {
    const j = await api(`/api/evals/${id}`);
    $('#eval-title').innerHTML = `${esc(j.name)} ${badge(j.status)}`;
    $('#eval-head').innerHTML = `<div class="row actions">${actionButtons(j)}${j.has_report
      ? `<a class="button" target="_blank" href="/api/evals/${id}/report.html${tq()}">full report (HTML)</a>` : ''}</div>
      <div class="errors">${esc(j.error || '')}</div>`;
    $('#eval-head').querySelectorAll('button').forEach(b => b.onclick = async () => {
      if (await runAction(id, b.dataset.act, 'evals')) { if (b.dataset.act === 'delete') location.hash = '#/evals'; else load(); }
    });
    $('#eval-log').textContent = await (await fetch(`/api/evals/${id}/log?tail=40${tq('&')}`)).text();
    if (j.has_report && !shown) {
      shown = true;
      if (j.kind === 'eval') renderReport(await api(`/api/evals/${id}/report`));
      else $('#eval-body').innerHTML = `<h2>Answers</h2><pre>${esc(await (await fetch(`/api/evals/${id}/compare${tq()}`)).text())}</pre>`;
    }
    return j;
  }
  function renderReport(rep) {
    const vs = rep.variants;
    const keys = [...new Set(vs.flatMap(v => Object.keys(rep.summary[v])))];
    let html = `<h2>Summary</h2><table id="eval-summary"><tr><th>metric</th>${vs.map(v => `<th class="num">${esc(v)}</th>`).join('')}</tr>` +
      keys.map(k => `<tr><td>${esc(k)}</td>${vs.map(v => `<td class="num">${num(rep.summary[v][k])}</td>`).join('')}</tr>`).join('') + '</table>';
    if (rep.voice && rep.voice.length) {
      html += '<h2>Sample generations</h2>' + rep.voice.slice(0, 20).map(s => `<div class="sample">
        <div><b>${esc(s.prompt)}</b> <span class="muted">${esc(s.where || '')}</span></div>
        ${s.reference ? `<div class="muted">reference:</div><div class="answer">${esc(s.reference)}</div>` : ''}
        ${vs.map(v => s.answers[v] ? `<div class="muted">${esc(v)} (similarity ${num(s.answers[v].similarity)}):</div>
          <div class="answer">${esc(s.answers[v].text)}</div>` : '').join('')}</div>`).join('');
    }
    $('#eval-body').innerHTML = html;
  }
  let j = await load();
  every(2000, async () => { if (['queued', 'running'].includes(j.status) || !shown) j = await load(); });
}

boot();
