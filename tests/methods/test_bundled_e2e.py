"""End to end on the bundled SmolLM2-135M: three steps of each preference method on a slice of the
persona pairs must improve the method's loss on HELD-OUT pairs (preference_eval.jsonl) by a
margin measured at a fixed seed, and negative controls must fail that same check. Slow (CPU).

The check (:func:`improved`): held-out eval loss falls by at least ``NEED[method]`` = 70 % of the
fall measured for this exact configuration (seed 0), and the held-out reward margin rises.
Measured 2026-12-02 (torch 2.13 CPU), held-out eval loss step 0 → 3 [reward margin]:
DPO 0.6931 → 0.0001 [0 → 11.1], IPO 1.000 → 0.336 [0 → 13.9], ORPO 4.967 → 4.664
[-0.210 → -0.176], SimPO 4.717 → 3.886 [-4.20 → -3.35], KTO 0.500 → 0.292 [0 → 1.81].
Training is deterministic at a seed up to float summation order (threads), far inside the 30 %
slack; a run that learns half as well fails.

Negative controls, each asserted to FAIL the check:

* zero learning rate (every method, no extra training): with lr 0 the LoRA B factors stay at
  their zero init, so the model is the base model and its held-out metrics are exactly the
  step-0 eval of the same run (evaluated before any update). The step-0 loss is checked against
  its closed form where one exists (DPO −log σ(0) = ln 2; IPO (0 − 1/(2β))² = 1;
  KTO 1 − σ(0) = ½), so "step 0 is the base model" is verified, not assumed.
* swapped pairs (DPO): the same run on the training pairs with chosen and rejected
  exchanged learns the opposite preference: measured held-out loss 0.693 → 19.0, reward
  margin 0 → −19.0.

Cheap by construction (the file took 214 s before this check, 160 s with it, one thread): each
training pair or KTO row seen once (3 steps × batch 2), 4 held-out pairs; the DPO run goes through
the CLI, everything else (the reference-cache rerun, the control, the other methods) in-process.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import yaml

from conftest import PERSONA, write_jsonl
from mindprint import config as C
from mindprint.training import run_training

pytestmark = pytest.mark.slow

STEPS = 3
# the held-out eval-loss fall measured at seed 0 with this file's settings (module docstring);
# the check asks for 70 % of it
MEASURED = {"dpo": 0.6931, "ipo": 0.6643, "orpo": 0.3029, "simpo": 0.8311, "kto": 0.2084}
NEED = {m: 0.7 * d for m, d in MEASURED.items()}
BETA = 0.5
BASE_LOSS = {"dpo": math.log(2.0), "ipo": (1 / (2 * BETA)) ** 2, "kto": 0.5}


def _rows(src, n):
    return [json.loads(line) for line in src.read_text().splitlines() if line.strip()][:n]


@pytest.fixture
def persona_slice(tmp_path, monkeypatch):
    monkeypatch.setenv("MINDPRINT_CACHE", str(tmp_path / "cache"))   # a cold reference cache
    # each training pair / KTO row seen once (steps × batch 2); 4 held-out pairs
    n = 2 * STEPS
    return (str(write_jsonl(tmp_path / "train.jsonl", _rows(PERSONA / "preference_train.jsonl", n))),
            str(write_jsonl(tmp_path / "eval.jsonl", _rows(PERSONA / "preference_eval.jsonl", 4))),
            str(write_jsonl(tmp_path / "kto.jsonl", _rows(PERSONA / "kto_train.jsonl", n))))


def _raw(method, model_dir, train, ev, out, steps=STEPS):
    return {"method": method, "model": model_dir,
            "data": {"train": train, "eval": ev, "max_length": 160},
            "train": {"max_steps": steps, "batch_size": 2, "lr": 1e-3, "warmup_steps": 0,
                      "schedule": "constant", "eval_every": 0, "save_every": 0, "seed": 0},
            "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "targets": "attn_mlp"},
            "dpo": {"beta": BETA}, "output_dir": out}


def _evals(run_dir) -> list[dict]:
    """The held-out eval rows of a run (with eval_at_start: step 0, the base model, first)."""
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in rows if "eval_loss" in x]
    assert evals[-1]["step"] == STEPS, evals
    return evals


def improved(method: str, first: dict, last: dict) -> bool:
    """The check every method's run must pass and every negative control must fail."""
    fell = first["eval_loss"] - last["eval_loss"] >= NEED[method]
    if "eval_rewards/margin" in first:
        fell = fell and last["eval_rewards/margin"] > first["eval_rewards/margin"]
    return fell


def _check_run_and_zero_lr_control(method, first, last):
    if method in BASE_LOSS:      # step 0 is the base model: policy = reference
        assert first["eval_loss"] == pytest.approx(BASE_LOSS[method], abs=1e-5), first
    assert improved(method, first, last), (method, first, last, NEED[method])
    # zero-LR control: its model is the base, its metrics the step-0 eval: the check must fail
    assert not improved(method, first, first)


def test_dpo_end_to_end_with_cli_and_cached_reference(bundled_model_dir, persona_slice, tmp_path):
    train, ev, _ = persona_slice
    cfg = tmp_path / "dpo.yaml"
    cfg.write_text(yaml.safe_dump(_raw("dpo", bundled_model_dir, train, ev, str(tmp_path / "run"))))
    cli = [sys.executable, "-m", "mindprint.cli", "train", str(cfg)]
    r = subprocess.run(cli, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("computed in") == 2 and "loaded from cache" not in r.stderr
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    for k in ("rewards/chosen", "rewards/rejected", "rewards/margin", "rewards/accuracy",
              "nll/chosen", "logps/chosen", "logps/rejected"):
        assert k in s["final_train_metrics"]
    first, last = _evals(tmp_path / "run")
    assert first["step"] == 0
    assert (s["first_eval_loss"], s["final_eval_loss"]) == (first["eval_loss"], last["eval_loss"])
    _check_run_and_zero_lr_control("dpo", first, last)
    assert last["eval_pref_accuracy"] >= first["eval_pref_accuracy"]
    # a second run on the same data (in-process: no second interpreter start) reuses the cached
    # reference log-probs instead of recomputing them
    raw = _raw("dpo", bundled_model_dir, train, ev, str(tmp_path / "rerun"), steps=1)
    raw["train"]["eval_at_start"] = False
    msgs: list[str] = []
    run_training(C.from_dict(raw), log=msgs.append)
    text = "\n".join(msgs)
    assert text.count("loaded from cache") == 2 and "computed in" not in text, text


def test_dpo_on_swapped_pairs_fails_the_check(bundled_model_dir, persona_slice, tmp_path):
    """Negative control: chosen and rejected exchanged in the training pairs (held-out pairs as
    they are) — the run learns the opposite preference and must fail :func:`improved`. Its step-0
    eval is not run: at step 0 the policy is the reference, so its metrics are known exactly
    (loss ln 2, reward margin 0; checked on the real run above)."""
    train, ev, _ = persona_slice
    rows = [json.loads(x) for x in open(train, encoding="utf-8")]
    swapped = write_jsonl(tmp_path / "swapped.jsonl",
                          [{**r, "chosen": r["rejected"], "rejected": r["chosen"]} for r in rows])
    raw = _raw("dpo", bundled_model_dir, str(swapped), ev, str(tmp_path / "run"))
    raw["train"]["eval_at_start"] = False
    run_training(C.from_dict(raw), log=lambda _: None)
    (last,) = _evals(tmp_path / "run")
    base = {"eval_loss": BASE_LOSS["dpo"], "eval_rewards/margin": 0.0}
    assert last["eval_loss"] > base["eval_loss"]             # it learned the wrong way round
    assert not improved("dpo", base, last)


@pytest.mark.parametrize("method", ["ipo", "orpo", "simpo", "kto"])
def test_other_methods_improve_held_out_loss(method, bundled_model_dir, persona_slice, tmp_path):
    train, ev, kto = persona_slice
    raw = _raw(method, bundled_model_dir, kto if method == "kto" else train, ev,
               str(tmp_path / "run"))
    s = run_training(C.from_dict(raw), log=lambda _: None)
    first, last = _evals(tmp_path / "run")
    assert first["step"] == 0
    assert (s["first_eval_loss"], s["final_eval_loss"]) == (first["eval_loss"], last["eval_loss"])
    _check_run_and_zero_lr_control(method, first, last)
