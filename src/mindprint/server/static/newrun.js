// The New-run form (#/new, or #/new/r-… to start from a copy of that run's config).
// Methods, their option sections and the dataset formats each trains on come from /api/info
// (mindprint.registry and the data layer's format rule); every config key from /api/config/fields.
// The server validates with the CLI's schema; each problem it names a key for is shown at that
// key's field, all of them in the summary under the button. The time estimate uses /api/speed.
import { $, api, esc, duration, state } from './ui.js';

// words for the record kinds a method trains on (the kinds themselves come from the server)
const RECORD_WORDS = { chat: 'chat data', text: 'plain text', preference: 'preference pairs', kto: 'labelled completions',
  prompt: 'prompts + rewards' };
const methodDataHint = () => {
  const groups = {};
  for (const m of state.info.methods) {
    const words = state.info.method_info[m].trains_on.map(k => RECORD_WORDS[k] || k).join(' or ');
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
// config keys that the form holds outside the generic [data-key] fields
const TARGETS = { model: '#model', 'model.name': '#model', method: '#method', backend: '#backend', data: '#train-dataset',
  'data.train': '#train-dataset', 'data.eval': '#eval-dataset', 'grpo.rewards': '#rewards', 'grpo.reward_weights': '#rewards' };
const OWN_KEYS = new Set(['method', 'backend', 'model.name', 'data.train', 'data.eval', 'output_dir']);
const DATA_KEYS = ['data.train', 'data.eval', 'eval.prompts', 'eval.chat', 'eval.preference'];
const BUDGET_KEYS = ['train.max_steps', 'train.batch_size', 'train.grad_accum', 'data.max_length'];

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

function writeField(el, f, v) {
  if (f.kind === 'bool') el.checked = Boolean(v);
  else el.value = Array.isArray(v) ? v.join(', ') : v ?? '';
}

function setKey(obj, dotted, value) {
  const parts = dotted.split('.');
  let node = obj;
  parts.slice(0, -1).forEach(p => { node = node[p] = node[p] || {}; });
  node[parts[parts.length - 1]] = value;
}

// {'train.lr': 0.001, …} from a nested config mapping
function flatten(obj, prefix = '', out = {}) {
  for (const [k, v] of Object.entries(obj || {})) {
    if (v && typeof v === 'object' && !Array.isArray(v)) flatten(v, `${prefix}${k}.`, out);
    else out[prefix + k] = v;
  }
  return out;
}

// The time estimate: budget tokens (steps × batch × grad_accum × max_length) over a rate measured
// from this workspace's finished runs: same model and method, else same model, else any, else
// the server's stated default.
function estimate(speed, { model, method, budget }) {
  const tiers = [[g => g.model === model && g.method === method, `${method} run(s) of this model`],
    [g => g.model === model, 'run(s) of this model'], [() => true, 'run(s) of other models or methods']];
  for (const [test, words] of tiers) {
    const gs = speed.groups.filter(test);
    const runs = gs.reduce((a, g) => a + g.runs, 0);
    if (!runs) continue;
    const rate = gs.reduce((a, g) => a + g.budget_tokens, 0) / gs.reduce((a, g) => a + g.train_s, 0);
    const overhead = gs.reduce((a, g) => a + g.overhead_s, 0) / runs;
    const what = words.replace('(s)', runs === 1 ? '' : 's');
    return { seconds: overhead + budget / rate, rate, overhead, source: `measured from ${runs} finished ${what} in this workspace` };
  }
  const d = speed.default;
  return { seconds: d.overhead_s + budget / d.tokens_per_s, rate: d.tokens_per_s, overhead: d.overhead_s, source: d.source };
}

export async function pageNewRun(main, fromId) {
  state.fields = state.fields || await api('/api/config/fields');
  const FIELDS = state.fields, INFO = state.info;
  const byKey = Object.fromEntries(FIELDS.map(f => [f.key, f]));
  const [datasets, speed, source] = await Promise.all([api('/api/datasets'), api('/api/speed'),
    fromId ? api(`/api/runs/${fromId}`) : null]);
  main.innerHTML = `<h1>New run</h1><div id="from-run"></div>
  <form id="run-form">
  <fieldset><legend>Run</legend><div class="grid">
    <label class="field"><span class="key">name</span><input id="run-name" type="text" placeholder="my first run"></label>
    <label class="field"><span class="key">method</span><select id="method">${INFO.methods.map(m => `<option>${m}</option>`).join('')}</select>
      <small>${esc(methodDataHint())}</small></label>
    <label class="field"><span class="key">backend</span><select id="backend">${INFO.backends.map(b => `<option>${b}</option>`).join('')}</select>
      <small>only backends installed on this server are listed</small></label>
    <label class="field"><span class="key">model</span><input id="model" type="text" value="${esc(byKey['model.name'].default)}">
      <small>${esc(byKey['model.name'].description)}</small></label>
    <label class="field"><span class="key">data.train</span><select id="train-dataset" required></select>
      <small id="train-hint"></small></label>
    <label class="field"><span class="key">data.eval</span><select id="eval-dataset"></select>
      <small>held-out records for eval loss (optional)</small></label>
  </div></fieldset>
  <div id="common-fields"></div>
  <div id="method-fields"></div>
  <fieldset><legend>More settings</legend>
    <textarea id="overrides" rows="3" placeholder="one key=value per line, like --set: train.weight_decay=0.01"></textarea>
  </fieldset>
  <div class="row"><button class="primary" id="submit-run">Start run</button><span id="form-status" class="muted"></span></div>
  <div id="estimate" class="muted"></div>
  <div id="form-errors" class="errors"></div>
  </form>`;
  $('#common-fields').innerHTML = Object.entries(COMMON).map(([title, keys]) =>
    `<fieldset><legend>${title}</legend><div class="grid">${keys.map(k => fieldHtml(byKey[k])).join('')}</div></fieldset>`).join('');

  // dataset pickers: the method's formats first, the newest preselected (the list is newest
  // first); other datasets are listed but disabled, saying why. A dataset the user picked stays
  // picked across method changes while the method takes it; a preselected one follows the method.
  const picked = new Set();
  ['#train-dataset', '#eval-dataset'].forEach(sel => $(sel).addEventListener('change', () => picked.add(sel)));
  const fillDatasets = () => {
    const m = $('#method').value, formats = INFO.method_info[m].formats;
    const fits = datasets.filter(d => formats.includes(d.format)), other = datasets.filter(d => !formats.includes(d.format));
    const opt = d => `<option value="${esc(d.id)}">${esc(d.name)} · ${esc(d.format || '?')} · ${d.report.valid} records</option>`;
    const rest = other.length ? `<optgroup label="not ${esc(m)} data (${esc(formats.join(', '))})" disabled>${other.map(opt).join('')}</optgroup>` : '';
    for (const [sel, none] of [['#train-dataset', false], ['#eval-dataset', true]]) {
      const el = $(sel), keep = el.value;
      el.innerHTML = (none ? '<option value="">(none)</option>' : '') + fits.map(opt).join('') + rest;
      el.value = picked.has(sel) && fits.some(d => d.id === keep) ? keep : (none ? '' : fits[0]?.id ?? '');
    }
    $('#train-hint').textContent = fits.length ? `${m} trains on ${formats.join(', ')} data; the newest is selected`
      : (datasets.length ? `no ${m} data yet (${formats.join(', ')}): upload some on the Datasets page` : 'upload a dataset first (Datasets page)');
  };
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
    fillDatasets();
  };
  const overrideLines = () => $('#overrides').value.split('\n').map(s => s.trim()).filter(Boolean);
  const showEstimate = () => {
    const given = Object.fromEntries(overrideLines().map(l => l.split('=')).filter(p => p.length > 1)
      .map(([k, ...v]) => [k.trim(), v.join('=').trim()]));
    const [steps, batch, accum, len] = BUDGET_KEYS.map(k => Number(given[k] ?? main.querySelector(`[data-key="${k}"]`).value));
    const out = $('#estimate');
    if (![steps, batch, accum, len].every(v => Number.isInteger(v) && v > 0)) {
      out.textContent = `No time estimate: ${BUDGET_KEYS.join(', ')} must be whole numbers.`;
      return;
    }
    const budget = steps * batch * accum * len;
    const e = estimate(speed, { model: $('#model').value.trim(), method: $('#method').value, budget });
    out.innerHTML = `Estimated time: <b id="estimate-time">≈ ${esc(duration(e.seconds))}</b> — an estimate:
      ${steps} steps × ${batch} × ${accum} × ${len} tokens = ${budget.toLocaleString()} tokens at
      ${num1(e.rate)} tokens/s plus ${esc(duration(e.overhead))} start-up, ${esc(e.source)}.`;
  };
  $('#method').onchange = () => { renderMethod(); showEstimate(); };
  renderMethod();
  main.querySelector('#run-form').addEventListener('input', showEstimate);
  if (source) fillFrom(source);
  showEstimate();

  // -- start from a copy of a run's config ------------------------------------------------------
  function fillFrom(job) {
    const cfg = flatten(job.config), lines = [], notes = [];
    $('#method').value = job.config.method;
    renderMethod();
    if (INFO.backends.includes(job.config.backend)) $('#backend').value = job.config.backend;
    $('#model').value = cfg['model.name'] ?? '';
    $('#run-name').value = `${job.name} (copy)`;
    for (const key of DATA_KEYS) {
      const refs = job.datasets[key] || [];
      refs.filter(r => !r.id).forEach(r => notes.push(`${key}: ${r.path} is no longer a dataset of this workspace`));
      const ids = refs.filter(r => r.id).map(r => r.id);
      const sel = { 'data.train': '#train-dataset', 'data.eval': '#eval-dataset' }[key];
      if (sel && ids.length <= 1 && [...$(sel).options].some(o => o.value === (ids[0] ?? ''))) {
        $(sel).value = ids[0] ?? '';
        picked.add(sel);
      }
      else if (ids.length) lines.push(`${key}=${JSON.stringify(ids)}`);
    }
    for (const [key, v] of Object.entries(cfg)) {
      if (OWN_KEYS.has(key) || DATA_KEYS.includes(key) || key.startsWith('curriculum')) continue;
      const el = main.querySelector(`[data-key="${key}"]`);
      if (el && byKey[key]) writeField(el, byKey[key], v);
      else if (key === 'grpo.rewards' || key === 'grpo.reward_weights') continue;
      else if (byKey[key] && JSON.stringify(v) !== JSON.stringify(byKey[key].default)) lines.push(`${key}=${JSON.stringify(v)}`);
    }
    if (job.config.method === 'grpo') fillRewards(job.config.grpo, lines);
    $('#overrides').value = lines.join('\n');
    const f = job.failure;
    $('#from-run').innerHTML = `<div class="card">A copy of the config of <a href="#/run/${esc(job.id)}">${esc(job.name)}</a>${
      f ? `, which failed (${esc(f.kind)}): <span class="errors">${esc(f.reason)}</span><div class="muted">${esc(f.hint)}</div>` : '.'}${
      notes.length ? `<div class="errors">${notes.map(esc).join('\n')}</div>` : ''}</div>`;
  }
  function fillRewards(g, lines) {
    main.querySelectorAll('[data-reward]').forEach(cb => { cb.checked = false; });
    const custom = [];
    (g.rewards || []).forEach((r, i) => {
      const w = (g.reward_weights || [])[i] ?? 1, cb = main.querySelector(`[data-reward="${CSS.escape(r)}"]`);
      if (cb) { cb.checked = true; main.querySelector(`[data-weight="${CSS.escape(r)}"]`).value = w; } else custom.push([r, w]);
    });
    if (custom.length === 1) {
      main.querySelector('[data-reward="custom"]').checked = true;
      $('#custom-reward').value = custom[0][0];
      main.querySelector('[data-weight="custom"]').value = custom[0][1];
    } else if (custom.length) {        // more than the form's one custom row: all as settings
      lines.push(`grpo.rewards=${JSON.stringify(g.rewards)}`, `grpo.reward_weights=${JSON.stringify(g.reward_weights)}`);
    }
  }

  // -- submit; each error at its field and all of them under the button --------------------------
  function showErrors(e) {
    main.querySelectorAll('.field-error').forEach(x => x.remove());
    main.querySelectorAll('.invalid').forEach(x => x.classList.remove('invalid'));
    const fields = (e.data && e.data.fields) || [];
    let first = null;
    for (const { key, message } of fields) {
      if (!key) continue;
      let el = TARGETS[key] ? $(TARGETS[key]) : main.querySelector(`[data-key="${CSS.escape(key)}"]`);
      if (!el && overrideLines().some(l => l.split('=')[0].trim() === key)) el = $('#overrides');
      if (!el) continue;
      const box = el.closest('label') || el.closest('fieldset') || el.parentElement;
      el.classList.add('invalid');
      box.insertAdjacentHTML('beforeend', `<small class="field-error" data-for="${esc(key)}">${esc(message.replace(/^config(:\d+)?: /, ''))}</small>`);
      first = first || el;
    }
    const n = fields.length || 1;
    $('#form-errors').textContent = `${n} problem${n > 1 ? 's' : ''}${first ? ' (shown at the fields above)' : ''}:\n${e.message}`;
    if (first) { first.scrollIntoView({ block: 'center' }); first.focus(); }
  }
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
    $('#form-errors').textContent = '';
    $('#form-status').textContent = 'Checking…';
    try {
      const job = await api('/api/runs', { method: 'POST', json: { name: $('#run-name').value, config: cfg, overrides: overrideLines() } });
      location.hash = `#/run/${job.id}`;
    } catch (e) {
      $('#form-status').textContent = '';
      showErrors(e);
    }
  };
}

const num1 = v => (v >= 100 ? Math.round(v).toLocaleString() : Number(v.toPrecision(3)).toString());
