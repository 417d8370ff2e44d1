// Mindprint web UI: plain ES modules, no build step. Pages are routed on location.hash.
// ui.js holds what pages share; newrun.js the New-run form; runs.js the runs list and run page.
import { LineChart, COLORS } from './chart.js';
import { pageChat } from './chat.js';
import { pageNewRun } from './newrun.js';
import { REWARD_KEY, pageRun, pageRuns } from './runs.js';
import { $, TOKEN, actionButtons, api, badge, esc, every, leavePage, num, onLeave, runAction, state, toast, tq, when } from './ui.js';

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
  compare: new RegExp(`^r-${HEX}(,r-${HEX})*$`), new: new RegExp(`^(r-${HEX})?$`) };
async function route() {
  leavePage();
  const [name, raw] = (location.hash.replace(/^#\/?/, '') || 'runs').split('/');
  document.querySelectorAll('nav a').forEach(a => a.classList.toggle('active', a.dataset.nav === name));
  // each visit renders into a fresh container: a page still awaiting its data when the hash
  // changes writes into its own detached one, never over the page that replaced it
  const main = document.createElement('div');
  $('#main').replaceChildren(main);
  try {
    const arg = decodeURIComponent(raw || '');
    if (ID_OF[name] && !ID_OF[name].test(arg)) throw new Error(`not a ${name === 'new' ? 'run' : name} id: ${arg}`);
    await (routes[name] || pageRuns)(main, arg);
  } catch (e) {
    main.innerHTML = `<div class="card errors">${esc(e.message)}</div>`;
  }
}
window.addEventListener('hashchange', route);

async function boot() {
  try {
    const INFO = state.info = await api('/api/info');
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
    <input type="file" id="upload-file" accept="${state.info.upload_suffixes.join(',')}" required>
    <button class="primary" id="upload-button">Upload and validate</button>
    <span class="muted">JSON Lines, a JSON array, CSV/TSV or Parquet: chat, ShareGPT, alpaca, text, preference, kto or prompt records (max ${(state.info.max_upload_bytes / 2 ** 20).toFixed(0)} MB)</span>
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
      // compare.md rendered by the server (markdown-it, raw HTML off: text arrives escaped),
      // its columns named by run name
      else $('#eval-body').innerHTML = `<h2>Answers</h2><div class="md" id="compare-md">${(await api(`/api/evals/${id}/compare/view`)).html}</div>`;
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
