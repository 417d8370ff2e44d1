"""``mindprint export mlx`` on the tiny model: the fused folder loads in mlx-lm and gives the torch
adapter model's logits (float32: to rounding; 4-bit: the stored groups exactly, the adapter
model approximately); the report; refusals that write nothing; the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import PERSONA

from mindprint.errors import MindprintError, ModelError
from mindprint.export import cli as XC
from mindprint.export import mlx as XM
from mindprint.export.merge import VerificationError
from mindprint.export.probes import compare_logits, probe_batch, probe_logits

mx = pytest.importorskip("mlx.core")


def _adapter_logits(tiny_model_dir, tiny_adapter, batch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return probe_logits(PeftModel.from_pretrained(base, tiny_adapter), batch)


@pytest.fixture(scope="module")
def f32_folder(tiny_adapter, tmp_path_factory):
    out = tmp_path_factory.mktemp("mlx") / "tiny-mlx"
    info = XM.export_mlx(tiny_adapter, str(out), dtype="float32",
                         prompts=[str(PERSONA / "persona_eval.jsonl")],
                         person=[str(PERSONA / "persona_train.jsonl")], max_prompts=2,
                         max_new_tokens=6)
    return out, info


def test_fused_float32_folder_is_the_adapter_model(f32_folder, tiny_adapter, tiny_model_dir,
                                                   tokenizer):
    from mlx_lm import load

    out, info = f32_folder
    # what mlx_lm.convert writes, plus the report
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "export.json"} <= names
    assert not [n for n in names if n.startswith(".")]
    cfg = json.loads((out / "config.json").read_text())
    assert "quantization" not in cfg and cfg["rope_theta"] > 0
    rep = json.loads((out / "export.json").read_text())
    assert rep["bytes"] == info["bytes"] > 0 and rep["warnings"] == info["warnings"] == []
    v = rep["verification"]
    assert v["against_rounded_source"]["max_abs_diff"] <= 1e-3
    assert v["against_source"]["top1_agreement"] == 1.0
    assert v["voice"]["prompts"] == 2 and len(v["voice"]["answers"]) == 2
    # independently: mlx_lm.load's model gives the PEFT adapter model's logits (no merge, no
    # mindprint code on the mlx side)
    model, wrapper = load(str(out))
    batch = probe_batch(tokenizer)
    got = XM.mlx_probe_logits(model, batch)
    want = _adapter_logits(tiny_model_dir, tiny_adapter, batch)
    cmp = compare_logits(got, want, batch)
    assert cmp["max_abs_diff"] <= 1e-3 and cmp["top1_agreement"] == 1.0
    # the adapter moved the logits (so agreeing with it is not agreeing with the base)
    from transformers import AutoModelForCausalLM

    base = probe_logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir), batch)
    assert compare_logits(got, base, batch)["max_abs_diff"] > 100 * cmp["max_abs_diff"]
    assert wrapper.chat_template == tokenizer.chat_template
    assert tokenizer.eos_token_id in wrapper.eos_token_ids


def test_fused_4bit_folder(tiny_adapter, f32_folder, tmp_path):
    out = tmp_path / "q4"
    info = XM.export_mlx(tiny_adapter, str(out), quantize=4, group_size=32, max_prompts=0)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["quantization"]["bits"] == 4 and cfg["quantization"]["group_size"] == 32
    v = info["verification"]
    # the folder holds exactly the dequantized groups; quantization itself moves the logits
    assert v["against_rounded_source"]["max_abs_diff"] <= 1e-3
    assert v["against_source"]["max_abs_diff"] > 10 * v["against_rounded_source"]["max_abs_diff"]
    assert v["voice"]["skipped"] == "voice check off (--voice-prompts 0)"
    assert info["label"] == "4-bit (group 32, bfloat16 scales)"
    # 7 matrices a block and the tied embedding; none left out
    assert v["layers"] == {"quantized": 2 * 7 + 1, "kept_full_precision": []}
    # 4-bit + scales/biases per 32 weights: ~5 bits a weight against float32's 32
    assert info["bytes"] < 0.45 * f32_folder[1]["bytes"]
    # every matrix of the blocks is quantized in the written file
    from mlx_lm import load

    model, _ = load(str(out))
    w = XM.stored_weights(model)
    q = model.model.layers[0].self_attn.q_proj
    assert q.bits == 4 and q.group_size == 32
    # a group's 32 weights take at most 16 distinct values
    row = w["model.layers.0.self_attn.q_proj.weight"][0, :32]
    assert len(np.unique(row)) <= 16


def test_strict_refuses_and_writes_nothing(tiny_adapter, tmp_path, monkeypatch):
    monkeypatch.setitem(XM.MIN_TOP1, 2, 1.01)
    with pytest.raises(VerificationError, match="--strict: 2-bit .*top-1 agreement"):
        XM.export_mlx(tiny_adapter, str(tmp_path / "out"), quantize=2, strict=True,
                      max_prompts=0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kw, match, err", [
    (dict(quantize=7), "--quantize 7", MindprintError),
    (dict(dtype="int8"), "--dtype int8", MindprintError),
    (dict(group_size=48), "--group-size 48", MindprintError),
    (dict(model="no-such-model"), "unknown model 'no-such-model'", ModelError),
])
def test_bad_options_refused_before_writing(tiny_adapter, tmp_path, kw, match, err):
    with pytest.raises(err, match=match):
        XM.export_mlx(tiny_adapter, str(tmp_path / "out"), max_prompts=0, **kw)
    assert list(tmp_path.iterdir()) == []


def test_existing_folder_needs_overwrite(f32_folder, tiny_adapter):
    with pytest.raises(MindprintError, match="already exists; pass --overwrite"):
        XM.export_mlx(tiny_adapter, str(f32_folder[0]))


def test_cli_choices_match_module():
    assert XC.MLX_BITS == XM.BITS


def test_cli_export_mlx(tiny_adapter, tmp_path, capsys):
    from mindprint.cli import main

    out = tmp_path / "cli-mlx"
    # groups of 128: the rows of 64 (attention, embedding) cannot be grouped; mlx-lm keeps them in
    # full precision, and the command says which
    rc = main(["export", "mlx", "--adapter", tiny_adapter, "--out", str(out), "--quantize", "8",
               "--group-size", "128", "--voice-prompts", "0"])
    text = capsys.readouterr().out
    assert rc == 0 and "8-bit (group 128, bfloat16 scales)" in text
    rep = json.loads((out / "export.json").read_text())
    lay = rep["verification"]["layers"]
    # per block: gate/up/down read rows of 64, 64, 128 -> only down_proj (rows of 128) groups
    assert lay["quantized"] == 2
    assert "model.layers.1.self_attn.q_proj" in lay["kept_full_precision"]
    assert "note: 13 matrices kept in full precision" in text
    assert "verified: the folder reproduces the model" in text and "voice check off" in text
    assert json.loads((out / "export.json").read_text())["quantize"] == 8


def test_python_api_mlx_fused(tiny_adapter, tmp_path):
    import mindprint

    info = mindprint.export(tiny_adapter, tmp_path / "api-mlx", to="mlx-fused", quantize=4,
                            group_size=32, log=None)
    assert info["to"] == "mlx-fused" and info["quantize"] == 4
    assert (tmp_path / "api-mlx" / "export.json").is_file()
    # quantize names mlx bits; the other targets refuse it rather than ignore it
    with pytest.raises(MindprintError, match="quantize applies to 'mlx-fused'"):
        mindprint.export(tiny_adapter, tmp_path / "x.gguf", to="gguf", quantize=4, log=None)
    with pytest.raises(MindprintError, match="quantize do not apply"):
        mindprint.export(tiny_adapter, tmp_path / "peft", to="peft", quantize=4, log=None)
