"""What the web UI's UX rests on (issue 22, section 3), through the API: each method's dataset
formats, validation errors keyed by config key, why a run failed and whether resuming can help
(reaped from a real child process), the time estimate's measurements, data files by dataset
name, and the compare report rendered with run names. No model is loaded."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import time
from pathlib import Path

from fastapi.testclient import TestClient

from mindprint.server import jobs as J
from mindprint.server.app import create_app
from mindprint.server.routes.evals import render_compare

from .helpers import wait_for
from .test_hardening import fake_model

BASE = "http://127.0.0.1"

# a few datasets as people export them: varied formats, lengths and wording
SHAREGPT = [{"conversations": [{"from": "human", "value": "Did the ferry run today?"},
                               {"from": "gpt", "value": "Cancelled again. Wind from the north, "
                                                        "so I baked instead."}]},
            {"conversations": [{"from": "human", "value": "What are you reading?"},
                               {"from": "gpt", "value": "A tide table. Don't laugh."},
                               {"from": "human", "value": "Any good?"},
                               {"from": "gpt", "value": "Predictable ending."}]}]
OPENAI_PREF = [{"input": {"messages": [{"role": "user", "content": "Plans for Sunday?"}]},
                "preferred_output": [{"role": "assistant", "content": "Gutters, then the pub."}],
                "non_preferred_output": [{"role": "assistant", "content": "I have no plans."}]}]
KTO = [{"prompt": "Rate the soup.", "completion": "Salty, like the harbour. Seven.", "label": True},
       {"prompt": "Rate the soup.", "completion": "As an AI I cannot taste.", "label": False}]
PROMPTS = [{"prompt": "Describe the lighthouse at dusk."}, {"prompt": "Say hello to the gulls."}]
ALPACA = [{"instruction": "Summarise the week.", "input": "",
           "output": "Storm Monday, calm Thursday, one lost boot."}]


def client(ws: Path, **kw) -> TestClient:
    kw.setdefault("start_runner", False)
    return TestClient(create_app(ws, **kw), base_url=BASE)


def upload(c, name: str, rows: list[dict]) -> dict:
    body = "".join(json.dumps(r) + "\n" for r in rows).encode()
    r = c.post("/api/datasets", files={"file": (name, body)})
    assert r.status_code == 201, r.text
    return r.json()


def test_each_method_lists_the_dataset_formats_it_trains_on(tmp_path):
    with client(tmp_path / "ws") as c:
        ds = {n: upload(c, n, rows) for n, rows in (
            ("harbour.sharegpt.jsonl", SHAREGPT), ("sunday.pref.jsonl", OPENAI_PREF),
            ("soup.kto.jsonl", KTO), ("prompts.jsonl", PROMPTS), ("week.alpaca.jsonl", ALPACA))}
        info = c.get("/api/info").json()["method_info"]
        offered = {n: sorted(m for m, i in info.items() if d["format"] in i["formats"])
                   for n, d in ds.items()}
    chat_methods = ["kl_sft", "sft"]
    assert offered == {"harbour.sharegpt.jsonl": chat_methods, "week.alpaca.jsonl": chat_methods,
                       "sunday.pref.jsonl": ["dpo", "ipo", "kto", "orpo", "simpo"],
                       "soup.kto.jsonl": ["kto"], "prompts.jsonl": ["grpo"]}


def test_validation_errors_name_their_config_keys(tmp_path):
    with client(tmp_path / "ws") as c:
        ds = upload(c, "harbour.jsonl", SHAREGPT)["id"]
        r = c.post("/api/runs", json={"config": {
            "model": fake_model(tmp_path), "data": {"train": [ds, "d-0123456789ab"]},
            "lora": {"r": 0}, "train": {"lr": "fast", "max_stepz": 3}}})
        assert r.status_code == 422
        body = r.json()
        by_key = {f["key"]: f["message"] for f in body["fields"]}
        assert set(by_key) == {"lora.r", "train.lr", "train.max_stepz"}
        assert "did you mean 'train.max_steps'" in by_key["train.max_stepz"]
        assert all(f["message"] in body["detail"] for f in body["fields"])
        # the server's own rules (after the schema passes) are keyed too
        r = c.post("/api/runs", json={"config": {"model": fake_model(tmp_path),
                                                 "data": {"train": ["d-0123456789ab"]}}})
        assert [f["key"] for f in r.json()["fields"]] == ["data.train"]
        # a model the CLI refuses is the model field's problem
        r = c.post("/api/runs", json={"config": {"model": "/etc", "data": {"train": [ds]}}})
        assert r.status_code == 422 and [f["key"] for f in r.json()["fields"]] == ["model.name"]


def _fake_python(tmp_path: Path) -> str:
    """A stand-in for the job's interpreter: prints the job directory's ``say`` file to stderr
    and exits with its ``code`` file (what a failing `mindprint train` would do)."""
    p = tmp_path / "fake-python"
    p.write_text(f"#!{sys.executable}\nimport sys, pathlib\n"
                 "sys.stderr.write(pathlib.Path('say').read_text())\n"
                 "sys.exit(int(pathlib.Path('code').read_text()))\n")
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return str(p)


def test_failed_runs_say_why_and_offer_resume_only_where_it_can_help(tmp_path):
    ws = tmp_path / "ws"
    outcomes = {   # exit code, what the process printed
        "bad data": (2, "error: harbour.jsonl:7: messages[1].content: expected a string, got "
                        "null\n"),
        "nan": (3, "step 3: loss nan\nerror: training stopped at step 3: the loss is NaN; "
                   "lower train.lr\n"),
        "crash": (1, "Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                     "RuntimeError: CUDA driver went away\n"),
    }
    with client(ws) as c:
        ds = upload(c, "harbour.jsonl", SHAREGPT)["id"]
        ids = {}
        for name, (code, say) in outcomes.items():
            run = c.post("/api/runs", json={"name": name, "config": {
                "model": fake_model(tmp_path), "data": {"train": [ds]}}}).json()
            d = ws / "jobs" / run["id"]
            (d / "say").write_text(say)
            (d / "code").write_text(str(code))
            ids[name] = run["id"]
        runner = J.JobRunner(c.app.state.store, ws, server_id="t", max_concurrent=3,
                             python=_fake_python(tmp_path))
        for _ in range(3):
            runner.tick()
        wait_for(lambda: runner.tick() or not runner.running(), 30, "the fake jobs to exit")
        runs = {r["name"]: r for r in c.get("/api/runs").json()}
        assert {n: r["status"] for n, r in runs.items()} == dict.fromkeys(outcomes, "failed")
        f = runs["bad data"]["failure"]
        assert f["kind"] == "config or data error" and not f["resumable"]
        assert f["reason"] == ("harbour.jsonl:7: messages[1].content: expected a string, got "
                               "null")
        assert not runs["bad data"]["resumable"] and not runs["nan"]["resumable"]
        assert runs["nan"]["failure"]["reason"].startswith("training stopped at step 3")
        assert runs["crash"]["resumable"] and runs["crash"]["failure"]["kind"] == "crashed"
        assert runs["crash"]["failure"]["reason"] == "RuntimeError: CUDA driver went away"
        # resuming what would fail the same way is refused, saying what to do instead
        r = c.post(f"/api/runs/{ids['bad data']}/resume")
        assert r.status_code == 409 and "edit the config or the data and retry" in r.text
        assert c.post(f"/api/runs/{ids['crash']}/resume").json()["status"] == "queued"
        # the crashed run may resume and still needs its dataset; the others do not hold it
        assert c.delete(f"/api/datasets/{ds}").status_code == 409
        c.post(f"/api/runs/{ids['crash']}/cancel")
        assert c.delete(f"/api/runs/{ids['crash']}").status_code == 204
        assert c.delete(f"/api/datasets/{ds}").status_code == 204


def test_time_estimate_data_from_finished_runs_or_a_stated_default(tmp_path):
    ws = tmp_path / "ws"
    with client(ws) as c:
        default = c.get("/api/speed").json()
        assert default["groups"] == [] and default["default"]["tokens_per_s"] > 0
        assert "default" in default["default"]["source"]
        ds = upload(c, "harbour.jsonl", SHAREGPT)["id"]
        store = c.app.state.store
        for steps, batch, length, wall in ((10, 2, 64, 8.0), (30, 4, 128, 100.0), (20, 1, 64, 9.0)):
            run = c.post("/api/runs", json={"config": {
                "model": fake_model(tmp_path), "data": {"train": [ds], "max_length": length},
                "train": {"max_steps": steps, "batch_size": batch, "grad_accum": 1}}}).json()
            rd = ws / "jobs" / run["id"] / "run"
            rd.mkdir()
            stopped = steps if steps != 20 else 7          # stopped early: not a measurement
            (rd / "summary.json").write_text(json.dumps({"steps": stopped, "wall_s": wall}))
            t0 = time.time()
            store.update_job(run["id"], status="completed", started_at=t0, ended_at=t0 + wall + 5)
        speed = c.get("/api/speed").json()
    (g,) = speed["groups"]
    assert speed["skipped"] == 1 and g["runs"] == 2 and g["method"] == "sft"
    assert g["budget_tokens"] == 10 * 2 * 64 + 30 * 4 * 128
    assert abs(g["train_s"] - 108.0) < 1e-9 and abs(g["overhead_s"] - 10.0) < 0.01


def test_a_run_shows_its_data_by_dataset_name_and_what_it_trained_on(tmp_path):
    ws = tmp_path / "ws"
    with client(ws) as c:
        train = upload(c, "sunday.pref.jsonl", OPENAI_PREF)
        held = upload(c, "soup.kto.jsonl", KTO)
        run = c.post("/api/runs", json={"config": {
            "method": "kto", "model": fake_model(tmp_path),
            "data": {"train": [train["id"]], "eval": [held["id"]]}}}).json()
        got = c.get(f"/api/runs/{run['id']}").json()
        assert got["trained_on"] == []                            # not started yet
        refs = got["datasets"]
        path = refs["data.train"][0]["path"]
        assert refs["data.train"] == [{"path": path, "id": train["id"], "name": train["name"]}]
        assert refs["data.eval"][0]["name"] == "soup.kto.jsonl" and refs["eval.prompts"] == []
        # the manifest the run writes names the files it read, with their hashes
        sha = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        rd = ws / "jobs" / run["id"] / "run"
        rd.mkdir()
        (rd / "manifest.json").write_text(json.dumps({"data": {
            "files": [{"role": "train", "index": 0, "path": path, "sha256": sha}],
            "tokenized": {"train_examples": 1}}}))
        (got,) = [c.get(f"/api/runs/{run['id']}").json()["trained_on"]]
        assert got == [{"role": "train", "path": path, "sha256": sha, "id": train["id"],
                        "name": "sunday.pref.jsonl", "examples": 1}]
        os.remove(path)                           # a dataset gone since: the path stays, no name
        c.app.state.store.delete_dataset(train["id"])
        refs = c.get(f"/api/runs/{run['id']}").json()["datasets"]
        assert refs["data.train"] == [{"path": path, "id": None, "name": None}]


def _compare_files(d: Path, adapters: dict[str, str]) -> None:
    """compare.json and compare.md as `mindprint compare` writes them (labels from the adapter
    directories: every run's is ``run``, so ``run``, ``run-2``; ``<br>`` for a line break and
    ``\\|`` for a pipe inside a cell)."""
    rows = [("How was the crossing?", {"base": "It was fine.",
                                       "run": "Rough. I ran to the rail twice.\nNever again.",
                                       "run-2": "Smooth | glassy <script>alert(1)</script>"}),
            ("Best [chowder](javascript:alert(1))?", {"base": "Any.", "run": "Mine.",
                                                      "run-2": "**Hers**, sadly."})]
    md = ["# Mindprint compare", "", "base model /m/tiny; adapters: " + ", ".join(
        f"{lab} ({p})" for lab, p in adapters.items()) + "; greedy decoding, up to 32 new tokens",
          "", "voice_match (mean P the answer is the person's): base 0.100, run 0.900, run-2 "
          "0.700; verifier held-out AUC 0.950.", ""]
    for i, (prompt, ans) in enumerate(rows, 1):
        cells = [a.replace("|", "\\|").replace("\n", "<br>") for a in ans.values()]
        md += [f"## {i}. {prompt}", "", "| " + " | ".join(ans) + " |", "|---|---|---|",
               "| " + " | ".join(cells) + " |", ""]
    d.mkdir(parents=True)
    (d / "compare.md").write_text("\n".join(md), encoding="utf-8")
    (d / "compare.json").write_text(json.dumps({"adapters": adapters, "rows": []}))


def test_compare_report_is_rendered_with_run_names_and_escaped(tmp_path):
    ws = tmp_path / "ws"
    with client(ws) as c:
        store = c.app.state.store
        runs = []
        for name in ("gentle lr", "<b>hot</b> lr"):
            ds = upload(c, f"{len(runs)}.jsonl", SHAREGPT)["id"]
            runs.append(c.post("/api/runs", json={"name": name, "config": {
                "model": fake_model(tmp_path), "data": {"train": [ds]}}}).json()["id"])
        adapters = {lab: str(ws / "jobs" / r / "run" / "adapter")
                    for lab, r in zip(("run", "run-2"), runs)}
        job_id = "c-00000000000a"
        store.add_job(id=job_id, kind="compare", name="compare", status="completed",
                      config={"adapters": list(adapters.values()), "runs": runs, "prompts": []},
                      dir=str(ws / "jobs" / job_id))
        _compare_files(ws / "jobs" / job_id / "compare", adapters)
        view = c.get(f"/api/evals/{job_id}/compare/view").json()
    html = view["html"]
    assert view["names"] == {"run": "gentle lr", "run-2": "<b>hot</b> lr"}
    assert "<th>gentle lr</th>" in html and "<th>&lt;b&gt;hot&lt;/b&gt; lr</th>" in html
    assert "<th>run</th>" not in html and "run-2" not in html
    assert "gentle lr 0.900, &lt;b&gt;hot&lt;/b&gt; lr 0.700" in html      # the voice line
    assert str(ws) not in html                                # adapters by name, not path
    assert "Rough. I ran to the rail twice.<br />\nNever again." in html   # answers untouched
    assert "Smooth | glassy &lt;script&gt;" in html and "<script>" not in html
    assert "<strong>Hers</strong>" in html and "javascript:" not in html.replace(
        "[chowder](javascript:alert(1))", "")
    assert html.count("<table>") == 2 and "<h2>1. How was the crossing?</h2>" in html


def test_render_compare_without_names_leaves_the_labels():
    md = "# Mindprint compare\n\n## 1. Hi\n\n| base | run |\n|---|---|\n| a | b<br>c |\n"
    html = render_compare(md, {})
    assert "<th>run</th>" in html and "b<br />\nc" in html
