// The runs list (#/runs: why each failed run failed, a filter) and a run's page (#/run/r-…): live
// charts over the event stream (a chart appears with its first point: an SFT run never logs a
// reward), why it failed and what can help, its data by dataset name, evaluation.
import { LineChart, COLORS } from './chart.js';
import { $, actionButtons, api, badge, esc, every, num, onLeave, runAction, state, tq, when } from './ui.js';

export const REWARD_KEY = /(^|_)reward$|^rewards\/.*(mean|margin|accuracy)$|pref_accuracy$/;
const STATUSES = ['queued', 'running', 'completed', 'failed', 'cancelled', 'interrupted'];
const DATA_KEYS = ['data.train', 'data.eval', 'eval.prompts', 'eval.chat', 'eval.preference'];

// one line saying why a run stopped short: the server's failure reason, else its error
const whyLine = r => (r.failure ? `${r.failure.kind}: ${r.failure.reason}` : (r.error || '').split('\n')[0]);

export async function pageRuns(main) {
  main.innerHTML = `<h1>Runs</h1>
  <div class="row" style="margin-bottom:8px"><a class="button primary" href="#/new">New run</a>
    <button id="compare-selected" disabled>Compare selected</button></div>
  <div class="filters"><span class="muted">Show</span>
    <select id="filter-status"><option value="">any status</option>${STATUSES.map(s => `<option>${s}</option>`).join('')}</select>
    <select id="filter-method"><option value="">any method</option>${state.info.methods.map(m => `<option>${m}</option>`).join('')}</select>
    <input id="filter-text" type="search" placeholder="name, id, model or error contains…" size="32">
    <span id="filter-count" class="muted"></span></div>
  <table id="runs-table"><thead><tr><th></th><th>name</th><th>method</th><th>backend</th><th>status</th>
    <th class="num">step</th><th class="num">loss</th><th class="num">eval loss</th><th>started</th><th></th></tr></thead><tbody></tbody></table>`;
  const selected = new Set();
  let runs = [];
  const shown = () => {
    const st = $('#filter-status').value, m = $('#filter-method').value, text = $('#filter-text').value.trim().toLowerCase();
    return runs.filter(r => (!st || r.status === st) && (!m || r.method === m) && (!text ||
      [r.name, r.id, r.model, r.method, whyLine(r)].some(v => String(v ?? '').toLowerCase().includes(text))));
  };
  function render() {
    const list = shown();
    $('#filter-count').textContent = runs.length ? `${list.length} of ${runs.length} runs` : '';
    $('#runs-table tbody').innerHTML = list.map(r => `<tr data-id="${esc(r.id)}">
      <td><input type="checkbox" ${selected.has(r.id) ? 'checked' : ''}></td>
      <td><a href="#/run/${esc(r.id)}">${esc(r.name)}</a></td><td>${esc(r.method)}</td><td>${esc(r.backend)}</td>
      <td class="status">${badge(r.status)}${whyLine(r) && r.status !== 'completed'
        ? `<div class="reason" title="${esc(r.error || '')}">${esc(whyLine(r))}</div>` : ''}</td>
      <td class="num">${r.step}/${r.max_steps}</td><td class="num">${num(r.loss)}</td>
      <td class="num">${num(r.eval_loss)}</td><td>${when(r.started_at)}</td><td class="actions">${actionButtons(r)}</td></tr>`).join('') ||
      `<tr><td colspan="10" class="muted">${runs.length ? 'No run matches the filter.' : 'No runs yet.'}</td></tr>`;
    main.querySelectorAll('#runs-table tbody tr[data-id]').forEach(tr => {
      const id = tr.dataset.id;
      tr.querySelector('input[type=checkbox]').onchange = e => {
        e.target.checked ? selected.add(id) : selected.delete(id);
        $('#compare-selected').disabled = selected.size < 1;
      };
      tr.querySelectorAll('button').forEach(b => b.onclick = async () => { if (await runAction(id, b.dataset.act)) load(); });
    });
  }
  async function load() { runs = await api('/api/runs'); render(); }
  ['#filter-status', '#filter-method', '#filter-text'].forEach(s => $(s).addEventListener('input', render));
  $('#compare-selected').onclick = () => { location.hash = `#/compare/${[...selected].join(',')}`; };
  await load();
  every(2000, load);
}

// the config as shown: data files by their dataset's name, the server paths kept aside
function configView(job) {
  const cfg = JSON.parse(JSON.stringify(job.config)), paths = [];
  for (const key of DATA_KEYS) {
    const [sec, leaf] = key.split('.'), refs = (job.datasets || {})[key] || [];
    if (!cfg[sec] || !Array.isArray(cfg[sec][leaf])) continue;
    cfg[sec][leaf] = refs.map(r => (r.id ? `${r.name} (${r.id})` : `${r.path.split('/').pop()} (no longer a dataset)`));
    refs.forEach(r => paths.push(`${key}: ${r.path}`));
  }
  if (cfg.output_dir) { paths.push(`output_dir: ${cfg.output_dir}`); cfg.output_dir = "(this run's directory)"; }
  return `<pre id="run-config">${esc(JSON.stringify(cfg, null, 2))}</pre>
    <details class="paths"><summary>files on the server</summary><pre id="run-paths">${esc(paths.join('\n'))}</pre></details>`;
}

function trainedOn(job) {
  const files = job.trained_on || [];
  if (!files.length) return '';
  return 'Trained on ' + files.map(f => `<span title="${esc(f.path)} · sha256 ${esc(f.sha256)}">${esc(f.role)}: <b>${esc(f.name || f.path.split('/').pop())}</b>${
    f.examples != null ? ` (${f.examples} examples)` : ''}</span>`).join(' · ');
}

export async function pageRun(main, id) {
  let job = await api(`/api/runs/${id}`);
  main.innerHTML = `<h1><span id="run-name">${esc(job.name)}</span> <span id="run-status">${badge(job.status)}</span></h1>
  <div class="card">
    <div class="row"><span>step <b id="run-step">${job.step}</b> / ${job.max_steps}</span>
      <span class="muted">${esc(job.method)} · ${esc(job.backend)} · ${esc(job.model)} · <code>${esc(job.id)}</code></span></div>
    <div id="run-data" class="muted"></div>
    <div id="run-error"></div>
    <div class="row actions" id="run-actions" style="margin-top:8px"></div>
  </div>
  <div class="charts" id="charts"></div>
  <h2>Evaluate</h2><div class="card" id="eval-box"></div>
  <div id="samples"></div>
  <h2>Log</h2><pre id="run-log"></pre>
  <h2>Config</h2><div id="config-box">${configView(job)}</div>`;
  const charts = $('#charts');
  // every method logs its loss (shown from the start); the other charts appear with their data
  const C = { loss: new LineChart(charts, 'loss') };
  const chart = (k, title) => (C[k] = C[k] || new LineChart(charts, title));
  const clearAll = () => Object.values(C).forEach(c => c.clear());
  const addRow = row => {
    const s = row.step;
    if (typeof s !== 'number') return;
    if ('loss' in row) C.loss.add('train loss', s, row.loss, COLORS[0]);
    if ('eval_loss' in row) C.loss.add('eval loss', s, row.eval_loss, COLORS[1]);
    if (typeof row.lr === 'number') chart('lr', 'learning rate').add('lr', s, row.lr, COLORS[2]);
    if (typeof row.tokens_per_s === 'number') chart('tps', 'tokens per second').add('tokens/s', s, row.tokens_per_s, COLORS[3]);
    for (const [k, v] of Object.entries(row)) if (REWARD_KEY.test(k) && typeof v === 'number') chart('reward', 'reward').add(k, s, v);
  };
  const header = j => {
    job = { ...job, ...j };
    $('#run-status').innerHTML = badge(job.status);
    $('#run-step').textContent = job.step;
    if (j.trained_on) $('#run-data').innerHTML = trainedOn(job);
    const f = job.failure;
    $('#run-error').innerHTML = f ? `<div class="errors">Failed (${esc(f.kind)}): ${esc(f.reason)}</div>
        <div class="muted" id="run-hint">${esc(f.hint)}</div>${job.error && job.error !== f.reason
        ? `<details class="paths"><summary>the error in full</summary><pre>${esc(job.error)}</pre></details>` : ''}`
      : `<div class="errors">${esc(job.error || '')}</div>`;
    const extra = (job.has_adapter ? `<a class="button" id="download-adapter" href="/api/runs/${id}/adapter.zip${tq()}">download adapter (.zip)</a>` : '')
      + `<a class="button" id="duplicate-run" href="#/new/${esc(id)}" title="open the New-run form filled with this run's config">duplicate config</a>`;
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
    es.addEventListener('end', async () => {
      es.close(); es = null;
      job = await api(`/api/runs/${id}`);
      header(job); $('#config-box').innerHTML = configView(job); loadLog(); loadEvalBox();
    });
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
      $('#eval-form-box').innerHTML = `<p class="muted" id="eval-none">${esc(noAdapterWords(job))}</p>`;
    }
    $('#samples').innerHTML = samples.length ? '<h2>Sampled completions</h2>' + samples.slice(-6).map(s =>
      `<div class="sample"><div class="muted">step ${s.step ?? ''}</div><pre>${esc(JSON.stringify(s, null, 1))}</pre></div>`).join('') : '';
  }
  loadEvalBox();
}

// why there is nothing to evaluate, by status (a failed run will not "finish")
function noAdapterWords(job) {
  if (['queued', 'running'].includes(job.status)) return 'An adapter is needed: evaluate once the run has finished.';
  if (job.status === 'failed') {
    return job.resumable ? 'The run failed before saving an adapter: resume it, then evaluate.'
      : 'The run failed before saving an adapter, so there is nothing to evaluate: edit and retry.';
  }
  return `The run was ${job.status} before saving an adapter: resume it, then evaluate.`;
}
