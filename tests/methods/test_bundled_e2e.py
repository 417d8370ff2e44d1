"""End to end on the bundled SmolLM2-135M: a few steps of each preference method on a slice of
the persona pairs must move held-out preference accuracy the right way. Slow (CPU minutes)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from conftest import PERSONA, write_jsonl
from mindprint import config as C
from mindprint.training import run_training

pytestmark = pytest.mark.slow


def _slice(src, dst, n):
    rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()][:n]
    return str(write_jsonl(dst, rows))


@pytest.fixture
def persona_slice(tmp_path, monkeypatch):
    monkeypatch.setenv("MINDPRINT_CACHE", str(tmp_path / "cache"))   # a cold reference cache
    return (_slice(PERSONA / "preference_train.jsonl", tmp_path / "train.jsonl", 12),
            _slice(PERSONA / "preference_eval.jsonl", tmp_path / "eval.jsonl", 6),
            _slice(PERSONA / "kto_train.jsonl", tmp_path / "kto.jsonl", 24))


def _raw(method, model_dir, train, ev, out, steps):
    return {"method": method, "model": model_dir,
            "data": {"train": train, "eval": ev, "max_length": 160},
            "train": {"max_steps": steps, "batch_size": 2, "lr": 1e-3, "warmup_steps": 0,
                      "schedule": "constant", "eval_every": 0, "save_every": 0, "seed": 0},
            "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "targets": "attn_mlp"},
            "output_dir": out}


def test_dpo_end_to_end_with_cli_and_cached_reference(bundled_model_dir, persona_slice, tmp_path):
    train, ev, _ = persona_slice
    cfg = tmp_path / "dpo.yaml"
    cfg.write_text(yaml.safe_dump(_raw("dpo", bundled_model_dir, train, ev, str(tmp_path / "run"), 6)))
    cli = [sys.executable, "-m", "mindprint.cli", "train", str(cfg)]
    r = subprocess.run(cli, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("computed in") == 2 and "loaded from cache" not in r.stderr
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    ev_m = s["final_eval_metrics"]
    assert s["final_eval_loss"] < s["first_eval_loss"]
    assert ev_m["eval_pref_accuracy"] >= 0.8 and ev_m["eval_rewards/margin"] > 0
    for k in ("rewards/chosen", "rewards/rejected", "rewards/margin", "rewards/accuracy",
              "nll/chosen", "logps/chosen", "logps/rejected"):
        assert k in s["final_train_metrics"]
    # a rerun reuses the cached reference log-probs instead of recomputing them
    r2 = subprocess.run(cli + ["--overwrite", "--set", "train.max_steps=1"], capture_output=True,
                        text=True, timeout=900)
    assert r2.returncode == 0, r2.stderr
    assert r2.stderr.count("loaded from cache") == 2 and "computed in" not in r2.stderr


@pytest.mark.parametrize("method", ["ipo", "orpo", "simpo", "kto"])
def test_other_methods_move_the_right_way(method, bundled_model_dir, persona_slice, tmp_path):
    train, ev, kto = persona_slice
    raw = _raw(method, bundled_model_dir, kto if method == "kto" else train, ev,
               str(tmp_path / "run"), 4)
    raw["dpo"] = {"beta": 0.5}
    s = run_training(C.from_dict(raw), log=lambda _: None)
    assert s["final_eval_loss"] < s["first_eval_loss"]
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in rows if "eval_loss" in x]
    assert evals[-1]["eval_rewards/margin"] > evals[0]["eval_rewards/margin"]
