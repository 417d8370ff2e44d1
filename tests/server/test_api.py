"""The REST API: uploads and their validation report, bad uploads, path traversal, the token,
CORS and cross-origin writes, config errors with the CLI's own messages, the run lifecycle, the
event stream, restart reconciliation, and real eval/compare jobs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from mindprint.server.app import create_app
from mindprint.server.jobs import JobRunner
from mindprint.server.routes.datasets import safe_filename
from mindprint.server.store import Store

from .helpers import chat_rows, tiny_run_config, wait_for

BASE = "http://127.0.0.1"


def client(ws: Path, **kw) -> TestClient:
    kw.setdefault("start_runner", False)
    return TestClient(create_app(ws, **kw), base_url=BASE)


def upload(c, name: str, data: bytes):
    return c.post("/api/datasets", files={"file": (name, data)})


GOOD = json.dumps({"messages": [{"role": "user", "content": "Where are we?"},
                                {"role": "assistant", "content": "Zoom out."}], "topic": "cycles"})


# -- uploads -------------------------------------------------------------------------------------
def test_upload_report_has_counts_and_line_problems_like_data_validate(tmp_path):
    from mindprint.data.validate import validate_file

    body = "\n".join([GOOD, '{"messages": [{"role": "robot", "content": "x"}]}', "not json",
                      GOOD, '{"messages": [{"role": "user", "content": "q"}]}']) + "\n"
    with client(tmp_path / "ws") as c:
        r = upload(c, "mixed.jsonl", body.encode())
        assert r.status_code == 201, r.text
        d = r.json()
        assert d["name"] == "mixed.jsonl" and d["format"] == "chat" and d["ok"] is False
        assert (d["report"]["total"], d["report"]["valid"], d["report"]["invalid"]) == (5, 2, 3)
        assert d["report"]["topics"] == {"cycles": 2}
        assert [p["line"] for p in d["report"]["problems"]] == [2, 3, 5]
        # the same problems `mindprint data validate` prints, as `line: problem`
        local = tmp_path / "mixed.jsonl"
        local.write_text(body, encoding="utf-8")
        expected = [p[len(f"{local}:"):] for p in validate_file(local).problems]
        assert d["report"]["text"] == expected
        assert "'robot'" in d["report"]["problems"][0]["problem"] or "robot" in \
            d["report"]["problems"][0]["problem"]
        # stored under the workspace only; listed, previewed, deleted
        stored = list((tmp_path / "ws" / "datasets").rglob("*.jsonl"))
        assert [p.name for p in stored] == ["mixed.jsonl"]
        assert [x["id"] for x in c.get("/api/datasets").json()] == [d["id"]]
        prev = c.get(f"/api/datasets/{d['id']}/preview", params={"limit": 3}).json()
        assert [r["line"] for r in prev["rows"]] == [1, 2, 3] and prev["rows"][2]["text"] == "not json"
        assert c.delete(f"/api/datasets/{d['id']}").status_code == 204
        assert c.get(f"/api/datasets/{d['id']}").status_code == 404
        assert not list((tmp_path / "ws" / "datasets").rglob("*.jsonl"))


@pytest.mark.parametrize("name", ["../evil.jsonl", "../../etc/cron.d/x.jsonl", "..\\evil.jsonl",
                                  "/etc/passwd.jsonl", "a/b.jsonl", "./x.jsonl"])
def test_upload_names_with_paths_are_refused(tmp_path, name):
    with client(tmp_path / "ws") as c:
        r = upload(c, name, (GOOD + "\n").encode())
        assert r.status_code == 400, r.text
        assert c.get("/api/datasets").json() == []
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix == ".jsonl"]
    assert written == []


def test_windows_drive_path_keeps_only_its_base_name(tmp_path):
    # python-multipart reduces "C:\\dir\\x.jsonl" to its base name (the old IE rule) before the
    # app sees it; whatever arrives, the file lands in the workspace's datasets folder
    with client(tmp_path / "ws") as c:
        r = upload(c, "C:\\Windows\\x.jsonl", (GOOD + "\n").encode())
        assert r.status_code in (201, 400), r.text
        written = [p for p in tmp_path.rglob("*.jsonl")]
        if r.status_code == 201:
            assert r.json()["name"] == "x.jsonl"
            assert len(written) == 1 and written[0].parent.parent == tmp_path / "ws" / "datasets"
        else:
            assert written == []


def test_bad_uploads(tmp_path):
    with client(tmp_path / "ws", max_upload_bytes=2000) as c:
        r = upload(c, "empty.jsonl", b"")
        assert r.status_code == 422 and "empty.jsonl: file is empty" in r.json()["detail"]
        assert "/" not in r.json()["detail"]            # the server's paths stay private
        r = upload(c, "notes.txt", b"hello\n")
        assert r.status_code == 400 and "*.jsonl" in r.json()["detail"]
        r = c.post("/api/datasets", data={"other": "x"})
        assert r.status_code == 400 and "'file'" in r.json()["detail"]
        big = ((GOOD + "\n") * 40).encode()
        assert len(big) > 2000
        r = upload(c, "big.jsonl", big)
        assert r.status_code == 413 and "2000 bytes" in r.json()["detail"]
        assert c.get("/api/datasets").json() == []
        assert not any((tmp_path / "ws" / "datasets").iterdir())   # nothing half-stored
        r = upload(c, "my data (1).jsonl", (GOOD + "\n").encode())
        assert r.status_code == 201 and r.json()["name"] == "my_data_1_.jsonl"


def test_safe_filename():
    assert safe_filename("persona.jsonl") == "persona.jsonl"
    assert safe_filename("..hidden.jsonl") == "hidden.jsonl"
    for bad in ("", "x.jsonl\0", "../x.jsonl", "/x.jsonl", "d:x.jsonl", "a\\b.jsonl", ".jsonl"):
        with pytest.raises(ValueError):
            safe_filename(bad)


def test_ids_with_paths_never_reach_the_file_system(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    with client(tmp_path / "ws") as c:
        for url in ("/api/datasets/..%2F..%2Fsecret.txt", "/api/datasets/../../secret.txt",
                    "/api/datasets/d-..%2F..%2Fsecret/preview", "/api/runs/..%2F..%2Fsecret.txt",
                    "/api/runs/%2e%2e/adapter.zip", "/api/evals/..%2F..%2Fsecret.txt/report",
                    "/api/runs/r-0123456789ab/log", "/api/datasets/D-0123456789AB",
                    "/static/..%2F..%2F..%2Fsecret.txt", "/static/../../secret.txt"):
            r = c.get(url)
            assert r.status_code in (404, 422), (url, r.status_code)
            assert "TOPSECRET" not in r.text
        r = c.post("/api/evals", json={"run": "../../x", "chat": ["d-0123456789ab"]})
        assert r.status_code == 422


# -- token, CORS, cross-origin writes ------------------------------------------------------------
def test_token_is_checked_on_every_api_call_and_the_event_stream(tmp_path):
    with pytest.raises(ValueError, match="token"):
        create_app(tmp_path / "ws0", host="0.0.0.0")
    with client(tmp_path / "ws", host="0.0.0.0", token="s3cret-token") as c:
        r = c.get("/api/info")
        assert r.status_code == 401 and "missing token" in r.json()["detail"]
        assert c.get("/api/info", headers={"Authorization": "Bearer nope"}).status_code == 403
        assert c.get("/api/info", params={"token": "s3cret-tokenX"}).status_code == 403
        assert c.get("/api/info", headers={"Authorization": "Bearer s3cret-token"}).json()[
            "token_required"] is True
        assert c.get("/api/info", headers={"X-Mindprint-Token": "s3cret-token"}).status_code == 200
        assert c.get("/api/datasets", params={"token": "s3cret-token"}).status_code == 200
        for method, url in (("get", "/api/runs/r-0123456789ab/events"), ("get", "/api/runs"),
                            ("post", "/api/runs"), ("post", "/api/datasets"),
                            ("delete", "/api/datasets/d-0123456789ab"),
                            ("get", "/api/runs/r-0123456789ab/adapter.zip")):
            assert getattr(c, method)(url).status_code == 401, url
            assert getattr(c, method)(url, params={"token": "wrong"}).status_code == 403, url
        r = upload(c, "x.jsonl", (GOOD + "\n").encode())
        assert r.status_code == 401 and c.get("/api/datasets",
                                              params={"token": "s3cret-token"}).json() == []
        assert c.get("/").status_code == 200        # the page itself holds no data


def test_serve_generates_and_prints_a_token_off_loopback(tmp_path, monkeypatch, capsys):
    import uvicorn

    from mindprint.cli import main

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    assert main(["serve", "--host", "0.0.0.0", "--port", "7999", "--workspace",
                 str(tmp_path / "ws")]) == 0
    token = seen["app"].state.token
    assert token and len(token) >= 24 and seen["host"] == "0.0.0.0" and seen["port"] == 7999
    out = capsys.readouterr()
    assert f"?token={token}" in out.out and token in out.err
    assert main(["serve", "--workspace", str(tmp_path / "ws")]) == 0      # loopback: none
    assert seen["app"].state.token is None and seen["host"] == "127.0.0.1" and seen["port"] == 7860
    assert main(["serve", "--token", "mine", "--workspace", str(tmp_path / "ws")]) == 0
    assert seen["app"].state.token == "mine"


def test_cors_closed_and_cross_origin_writes_refused(tmp_path):
    with client(tmp_path / "ws") as c:
        evil = {"Origin": "http://evil.example"}
        r = c.options("/api/runs", headers={**evil, "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in r.headers
        r = c.get("/api/info", headers=evil)
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        r = c.post("/api/datasets", headers=evil, files={"file": ("x.jsonl", GOOD.encode())})
        assert r.status_code == 403 and "cross-origin" in r.json()["detail"]
        r = c.post("/api/datasets", headers={"Origin": BASE}, files={"file": ("x.jsonl", GOOD.encode())})
        assert r.status_code == 201
        # DNS rebinding: a foreign host name pointing at 127.0.0.1
        assert c.get("/api/info", headers={"Host": "evil.example:7860"}).status_code == 403
        assert c.get("/api/info", headers={"Host": "localhost:7860"}).status_code == 200
    with client(tmp_path / "ws2", cors_origins=["http://tool.local"]) as c:
        r = c.get("/api/info", headers={"Origin": "http://tool.local"})
        assert r.headers.get("access-control-allow-origin") == "http://tool.local"


# -- config errors -------------------------------------------------------------------------------
BAD_CONFIGS = [
    {"train": {"learning_rate": 1e-4}},
    {"lora": {"r": 0}},
    {"method": "sftt"},
    {"train": {"max_steps": "many"}},
    {"method": "grpo", "grpo": {"rewards": ["lenght"]}},
    {"dpo": {"betta": 0.1}},
]


def _cli_error(tmp_path, raw: dict) -> str:
    """What `mindprint config show` prints for the same config, without its source prefix."""
    from mindprint.cli import main

    p = tmp_path / "cli.yaml"
    p.write_text(yaml.safe_dump(raw))
    proc = subprocess.run([sys.executable, "-c", "import sys; from mindprint.cli import main; "
                           "sys.exit(main(sys.argv[1:]))", "config", "show", str(p)],
                          capture_output=True, text=True, env={k: v for k, v in os.environ.items()
                                                               if not k.startswith("MINDPRINT_")})
    del main
    assert proc.returncode == 2, proc.stdout
    lines = [ln[len("error: "):] if ln.startswith("error: ") else ln.strip()
             for ln in proc.stderr.strip().splitlines()]
    return "\n".join(ln.replace(f"{p}: ", "", 1) for ln in lines)


def test_config_errors_are_the_clis_messages(tmp_path):
    with client(tmp_path / "ws") as c:
        ds = upload(c, "t.jsonl", chat_rows(4)).json()["id"]
        for bad in BAD_CONFIGS:
            raw = {"data": {"train": [ds]}, **bad}
            r = c.post("/api/runs", json={"config": raw})
            assert r.status_code == 422, (bad, r.text)
            api_msg = "\n".join(ln.replace("config: ", "", 1) for ln in r.json()["errors"])
            cli_raw = {**raw, "data": {"train": [str(tmp_path / "x.jsonl")]}}
            assert api_msg == _cli_error(tmp_path, cli_raw), bad
        r = c.post("/api/runs", json={"config": {"data": {"train": [ds]}, "train": {"learning_rate": 1}}})
        assert r.json()["detail"] == "config: unknown key 'train.learning_rate'; did you mean 'train.lr'?"
        # --set-style overrides give --set's messages
        r = c.post("/api/runs", json={"config": {"data": {"train": [ds]}},
                                      "overrides": ["train.max_step=3"]})
        assert r.json()["detail"] == ("--set train.max_step: unknown key 'train.max_step'; did you "
                                      "mean 'train.max_steps'?")
        # server rules
        r = c.post("/api/runs", json={"config": {"data": {"train": ["/etc/passwd"]}}})
        assert r.status_code == 422 and "not a dataset of this workspace" in r.json()["detail"]
        r = c.post("/api/runs", json={"config": {"data": {"train": [ds], "eval": ["../x.jsonl"]}}})
        assert r.status_code == 422 and "data.eval: '../x.jsonl'" in r.json()["detail"]
        r = c.post("/api/runs", json={"config_yaml": "data:\n  train: [" + ds + "\n"})
        assert r.status_code == 422 and "invalid YAML" in r.json()["detail"]
        r = c.post("/api/runs", json={"config": {"data": {"train": [ds]}, "method": "grpo",
                                                 "grpo": {"rewards": ["not_installed_mod:f"]}}})
        assert r.status_code == 422 and "not installed" in r.json()["detail"]
        assert c.get("/api/runs").json() == []           # nothing was queued
        r = c.post("/api/runs", json={"config_yaml": f"data:\n  train: [{ds}]\noutput_dir: /tmp/x\n"})
        assert r.status_code == 201                     # output_dir is the server's to choose
        assert r.json()["run_dir"].startswith(str((tmp_path / "ws").resolve()))


def test_reward_module_from_the_working_directory_is_refused(tmp_path, monkeypatch):
    (tmp_path / "evil_reward.py").write_text("import os\ndef score(p, c, r): return [0.0] * len(c)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with client(tmp_path / "ws") as c:
        ds = upload(c, "t.jsonl", chat_rows(4)).json()["id"]
        r = c.post("/api/runs", json={"config": {"data": {"train": [ds]}, "method": "grpo",
                                                 "grpo": {"rewards": ["evil_reward:score"]}}})
        assert r.status_code == 422 and "not an installed module" in r.json()["detail"]
        r = c.post("/api/runs", json={"config": {"data": {"train": [ds]}, "method": "grpo",
                                                 "grpo": {"rewards": ["length", "yaml:safe_load"],
                                                          "reward_weights": [1, 0.5]}}})
        assert r.status_code == 201, r.text          # an installed module is fine
        assert r.json()["config"]["grpo"]["reward_weights"] == [1.0, 0.5]


# -- lifecycle without a runner, the event stream ------------------------------------------------
def test_run_lifecycle_and_event_stream(tmp_path, tiny_model_dir):
    ws = tmp_path / "ws"
    with client(ws) as c:
        ds = upload(c, "t.jsonl", chat_rows(4)).json()["id"]
        r = c.post("/api/runs", json={"name": "a", "config": tiny_run_config(tiny_model_dir, ds)})
        assert r.status_code == 201
        run = r.json()
        assert run["status"] == "queued" and run["max_steps"] == 6
        job_yaml = Path(run["run_dir"]).parent / "job.yaml"
        assert yaml.safe_load(job_yaml.read_text())["data"]["train"][0].endswith("t.jsonl")
        assert c.delete(f"/api/runs/{run['id']}").status_code == 409
        assert c.delete(f"/api/datasets/{ds}").status_code == 409     # used by a queued run
        assert c.post(f"/api/runs/{run['id']}/resume").status_code == 409
        r = c.post(f"/api/runs/{run['id']}/cancel")
        assert r.json()["status"] == "cancelled" and r.json()["resumable"]
        assert c.post(f"/api/runs/{run['id']}/cancel").status_code == 409
        # metrics written by a run (the last line still being written)
        rd = Path(run["run_dir"])
        rd.mkdir(parents=True)
        (rd / "metrics.jsonl").write_text('{"step": 1, "loss": 2.5}\n{"step": 2, "loss": 2.25}\n'
                                          '{"step": 3, "lo')
        assert [x["step"] for x in c.get(f"/api/runs/{run['id']}/metrics").json()] == [1, 2]
        with c.stream("GET", f"/api/runs/{run['id']}/events") as s:
            assert s.headers["content-type"].startswith("text/event-stream")
            text = "".join(s.iter_text())
        events = [(b.split("\n")[0][len("event: "):], json.loads(b.split("\n")[1][len("data: "):]))
                  for b in text.strip().split("\n\n") if b.startswith("event:")]
        assert [e for e, _ in events] == ["metrics", "status", "end"]
        assert events[0][1] == [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.25}]
        assert events[1][1]["status"] == "cancelled" and events[2][1] == {"status": "cancelled"}
        assert c.get(f"/api/runs/{run['id']}").json()["step"] == 2
        r = c.post(f"/api/runs/{run['id']}/resume")
        assert r.json()["status"] == "queued"
        c.post(f"/api/runs/{run['id']}/cancel")
        assert c.delete(f"/api/runs/{run['id']}").status_code == 204
        assert not rd.parent.exists() and c.get("/api/runs").json() == []
        assert c.get(f"/api/runs/{run['id']}/adapter.zip").status_code == 404


def test_restart_reconcile_stops_its_orphans_and_spares_strangers(tmp_path):
    ws = tmp_path / "ws"
    store = Store(ws / "mindprint.db")
    jobs = {}
    for name in ("orphan", "gone", "stranger"):
        d = ws / "jobs" / name
        d.mkdir(parents=True)
        jobs[name] = store.add_job(id=name, kind="train", name=name, config={}, dir=str(d),
                                   status="running")
    # an orphaned job process: its own session, the job dir on its command line
    orphan = subprocess.Popen([sys.executable, "-c", "import time, sys; time.sleep(120)",
                               jobs["orphan"]["dir"]], start_new_session=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    gone.wait()
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                                start_new_session=True)   # a reused pid: not the job's process
    try:
        store.update_job("orphan", pid=orphan.pid, pgid=orphan.pid)
        store.update_job("gone", pid=gone.pid, pgid=gone.pid)
        store.update_job("stranger", pid=stranger.pid, pgid=stranger.pid)
        runner = JobRunner(store, ws, server_id="new")
        t0 = time.monotonic()
        assert sorted(runner.reconcile()) == ["gone", "orphan", "stranger"]
        assert orphan.wait(timeout=10) == -signal.SIGTERM and time.monotonic() - t0 < 10
        assert stranger.poll() is None                 # left alone
        for name in jobs:
            j = store.get_job(name)
            assert j["status"] == "interrupted" and "server stopped" in j["error"], j
    finally:
        for p in (orphan, stranger):
            if p.poll() is None:
                p.kill()
                p.wait()
        store.close()


# -- real eval and compare jobs ------------------------------------------------------------------
def test_eval_and_compare_jobs_run_the_cli(tmp_path, tiny_adapter):
    ws = tmp_path / "ws"
    with client(ws, start_runner=True, max_concurrent=2) as c:
        chat = upload(c, "held.jsonl", chat_rows(4)).json()["id"]
        prompts = upload(c, "prompts.jsonl", b'{"prompt": "Where are we in the cycle?"}\n').json()["id"]
        # a finished run: its adapter is the tiny fixture adapter
        store = c.app.state.store
        d = ws / "jobs" / "r-00000000000a"
        shutil.copytree(tiny_adapter, d / "run" / "adapter")
        store.add_job(id="r-00000000000a", kind="train", name="done", status="completed",
                      config={"method": "sft", "train": {"max_steps": 1}, "model": {"name": "x"}},
                      dir=str(d))
        assert c.post("/api/evals", json={"run": "r-00000000000a"}).status_code == 422
        assert c.post("/api/evals", json={"run": "r-00000000000a", "chat": ["d-0123456789ab"]}
                      ).status_code == 404
        ev = c.post("/api/evals", json={"run": "r-00000000000a", "chat": [chat]})
        cmp = c.post("/api/compares", json={"runs": ["r-00000000000a"], "prompts": [prompts],
                                            "max_new_tokens": 6})
        assert ev.status_code == 201 and cmp.status_code == 201, (ev.text, cmp.text)
        ev, cmp = ev.json()["id"], cmp.json()["id"]
        done = lambda i: (j := c.get(f"/api/evals/{i}").json())["status"] not in ("queued", "running") and j  # noqa: E731
        for i in (ev, cmp):
            j = wait_for(lambda: done(i), 120, f"job {i}", 0.3)
            assert j["status"] == "completed", (j, c.get(f"/api/evals/{i}/log").text)
        rep = c.get(f"/api/evals/{ev}/report").json()
        assert rep["variants"] == ["base", "tuned"]
        assert rep["summary"]["base"]["perplexity"] != rep["summary"]["tuned"]["perplexity"]
        assert c.get(f"/api/evals/{ev}/report.html").status_code == 200
        assert "Where are we in the cycle?" in c.get(f"/api/evals/{cmp}/compare").text
        listed = {j["id"] for j in c.get("/api/evals", params={"run": "r-00000000000a"}).json()}
        assert listed == {ev, cmp}
        cmpr = c.get("/api/compare", params={"runs": "r-00000000000a"}).json()
        assert cmpr["eval_reports"][0]["summary"]["tuned"]["perplexity"] > 0


def test_job_environment_drops_overrides_and_shares_the_cores(monkeypatch):
    from mindprint.server.jobs import _child_env

    monkeypatch.setenv("MINDPRINT_TRAIN__LR", "1")
    monkeypatch.setenv("MINDPRINT_CACHE", "/c")
    monkeypatch.setenv("MINDPRINT_MALLOC_TUNING", "0")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    one, four = _child_env(1), _child_env(4)
    assert "MINDPRINT_TRAIN__LR" not in one and one["MINDPRINT_CACHE"] == "/c"
    assert one["MINDPRINT_MALLOC_TUNING"] == "0"          # process settings are inherited
    assert "OMP_NUM_THREADS" not in one and four["OMP_NUM_THREADS"] == "2"
    assert _child_env(16)["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")          # the user's choice wins
    assert _child_env(4)["OMP_NUM_THREADS"] == "3"
