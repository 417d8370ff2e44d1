"""End to end on the bundled model, on the session's shortened quickstart run: evaluate (the tuned
model is closer to the persona's voice than the base), merge (verified), export GGUF (read back,
verified). Few prompts and short answers keep it fast.
"""

from __future__ import annotations

import json

import pytest

from conftest import PERSONA
from mindprint.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("quickstart")]   # one quickstart run


@pytest.fixture(scope="module")
def adapter(quickstart_run):
    return quickstart_run[0] / "adapter"


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
    assert tuned["content_similarity"] > base["content_similarity"]
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
