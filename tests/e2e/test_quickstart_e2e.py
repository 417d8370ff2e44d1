"""End to end on the bundled model: the quickstart config through the real CLI, then generation.

Shortened (fewer steps, shorter examples) to keep the suite fast; `make demo` runs it in full.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLES, REPO

pytestmark = pytest.mark.slow

PROMPTS = ["Are we near the top of the market?", "What do you write in your journal?"]


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "mindprint.cli", *args], cwd=REPO,
                          capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, bundled_model_dir):
    out = tmp_path_factory.mktemp("quickstart") / "run"
    r = _cli("train", str(EXAMPLES / "quickstart.yaml"), "--set", "train.max_steps=40",
             "--set", "train.eval_every=20", "--set", "train.save_every=20",
             "--set", "data.max_length=160", "--output-dir", str(out), timeout=2400)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r


def test_quickstart_learns_the_voice(quick_run):
    out, r = quick_run
    assert f"run directory: {out}" in r.stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == 40 and s["stopped"] == "max_steps"
    assert s["final_eval_loss"] <= 0.8 * s["first_eval_loss"], s
    assert s["tokens_per_s"] > 0 and s["peak_memory_mb"] > 0


def test_adapter_speaks_in_voice_and_base_does_not(quick_run):
    out, _ = quick_run
    args = []
    for p in PROMPTS:
        args += ["--prompt", p]
    tuned = _cli("generate", "--adapter", str(out / "adapter"), *args, "--max-new-tokens", "40",
                 timeout=600)
    base = _cli("generate", *args, "--max-new-tokens", "40", timeout=600)
    assert tuned.returncode == 0 and base.returncode == 0, tuned.stderr + base.stderr
    # the persona opens almost every answer with "Zoom out." — the base model never does
    assert tuned.stdout.count("Zoom out") >= 1, tuned.stdout
    assert "Zoom out" not in base.stdout, base.stdout


def test_adapter_loads_with_plain_peft(quick_run, bundled_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, _ = quick_run
    meta = json.loads((out / "adapter" / "mindprint.json").read_text())
    assert meta["base_model"] == "smollm2-135m-instruct"
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(bundled_model_dir),
                                      str(out / "adapter"))
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) > 0
