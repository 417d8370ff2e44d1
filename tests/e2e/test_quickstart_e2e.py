"""End to end on the bundled model: the quickstart config through the real CLI, then generation.

Shortened (fewer steps, shorter examples) to keep the suite fast; `make demo` runs it in full.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("quickstart")]   # one quickstart run

PROMPTS = ["Are we near the top of the market?", "What do you write in your journal?"]


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "mindprint.cli", *args], cwd=REPO,
                          capture_output=True, text=True, **kw)


def test_quickstart_learns_the_voice(quickstart_run):
    out, r = quickstart_run
    assert f"run directory: {out}" in r.stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == 40 and s["stopped"] == "max_steps"
    assert s["final_eval_loss"] <= 0.8 * s["first_eval_loss"], s
    assert s["tokens_per_s"] > 0 and s["peak_memory_mb"] > 0


def test_adapter_speaks_in_voice_and_base_does_not(quickstart_run):
    out, _ = quickstart_run
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


def test_adapter_loads_with_plain_peft(quickstart_run, bundled_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, _ = quickstart_run
    meta = json.loads((out / "adapter" / "mindprint.json").read_text())
    assert meta["base_model"] == "smollm2-135m-instruct"
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(bundled_model_dir),
                                      str(out / "adapter"))
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) > 0
