"""End to end on the bundled model: train the quickstart briefly, evaluate (the tuned model is
closer to the persona's voice than the base), merge (verified), export GGUF (read back, verified).

Shortened to keep the suite fast: few steps, few prompts, short answers.
"""

from __future__ import annotations

import json

import pytest

from conftest import PERSONA
from mindprint.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.wip]
EXAMPLES = PERSONA.parent


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, bundled_model_dir):
    out = tmp_path_factory.mktemp("e2e") / "run"
    rc = main(["train", str(EXAMPLES / "quickstart.yaml"), "--output-dir", str(out),
               "--set", "train.max_steps=40", "--set", "train.eval_every=0",
               "--set", "train.eval_at_start=false", "--set", "train.save_every=0",
               "--set", "data.max_length=128", "--set", "data.eval=[]"])
    assert rc == 0
    return out / "adapter"


def test_tuned_sounds_more_like_the_persona(adapter, capsys):
    out = adapter.parent / "eval"
    rc = main(["eval", "--adapter", str(adapter), "--out", str(out),
               "--prompts", str(PERSONA / "prompts_eval.jsonl"), "--max-prompts", "4",
               "--max-new-tokens", "32", "--chat", str(PERSONA / "persona_eval.jsonl"),
               "--preference", str(PERSONA / "preference_eval.jsonl"), "--max-records", "8"])
    assert rc == 0
    r = json.loads((out / "report.json").read_text())
    base, tuned = r["summary"]["base"], r["summary"]["tuned"]
    print(json.dumps({"base": base, "tuned": tuned}, indent=1))
    assert tuned["voice_fidelity"] > base["voice_fidelity"]
    assert tuned["perplexity"] < base["perplexity"]
    assert tuned["implicit_accuracy"] > 0.5
    assert (out / "report.html").is_file()


def test_merge_then_gguf(adapter, tmp_path):
    merged = tmp_path / "merged"
    assert main(["merge", "--adapter", str(adapter), "--out", str(merged)]) == 0
    checks = json.loads((merged / "mindprint-merge.json").read_text())["checks"]
    assert checks["merge"]["max_abs_diff"] <= 1e-4
    assert checks["float32"]["top1_agreement"] == 1.0
    gguf = tmp_path / "voice-q8_0.gguf"
    assert main(["export", "gguf", "--model", str(merged), "--out", str(gguf), "--dtype", "q8_0"]) == 0
    assert gguf.stat().st_size > 100 * 2**20
    from mindprint.export.gguf import load_gguf

    model, tok = load_gguf(gguf)
    assert "<|im_start|>" in tok.chat_template
