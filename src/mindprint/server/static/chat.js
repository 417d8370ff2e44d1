// Chat playground (#/chat): talk to a run (streamed through the server's OpenAI-compatible
// /v1/chat/completions), side by side with the base model or another run. Every turn both models
// answer the same conversation; with "blind" on, the two answers appear in random order without
// names. Judging them makes training data: a pick ("sounds more like them") or an edit is a
// preference pair, a thumb a KTO example, appended by POST /api/feedback to the workspace's
// chat-preference.jsonl / chat-kto.jsonl datasets, which the New-run form offers like any upload.
// The conversation continues with the answer picked (or edited), else with model A's.

const SETTINGS = [
  ['temperature', 'chat-temp', 0.7], ['top_p', 'chat-topp', 0.95], ['max_tokens', 'chat-max', 200],
];

async function streamAnswer({ token, model, messages, settings, signal, onText }) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const r = await fetch('/v1/chat/completions', {
    method: 'POST', headers, signal,
    body: JSON.stringify({ model, messages, stream: true, ...settings }),
  });
  if (!r.ok) {
    let msg = `HTTP ${r.status}`;
    try { msg = (await r.json()).error.message; } catch { /* not JSON */ }
    throw new Error(msg);
  }
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = '', text = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return text;
    buf += dec.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf('\n\n')) >= 0) {          // one server-sent event per blank line
      const ev = buf.slice(0, cut); buf = buf.slice(cut + 2);
      if (!ev.startsWith('data: ')) continue;
      const data = ev.slice(6);
      if (data === '[DONE]') return text;
      const obj = JSON.parse(data);
      if (obj.error) throw new Error(obj.error.message);
      const delta = obj.choices && obj.choices[0] && obj.choices[0].delta.content;
      if (delta) { text += delta; onText(text); }
    }
  }
}

export async function pageChat(main, arg, { api, esc, token, toast, onLeave }) {
  const models = (await api('/v1/models')).data.map(m => m.id);
  const tuned = models.filter(m => m !== 'base');
  const options = (list, sel) => list.map(m => `<option${m === sel ? ' selected' : ''}>${esc(m)}</option>`).join('');
  main.innerHTML = `<h1>Chat</h1>
  <div class="card">
    <div class="grid">
      <label class="field"><span class="key">model A</span><select id="chat-a">${options(tuned.length ? tuned : models, arg || tuned[0])}</select>
        <small>a run with an adapter, or --adapter NAME</small></label>
      <label class="field"><span class="key">model B</span><select id="chat-b"><option value="">(none)</option>${options(models, 'base')}</select>
        <small>answers the same conversation</small></label>
      ${SETTINGS.map(([k, id, v]) => `<label class="field"><span class="key">${k.replace('_', ' ')}</span><input id="${id}" type="number" step="any" value="${v}"></label>`).join('')}
      <label class="field"><span class="key">blind A/B</span><input id="chat-blind" type="checkbox" checked>
        <small>random order, names shown after your pick</small></label>
    </div>
    <label class="field"><span class="key">system prompt</span><textarea id="chat-system" rows="2" placeholder="optional"></textarea></label>
  </div>
  <div id="chat-log"></div>
  <form id="chat-form" class="card">
    <textarea id="chat-input" rows="2" placeholder="Say something to the clone…"></textarea>
    <div class="row" style="margin-top:8px"><button class="primary" id="chat-send">Send</button>
      <button type="button" id="chat-reset">New conversation</button>
      <span class="muted" id="chat-status"></span></div>
  </form>`;
  const $ = sel => main.querySelector(sel);
  const turns = [];               // {user, answers: [{model, text}], kept}
  let abort = null;
  onLeave(() => abort && abort.abort());

  const system = () => $('#chat-system').value.trim();
  const history = () => [...(system() ? [{ role: 'system', content: system() }] : []),
    ...turns.flatMap(t => (t.kept === undefined ? [] : [{ role: 'user', content: t.user }, { role: 'assistant', content: t.kept }]))];
  const settings = () => Object.fromEntries(SETTINGS.map(([k, id, v]) => {
    const x = Number($(`#${id}`).value); return [k, k === 'max_tokens' ? Math.round(x) || v : (Number.isFinite(x) ? x : v)];
  }));

  async function feedback(body, what) {
    const ds = await api('/api/feedback', { method: 'POST', json: body });
    toast(`${what} saved: ${ds.name} now holds ${ds.report.total} record(s); train on it from New run`);
    return ds;
  }

  function renderTurn(t, el) {
    const blindHidden = t.blind && t.picked === undefined;
    el.innerHTML = `<div class="sample"><b>you</b><div class="answer">${esc(t.user)}</div>
      <div class="chat-answers" style="display:grid;grid-template-columns:repeat(${t.answers.length},1fr);gap:12px">
      ${t.answers.map((a, i) => `<div class="chat-answer" data-i="${i}">
        <b>${blindHidden ? `Answer ${i + 1}` : esc(a.model)}${t.picked === i ? ' ✓ picked' : ''}${a.edited ? ' (edited)' : ''}</b>
        <div class="answer">${esc(a.text)}${a.done ? '' : '▍'}</div>
        ${a.error ? `<div class="errors">${esc(a.error)}</div>` : ''}
        ${t.done && !a.error ? `<div class="actions row">
          ${t.answers.length > 1 && t.picked === undefined ? `<button data-act="pick" class="primary">Sounds more like them</button>` : ''}
          <button data-act="up" title="a good answer (KTO: desirable)">👍</button>
          <button data-act="down" title="a bad answer (KTO: undesirable)">👎</button>
          <button data-act="edit">Edit</button></div>` : ''}
      </div>`).join('')}</div></div>`;
  }

  async function send(text) {
    const prompt = [...history(), { role: 'user', content: text }];
    const pair = [$('#chat-a').value, $('#chat-b').value].filter(Boolean);
    const blind = $('#chat-blind').checked && pair.length > 1;
    if (blind && Math.random() < 0.5) pair.reverse();
    const t = { user: text, prompt, blind, answers: pair.map(model => ({ model, text: '', done: false })) };
    turns.push(t);
    const el = document.createElement('div');
    el.className = 'card chat-turn';
    $('#chat-log').appendChild(el);
    const draw = () => renderTurn(t, el);
    draw();
    abort = new AbortController();
    const s = settings();
    $('#chat-send').disabled = true; $('#chat-status').textContent = 'answering…';
    await Promise.all(t.answers.map(async a => {
      try {
        a.text = await streamAnswer({ token, model: a.model, messages: prompt, settings: s,
          signal: abort.signal, onText: x => { a.text = x; draw(); } });
      } catch (e) { if (e.name !== 'AbortError') a.error = e.message; }
      a.done = true; draw();
    }));
    $('#chat-send').disabled = false; $('#chat-status').textContent = '';
    t.done = true;
    const first = t.answers.find(a => !a.error && a.model === $('#chat-a').value) || t.answers.find(a => !a.error);
    t.kept = first ? first.text : undefined;
    draw();
    el.addEventListener('click', async ev => {
      const b = ev.target.closest('button[data-act]');
      if (!b) return;
      const i = Number(b.closest('.chat-answer').dataset.i), a = t.answers[i];
      try {
        if (b.dataset.act === 'pick') {
          const other = t.answers[1 - i];
          await feedback({ kind: 'preference', prompt: t.prompt, chosen: a.text, rejected: other.text }, 'your pick');
          t.picked = i; t.kept = a.text;
        } else if (b.dataset.act === 'up' || b.dataset.act === 'down') {
          await feedback({ kind: 'kto', prompt: t.prompt, completion: a.text, label: b.dataset.act === 'up' }, 'your thumb');
          b.disabled = true; return;
        } else if (b.dataset.act === 'edit') {
          const box = b.closest('.chat-answer');
          box.querySelector('.answer').outerHTML = `<textarea class="chat-edit" rows="4">${esc(a.text)}</textarea>`;
          b.outerHTML = '<button data-act="save-edit" class="primary">Save edit</button>';
          return;
        } else if (b.dataset.act === 'save-edit') {
          const edited = b.closest('.chat-answer').querySelector('.chat-edit').value.trim();
          if (!edited || edited === a.text) { toast('change the answer first'); return; }
          await feedback({ kind: 'preference', prompt: t.prompt, chosen: edited, rejected: a.text }, 'your edit');
          a.text = edited; a.edited = true; t.kept = edited;
        }
        draw();
      } catch (e) { toast(e.message); }
    });
  }

  $('#chat-form').onsubmit = async ev => {
    ev.preventDefault();
    const text = $('#chat-input').value.trim();
    if (!text) return;
    $('#chat-input').value = '';
    await send(text);
  };
  $('#chat-input').addEventListener('keydown', ev => {
    if (ev.key === 'Enter' && !ev.shiftKey) { ev.preventDefault(); $('#chat-form').requestSubmit(); }
  });
  $('#chat-reset').onclick = () => { if (abort) abort.abort(); turns.length = 0; $('#chat-log').innerHTML = ''; };
}
