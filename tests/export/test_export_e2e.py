"""End to end on the bundled model, on the session's shortened quickstart run (evaluated in
tests/e2e/test_quickstart_e2e.py): the quickstart adapter exported for Ollama as q4_k_m — merged
(verified), quantized with llama.cpp's mix, read back, and its greedy answers still in the
persona's voice. Few prompts and short answers keep it fast; the export is
one merge shared by every check (merge, file, logits, voice)."""

from __future__ import annotations

import json

import pytest

from mindprint.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("quickstart")]   # one quickstart run


@pytest.fixture(scope="module")
def adapter(quickstart_run):
    return quickstart_run[0] / "adapter"


def test_q4_k_m_for_ollama_keeps_the_voice(adapter, tmp_path, capsys):
    out = tmp_path / "ollama"
    assert main(["export", "ollama", "--adapter", str(adapter), "--out", str(out), "--name", "Maren",
                 "--quantizer", "numpy", "--voice-prompts", "3", "--max-new-tokens", "24"]) == 0
    printed = capsys.readouterr().out
    assert f"ollama create maren -f {out / 'Modelfile'}" in printed
    rep = json.loads((out / "export.json").read_text())
    print(json.dumps({"bytes": rep["bytes"], "tensors": rep["written"]["tensors"],
                      "warnings": rep["warnings"]}))
    print(json.dumps({k: v for k, v in rep["verification"]["voice"].items() if k != "answers"}))
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "export.json", "maren.gguf"]
    # one merge, verified on the way (float64 merge, float32 weights)
    assert rep["merge_checks"]["merge"]["max_abs_diff"] <= 1e-4
    assert rep["merge_checks"]["float32"]["top1_agreement"] == 1.0
    # llama.cpp's q4_k_m mix on this model (rows of 576 fall back; see test_quants.py)
    assert rep["written"]["tensors"] == {"F32": 61, "Q4_K": 16, "Q5_0": 166, "Q6_K": 14,
                                         "Q8_0": 15}
    v = rep["verification"]
    assert v["against_rounded_source"]["max_abs_diff"] <= 1e-2      # the file holds the model
    assert v["against_source"]["top1_agreement"] >= 0.8
    # the voice: greedy answers from the dequantized q4_k_m file vs the base model's
    voice = v["voice"]
    assert voice["prompts"] == 3
    # measured on the 20-step quickstart (3 prompts, 24 tokens): file 0.85, adapter 1.00, base
    # 0.001 (on a 40-step adapter 0.996 / 0.867 / 0.002); bounds about half the measured gap
    assert voice["file_voice_match"] - voice["base_voice_match"] >= 0.5, voice
    assert voice["file_voice_match"] >= voice["adapter_voice_match"] - 0.3, voice
    modelfile = (out / "Modelfile").read_text()
    assert "FROM ./maren.gguf" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    from mindprint.export.gguf import load_gguf

    _, tok = load_gguf(out / "maren.gguf")
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
