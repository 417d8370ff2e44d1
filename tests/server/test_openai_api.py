"""The OpenAI-compatible API (``/v1``) on the tiny model, driven by the official ``openai`` client
and by raw HTTP for the stream's framing; adapters switched over one base; requests queued, never
interleaved; the token as the API key; ``mindprint chat`` with piped input."""

from __future__ import annotations

import io
import json
import shutil
import sys
import threading
from pathlib import Path

import openai
import pytest
from fastapi.testclient import TestClient

from mindprint.server.app import create_app
from mindprint.server.store import new_id

from conftest import make_adapter

BASE = "http://127.0.0.1"
HELLO = [{"role": "user", "content": "Where is the market heading this year?"}]


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("v1-adapters")
    return {"calm": make_adapter(tiny_model_dir, root / "calm", seed=5, scale=4.0),
            "loud": make_adapter(tiny_model_dir, root / "loud", seed=6, scale=4.0)}


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir, adapters):
    """One app for the module (the base loads once); a finished run 'tide voice' in its store."""
    ws = tmp_path_factory.mktemp("v1") / "ws"
    app = create_app(ws, start_runner=False, model=tiny_model_dir, adapters=dict(adapters))
    with TestClient(app, base_url=BASE) as c:
        run_id = new_id("r")
        run_dir = ws / "jobs" / run_id / "run"
        shutil.copytree(adapters["loud"], run_dir / "adapter")
        app.state.store.add_job(id=run_id, kind="train", name="tide voice", status="completed",
                                config={"method": "sft"}, dir=str(run_dir.parent))
        yield c, app, run_id


def oai(c: TestClient, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{BASE}/v1", api_key=key, http_client=c, max_retries=0)


def answer(client, model: str, **kw) -> str:
    kw.setdefault("temperature", 0)
    kw.setdefault("max_tokens", 12)
    r = client.chat.completions.create(model=model, messages=kw.pop("messages", HELLO), **kw)
    return r.choices[0].message.content


def test_models_and_plain_completions_with_the_openai_client(served):
    c, app, run_id = served
    client = oai(c)
    ids = [m.id for m in client.models.list().data]
    assert ids == ["base", "calm", "loud", "tide voice"]
    r = client.chat.completions.create(model="calm", messages=HELLO, temperature=0,
                                       max_tokens=7)
    assert r.object == "chat.completion" and r.model == "calm"
    ch = r.choices[0]
    assert ch.message.role == "assistant" and ch.message.content
    # the random tiny model never says end-of-turn this early: the length limit stops it
    assert ch.finish_reason == "length" and r.usage.completion_tokens == 7
    assert r.usage.prompt_tokens > 5 and r.usage.total_tokens == r.usage.prompt_tokens + 7
    # adapters over one base: each its own answer, base again unchanged after the switches
    base1 = answer(client, "base")
    calm, loud = answer(client, "calm"), answer(client, "loud")
    assert len({base1, calm, loud}) == 3
    assert answer(client, "base") == base1 and answer(client, "calm") == calm
    # a run of the workspace by name and by id: the run's own adapter (a copy of loud)
    assert answer(client, "tide voice") == loud == answer(client, run_id)


def test_sampling_settings_seed_stop_and_top_p(served):
    c, _, _ = served
    client = oai(c)
    kw = dict(temperature=1.3, top_p=0.9, max_tokens=16)
    a = answer(client, "loud", seed=11, **kw)
    assert answer(client, "loud", seed=11, **kw) == a           # a seed repeats
    others = {answer(client, "loud", seed=s, **kw) for s in (12, 13, 14)}
    assert others - {a}                                          # other seeds differ
    # stop: the answer ends before the stop text, finish_reason "stop"
    full = answer(client, "calm", max_tokens=24)
    words = full.split()
    cut_word = next(w for w in words[1:] if len(w) > 1)
    r = client.chat.completions.create(model="calm", messages=HELLO, temperature=0,
                                       max_tokens=24, stop=[cut_word, "\u2603never"])
    text = r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop" and cut_word not in text
    assert full.startswith(text.rstrip()) and len(text) < len(full)


def test_stream_with_the_openai_client_equals_the_plain_answer(served):
    c, _, _ = served
    client = oai(c)
    plain = answer(client, "calm", max_tokens=10)
    chunks = list(client.chat.completions.create(model="calm", messages=HELLO, temperature=0,
                                                 max_tokens=10, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == plain
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10


def test_sse_framing_over_raw_http(served):
    c, _, _ = served
    body = {"model": "base", "messages": [{"role": "system", "content": "Be brief."}, *HELLO],
            "stream": True, "temperature": 0, "max_tokens": 6}
    with c.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = "".join(r.iter_text())
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    payloads = [json.loads(e[len("data: "):]) for e in events[:-2]]
    assert all(e.startswith("data: {") for e in events[:-2])
    assert all(p["object"] == "chat.completion.chunk" for p in payloads)
    assert len({p["id"] for p in payloads}) == 1 and payloads[0]["id"].startswith("chatcmpl-")
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert payloads[-1]["choices"][0]["delta"] == {}
    assert payloads[-1]["choices"][0]["finish_reason"] == "length"
    assert all(p["choices"][0]["finish_reason"] is None for p in payloads[:-1])


@pytest.mark.parametrize("body, status, needle", [
    ({"model": "nobody"}, 404, "no model 'nobody'"),
    ({"n": 2}, 400, "n=1"),
    ({"logit_bias": {"1": 5}}, 400, "logit_bias: not supported"),
    ({"temperature": 3}, 400, "temperature"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "messages.0.role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     400, "messages.0.content"),
    ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"messages": [{"role": "user", "content": "word " * 600}]}, 400, "at most 512"),
])
def test_bad_requests_get_openai_shaped_errors(served, body, status, needle):
    c, _, _ = served
    req = {"model": "calm", "messages": HELLO, "max_tokens": 3, **body}
    r = c.post("/v1/chat/completions", json=req)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert needle in err["message"] and err["type"], err


def test_the_openai_client_raises_its_own_errors(served):
    client = oai(served[0])
    with pytest.raises(openai.NotFoundError, match="no model 'ghost'"):
        answer(client, "ghost")
    with pytest.raises(openai.BadRequestError, match="n=1"):
        answer(client, "calm", n=3)


def test_an_adapter_of_another_base_is_refused_by_name(served, adapters, tmp_path,
                                                       bundled_model_dir):
    c, app, _ = served
    other = tmp_path / "other"
    shutil.copytree(adapters["calm"], other)
    meta = json.loads((other / "mindprint.json").read_text())
    meta["base_model"] = bundled_model_dir
    (other / "mindprint.json").write_text(json.dumps(meta))
    run_id = new_id("r")
    (other.parent / "job" / "run").mkdir(parents=True)
    shutil.move(str(other), other.parent / "job" / "run" / "adapter")
    app.state.store.add_job(id=run_id, kind="train", name="elsewhere", status="completed",
                            config={}, dir=str(other.parent / "job"))
    try:
        r = c.post("/v1/chat/completions", json={"model": "elsewhere", "messages": HELLO})
        assert r.status_code == 400, r.text
        assert "was trained on" in r.json()["error"]["message"]
        assert "--model" in r.json()["error"]["message"]
    finally:
        app.state.store.delete_job(run_id)


def test_concurrent_requests_are_queued_not_interleaved(served):
    """Four clients at once over two adapters and the base: every answer equals the one the same
    request gets alone (an adapter switched under a running generation would change it)."""
    c, _, _ = served
    client = oai(c)
    models = ["calm", "base", "loud", "calm"]
    alone = [answer(client, m, max_tokens=20) for m in models]
    got = [None] * len(models)

    def ask(i):
        got[i] = answer(client, models[i], max_tokens=20)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(models))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert got == alone


def test_the_token_is_the_api_key(tmp_path, tiny_model_dir):
    app = create_app(tmp_path / "ws", start_runner=False, token="s3cret-token",
                     model=tiny_model_dir)
    with TestClient(app, base_url=BASE) as c:
        assert c.get("/v1/models").status_code == 401              # no key at all
        with pytest.raises(openai.PermissionDeniedError):
            oai(c, key="wrong").models.list()
        assert [m.id for m in oai(c, key="s3cret-token").models.list().data] == ["base"]
        assert c.post("/v1/chat/completions", json={}).status_code == 401
        # a foreign page may not make the browser post to it
        r = c.post("/v1/chat/completions", headers={"Authorization": "Bearer s3cret-token",
                                                     "Origin": "http://evil.example"},
                   json={"model": "base", "messages": HELLO, "max_tokens": 2})
        assert r.status_code == 403


def test_mindprint_chat_keeps_the_conversation_and_resets(tiny_model_dir, adapters,
                                                          monkeypatch, capsys):
    from mindprint import cli
    from mindprint.server import engine

    seen = []
    real = engine.ChatEngine.submit

    def spy(self, messages, adapter, settings):
        seen.append(([m["role"] for m in messages], adapter, settings.max_tokens))
        return real(self, messages, adapter, settings)

    monkeypatch.setattr(engine.ChatEngine, "submit", spy)
    monkeypatch.setattr(sys, "stdin", io.StringIO(
        "How do you sleep at night?\n\nAnd in a crash?\n/reset\n/help\nStarting over.\n/quit\n"
        "never read\n"))
    rc = cli.main(["chat", "--adapter", adapters["calm"], "--model", tiny_model_dir,
                   "--system", "You are Ada.", "--max-new-tokens", "5", "--temperature", "0"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert [s[0] for s in seen] == [["system", "user"],
                                    ["system", "user", "assistant", "user"],
                                    ["system", "user"]]
    assert {s[1] for s in seen} == {str(Path(adapters["calm"]))} and seen[0][2] == 5
    assert "conversation reset" in err and "unknown command /help" in err
    assert out.count("\n") >= 3 and out.strip()       # three answers, each ends its line
