"""The web service end to end on the bundled model (SmolLM2-135M-Instruct from the GGUF package):
upload the bundled persona data, start a run with no model named (the default is the bundled
model), watch it complete over the event stream, download the adapter, and evaluate it — voice
fidelity against the held-out answers included. Kept short: 4 steps of 96-token rows, six held-out records."""

from __future__ import annotations

import io
import json
import zipfile

from .helpers import wait_for
from .test_api import client, upload
from conftest import PERSONA


def test_bundled_model_run_and_eval_through_the_service(tmp_path, bundled_model_dir):
    ws = tmp_path / "ws"
    with client(ws, start_runner=True) as c:
        train = upload(c, "persona_train.jsonl", (PERSONA / "persona_train.jsonl").read_bytes())
        held_rows = (PERSONA / "persona_eval.jsonl").read_bytes().splitlines(keepends=True)[:6]
        held = upload(c, "persona_eval.jsonl", b"".join(held_rows))
        assert train.status_code == 201 and held.status_code == 201, (train.text, held.text)
        assert train.json()["report"]["invalid"] == 0
        train, held = train.json()["id"], held.json()["id"]
        cfg = {"method": "sft",                      # no model: the bundled default
               "data": {"train": [train], "eval": [held], "max_length": 96},
               "train": {"max_steps": 4, "batch_size": 2, "lr": 2e-4, "eval_every": 4,
                         "save_every": 2, "eval_at_start": False, "num_threads": 1,
                         "eval_batch_size": 4},
               "lora": {"r": 8, "alpha": 16}}
        r = c.post("/api/runs", json={"name": "bundled", "config": cfg})
        assert r.status_code == 201, r.text
        run = r.json()["id"]
        done = lambda: (j := c.get(f"/api/runs/{run}").json())["status"] not in ("queued", "running") and j  # noqa: E731
        j = wait_for(done, 600, f"run {run}", 0.5)
        assert j["status"] == "completed", (j, c.get(f"/api/runs/{run}/log").text)
        assert j["step"] == 4 and j["has_adapter"]

        # the event stream of a finished run: every metrics row, then the final status
        with c.stream("GET", f"/api/runs/{run}/events") as s:
            text = "".join(s.iter_text())
        rows = [r for b in text.strip().split("\n\n") if b.startswith("event: metrics")
                for r in json.loads(b.split("\n")[1][len("data: "):])]
        losses = [r["loss"] for r in rows if "loss" in r]
        assert len(losses) == 4 and all(0 < x < 20 for x in losses), rows
        assert any("eval_loss" in r for r in rows), rows

        z = zipfile.ZipFile(io.BytesIO(c.get(f"/api/runs/{run}/adapter.zip").content))
        names = set(z.namelist())
        assert {"adapter_config.json", "adapter_model.safetensors"} <= {n.split("/")[-1] for n in names}
        assert json.loads(z.read(next(n for n in names if n.endswith("adapter_config.json"))))["r"] == 8

        ev = c.post("/api/evals", json={"run": run, "prompts": [held], "chat": [held],
                                        "max_prompts": 2, "max_records": 3,
                                        "max_new_tokens": 12})
        assert ev.status_code == 201, ev.text
        ev = ev.json()["id"]
        e = wait_for(lambda: (x := c.get(f"/api/evals/{ev}").json())["status"]
                     not in ("queued", "running") and x, 300, f"eval {ev}", 0.5)
        assert e["status"] == "completed", (e, c.get(f"/api/evals/{ev}/log").text)
        rep = c.get(f"/api/evals/{ev}/report").json()
        assert rep["variants"] == ["base", "tuned"] and rep["data"]["n_prompts"] == 2
        for v in ("base", "tuned"):
            s = rep["summary"][v]
            assert -1 <= s["content_similarity"] <= 1 and 1 < s["perplexity"] < 1e4, s
        # real answers from the bundled model, not empty strings
        assert all(row["answers"]["tuned"]["text"].strip() for row in rep["voice"])
