"""mindprint merge on the tiny model: merged equals unmerged, refusals leave nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import make_adapter
from mindprint.cli import main
from mindprint.errors import ModelError
from mindprint.export import merge as M
from mindprint.export.probes import compare_logits, probe_batch, probe_logits


def _adapter_logits(base_dir, adapter, batch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter)
    return probe_logits(model, batch)


@pytest.fixture(scope="module")
def merged(tiny_adapter, tmp_path_factory):
    out = tmp_path_factory.mktemp("merge") / "merged"
    info = M.merge(tiny_adapter, str(out))
    return out, info


def test_merged_checkpoint_equals_adapter_model(merged, tiny_adapter, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, info = merged
    for name in ("model.safetensors", "config.json", "tokenizer.json", "mindprint-merge.json"):
        assert (out / name).is_file(), name
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    # an independent check, in plain float32: the merged checkpoint reproduces the adapter model
    batch = probe_batch(tok)
    want = _adapter_logits(tiny_model_dir, tiny_adapter, batch)
    got = probe_logits(AutoModelForCausalLM.from_pretrained(out), batch)
    assert compare_logits(got, want, batch)["max_abs_diff"] <= 1e-4
    # ... and the adapter matters (otherwise the equality above proves nothing)
    base = probe_logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir), batch)
    assert compare_logits(base, want, batch)["max_abs_diff"] > 0.1
    meta = json.loads((out / "mindprint-merge.json").read_text())
    assert meta["checks"]["merge"]["max_abs_diff"] <= 1e-4
    assert meta["checks"]["reloaded"]["max_abs_diff"] <= 1e-4
    assert meta["checks"]["merge"]["probe_tokens"] > 100
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"


def _no_leftovers(parent: Path, name: str):
    assert not (parent / name).exists()
    assert not [p for p in parent.iterdir() if p.name.startswith(f".{name}")], list(parent.iterdir())


def test_corrupted_merge_is_refused(tiny_adapter, tmp_path, monkeypatch):
    real = M._merge

    def corrupted(pm):       # a merge that gets one weight slightly wrong
        model = real(pm)
        with torch.no_grad():
            model.model.layers[1].mlp.down_proj.weight[0, :4] += 1e-2
        return model

    monkeypatch.setattr(M, "_merge", corrupted)
    with pytest.raises(M.VerificationError, match="merge verification failed"):
        M.merge(tiny_adapter, str(tmp_path / "out"))
    _no_leftovers(tmp_path, "out")


def test_quantised_base_needs_dequantize(tiny_adapter, tiny_model_dir, tmp_path):
    import shutil

    qdir = tmp_path / "quantised"
    shutil.copytree(tiny_model_dir, qdir)
    cfg = json.loads((qdir / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (qdir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="--dequantize"):
        M.merge(tiny_adapter, str(tmp_path / "out"), model=str(qdir))
    _no_leftovers(tmp_path, "out")


def test_bfloat16_checkpoint(tiny_adapter, tmp_path):
    info = M.merge(tiny_adapter, str(tmp_path / "bf16"), dtype="bfloat16")
    assert info["checks"]["merge"]["max_abs_diff"] <= 1e-4
    bf = info["checks"]["bfloat16"]
    assert bf["max_abs_diff"] <= M.CAST_TOLERANCE["bfloat16"] and bf["top1_agreement"] >= 0.9
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"


def _cli(capsys, *args) -> tuple[int, str]:
    rc = main(list(args))
    err = capsys.readouterr().err
    return rc, err


@pytest.fixture(scope="module")
def other_base_adapter(tokenizer, tmp_path_factory):
    """An adapter trained on a different (wider) tiny model: it cannot fit the tiny model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("other-base")
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                      max_position_embeddings=256, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(d / "model")
    tokenizer.save_pretrained(d / "model")
    return make_adapter(str(d / "model"), d / "adapter")


@pytest.mark.parametrize("command", [["merge"], ["export", "gguf"]])
def test_bad_inputs_give_one_line_and_no_output(command, tiny_adapter, tiny_model_dir,
                                                other_base_adapter, tmp_path, capsys):
    out = tmp_path / ("out.gguf" if "gguf" in command else "out")
    empty = tmp_path / "not-an-adapter"
    empty.mkdir()
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = [
        ["--adapter", str(empty), "--out", str(out)],
        ["--adapter", other_base_adapter, "--model", tiny_model_dir, "--out", str(out)],
        ["--adapter", tiny_adapter, "--out", str(a_file / ("x.gguf" if "gguf" in command else "x"))],
    ]
    expect = ["no adapter_config.json", "does not fit", "cannot write here"]
    for args, needle in zip(cases, expect):
        rc = main(command + args)
        err = capsys.readouterr().err
        assert rc != 0
        assert "Traceback" not in err
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and needle in lines[0], err
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "not-an-adapter"]


def test_existing_output_needs_overwrite(merged, tiny_adapter, capsys):
    out, _ = merged
    assert main(["merge", "--adapter", tiny_adapter, "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_mlx_lm_loads_the_merged_model(merged):
    import mlx.core as mx
    import mlx_lm
    out, _ = merged
    from transformers import AutoModelForCausalLM

    model, tok = mlx_lm.load(str(out))
    ids = tok.encode("Zoom out. Patience is a position.")
    got = torch.tensor(model(mx.array([ids])).astype(mx.float32).tolist())
    want = AutoModelForCausalLM.from_pretrained(out)(torch.tensor([ids])).logits.detach()
    assert (got - want).abs().max() < 1e-3
