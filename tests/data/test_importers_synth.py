"""`mindprint data synth`: passages → questions from an OpenAI-compatible endpoint (a tiny
server this test starts on 127.0.0.1; it stops by itself) or a local model (the tiny random
model: its questions are gibberish, so structure is asserted, not content)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import REPO
from mindprint.data.importers.prose import approx_tokens
from mindprint.api import datasets
from mindprint.data.synth import endpoint_asker, question_of, read_passages, synth
from mindprint.data.stream import Drops
from mindprint.errors import DataError

FIX = Path(__file__).parent / "fixtures" / "importers"
TALK = """Thank you all for coming out on a wet Tuesday.

I want to talk about maps. Every map is a decision about what to leave out, and the decisions
say more about the map maker than about the land.

The oldest map in our archive shows three churches and no river. The monks who drew it did not
need a river to find God, but they badly needed it to find lunch.

Maps of my own street would show the bakery first, the school second, and the bank not at all.

ECHO this passage asks nothing, it only repeats itself like a parrot in a quiet museum at night
while the guards play cards and the rain keeps falling on the roof of the west wing."""


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append((self.path, self.headers.get("Authorization"), body))
        prompt = body["messages"][-1]["content"]
        if "ECHO" in prompt:
            answer = "ECHO this passage asks nothing"           # a copy: unusable
        elif "bakery" in prompt:
            answer = "   "                                     # empty: unusable
        else:
            topic = "maps" if "maps" in prompt else "the archive" if "archive" in prompt else "us"
            answer = f'Question: "What would you say about {topic}?"\nSure, here it is.'
        data = json.dumps({"id": "x", "object": "chat.completion", "created": 0,
                           "model": body["model"],
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": answer}}],
                           "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                     "total_tokens": 2}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.seen = []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    stop = threading.Timer(120, srv.shutdown)        # bounded even if the test hangs
    stop.daemon = True
    stop.start()
    try:
        yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        stop.cancel()
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def talk(tmp_path):
    p = tmp_path / "talk.md"
    p.write_text(TALK)
    return p


def _rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.mark.parametrize("use_openai", [True, False])
def test_endpoint_questions_with_openai_client_and_urllib(server, talk, tmp_path, use_openai):
    srv, url = server
    ask = endpoint_asker(url, "qwen-test", "sekret", max_new_tokens=32, use_openai=use_openai)
    logs = []
    res = synth(talk, tmp_path / "out.jsonl", ask=ask, max_length=60, log=logs.append)
    rows = _rows(res.output)
    # 60 tokens (words × 1.4): greeting + maps paragraph | archive | bakery | echo
    assert [r["messages"][0]["content"] for r in rows] == [
        "What would you say about maps?", "What would you say about the archive?"]
    assert rows[0]["messages"][1]["content"] == "\n\n".join(TALK.split("\n\n")[:2])
    assert rows[1]["messages"][1]["content"].startswith("The oldest map in our archive")
    assert all([m["role"] for m in r["messages"]] == ["user", "assistant"] for r in rows)
    assert res.drops.counts == {"generated question empty or unusable": 2}
    path, auth, body = srv.seen[0]
    assert path == "/v1/chat/completions" and auth == "Bearer sekret"
    assert body["model"] == "qwen-test" and body["temperature"] == 0


def test_cli_synth_endpoint_reads_the_key_from_the_environment(server, talk, tmp_path):
    srv, url = server
    out = tmp_path / "q.jsonl"
    env = {**os.environ, "MY_KEY": "k-123"}
    r = subprocess.run([sys.executable, "-m", "mindprint.cli", "data", "synth", str(talk), "-o",
                        str(out), "--endpoint", url + "/v1", "--api-key-env", "MY_KEY",
                        "--model", "m", "--max-length", "60"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out) and "wrote" in r.stderr and "unusable" in r.stderr
    assert {auth for _, auth, _ in srv.seen} == {"Bearer k-123"} and len(_rows(out)) >= 2
    r = subprocess.run([sys.executable, "-m", "mindprint.cli", "data", "synth", str(talk), "-o",
                        str(tmp_path / "r.jsonl"), "--endpoint", url, "--api-key-env", "NOPE_X"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "NOPE_X" in r.stderr and "Traceback" not in r.stderr


def test_endpoint_down_is_a_clear_error(talk, tmp_path):
    ask = endpoint_asker("http://127.0.0.1:9", "m", None, max_new_tokens=8, use_openai=False,
                         timeout=5)
    with pytest.raises(Exception) as err:
        synth(talk, tmp_path / "o.jsonl", ask=ask, log=lambda s: None)
    assert "127.0.0.1:9/v1/chat/completions" in str(err.value)
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize("raw,q", [
    ("What is a map?", "What is a map?"), ("Question: Why maps?\nextra", "Why maps?"),
    ('**Q:** "How did it start?"', "How did it start?"), ("", None), ("   \n ", None),
    ("Hm", None), ("?? !!", None), ("the oldest map", None)])
def test_question_cleaning(raw, q):
    assert question_of(raw, "The oldest map in our archive shows three churches.") == q


def test_text_jsonl_input_and_its_errors(tmp_path):
    good = tmp_path / "t.jsonl"
    good.write_text(json.dumps({"text": "One.\n\nTwo paragraphs here."}) + "\n" +
                    json.dumps({"text": "  "}) + "\n")
    drops = Drops()
    assert [p for p, _ in read_passages(good, 100, lambda s: len(s.split()), drops)] == \
        ["One.\n\nTwo paragraphs here."]
    assert drops.counts == {"empty text": 1}
    bad = tmp_path / "b.jsonl"
    bad.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"txt": "oops"}) + "\n")
    with pytest.raises(DataError, match=r"b\.jsonl:2: text: missing"):
        read_passages(bad, 100, len, Drops())


def test_local_model_asks_structure_only(tiny_model_dir, talk, tmp_path):
    passages = read_passages(talk, 40, approx_tokens, Drops())
    logs = []
    try:
        res = datasets.synth(talk, tmp_path / "out.jsonl", model=tiny_model_dir, max_length=40,
                    max_new_tokens=12, batch_size=3, device="cpu", log=logs.append)
    except DataError as err:
        # the tiny random model may stop at once: every passage is then counted as unusable
        assert "no passage got a usable question" in str(err)
        assert f"generated question empty or unusable: {len(passages)}" in "\n".join(logs)
        assert not (tmp_path / "out.jsonl").exists()
        return
    rows = _rows(res.output)
    assert len(rows) + res.drops.total == len(passages)
    for row in rows:
        (u, a) = row["messages"]
        assert u["role"] == "user" and a["role"] == "assistant" and u["content"].strip()
        assert a["content"] in [p for p, _ in passages]
