"""The mlx training loop: outputs like torch's, exact accumulation and resume, loss curves equal
to torch's from the same LoRA start, adapters that load in PEFT and in mlx-lm with equal logits."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import make_adapter, tiny_config

import mlx.core as mx  # noqa: E402
import mlx_lm  # noqa: E402,F401


def _cfg(raw):
    from mindprint.config import from_dict

    return from_dict(dict(raw, backend="mlx"))


def _run(raw, **kw):
    from mindprint.training import run_training

    return run_training(_cfg(raw), log=lambda s: None, **kw)


def _weights(run_dir):
    from safetensors.numpy import load_file

    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def _max_diff(a, b):
    assert set(a) == set(b)
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def test_mlx_run_writes_the_torch_layout(tiny_model_dir, tiny_chat_files, tmp_path):
    train, ev = tiny_chat_files
    out = tmp_path / "run"
    s = _run(tiny_config(tiny_model_dir, train, ev, str(out)))
    assert s["backend"] == "mlx" and s["steps"] == 4 and s["stopped"] == "max_steps"
    assert s["final_eval_loss"] < s["first_eval_loss"] or s["first_eval_loss"] is None
    for f in ("config.yaml", "metrics.jsonl", "metrics.csv", "summary.json", "manifest.json",
              "adapter/adapter_config.json", "adapter/adapter_model.safetensors",
              "adapter/mindprint.json", "adapter-mlx/adapters.safetensors",
              "adapter-mlx/adapter_config.json"):
        assert (out / f).exists(), f
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    assert {"lr", "grad_norm", "tokens_per_s", "target_tokens"} <= set(next(r for r in rows if "loss" in r))
    assert any("eval_loss" in r for r in rows)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000002", "step-0000004"]


def test_adapter_loads_in_peft_and_mlx_lm_with_equal_logits(tiny_model_dir, tiny_chat_files, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from mindprint.backends.mlx.model import load_with_adapter
    from mindprint.models import resolve

    train, ev = tiny_chat_files
    out = tmp_path / "run"
    _run(tiny_config(tiny_model_dir, train, ev, str(out), lr=2e-2))
    ids = [1, 504, 2734, 28, 5210, 314, 253, 6092, 30, 2]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
    with torch.no_grad():
        t = peft(torch.tensor([ids])).logits[0].numpy()
        with peft.disable_adapter():
            t0 = peft(torch.tensor([ids])).logits[0].numpy()
    model, _ = load_with_adapter(resolve(tiny_model_dir), out / "adapter-mlx", dtype="float32")
    m = np.array(model(mx.array([ids]))[0])
    assert np.abs(t - t0).max() > 1e-3          # the adapter does change the model
    assert np.abs(m - t).max() <= 1e-4


def _packed(raw: dict) -> dict:
    """data.packing on, with rows long enough for four of these examples."""
    return {**raw, "data": {**raw["data"], "packing": True, "max_length": 256}}


@pytest.fixture
def always_pack(monkeypatch):
    """Pack every micro-batch of two or more examples (these examples have equal lengths, so
    plan_rows would rightly keep them padded)."""
    monkeypatch.setattr("mindprint.data.packing.MIN_SAVING", -100.0)


def test_accumulation_is_exact(tiny_model_dir, tiny_chat_files, tmp_path, always_pack):
    """Packed: batch 4 puts four examples in a row, batch 1 × accum 4 one in each."""
    train, ev = tiny_chat_files
    a = _packed(tiny_config(tiny_model_dir, train, ev, str(tmp_path / "a"), batch_size=4,
                            grad_accum=1, max_steps=3))
    b = _packed(tiny_config(tiny_model_dir, train, ev, str(tmp_path / "b"), batch_size=1,
                            grad_accum=4, max_steps=3))
    ra, rb = _run(a), _run(b)
    assert _max_diff(_weights(tmp_path / "a"), _weights(tmp_path / "b")) < 1e-5
    assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-5)


def test_resume_equals_uninterrupted(tiny_model_dir, tiny_chat_files, tmp_path, always_pack):
    train, ev = tiny_chat_files
    raw = _packed(tiny_config(tiny_model_dir, train, ev, str(tmp_path / "full"), max_steps=6,
                              save_every=3))
    raw["lora"]["dropout"] = 0.1   # RNG-dependent: resume must restore the RNG too
    _run(raw)
    part = tmp_path / "part"
    part.mkdir()
    shutil.copytree(tmp_path / "full" / "checkpoints" / "step-0000003",
                    part / "checkpoints" / "step-0000003")
    shutil.copy(tmp_path / "full" / "metrics.jsonl", part / "metrics.jsonl")
    s = _run(dict(raw, output_dir=str(part)), resume=True)
    assert s["steps"] == 6
    assert _max_diff(_weights(tmp_path / "full"), _weights(part)) <= 1e-6
    steps = [json.loads(l)["step"] for l in (part / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(l)]
    assert steps == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_loss_curve_matches_torch(method, tiny_model_dir, tiny_chat_files, tmp_path, monkeypatch):
    """From the same LoRA start (B ≠ 0) and the same data order, 6 steps of AdamW on each backend
    log the same losses (within 0.1%) and end at the same adapter."""
    from mindprint.training import run_training as torch_run
    from mindprint.config import from_dict

    monkeypatch.setenv("MINDPRINT_CACHE", str(tmp_path / "cache"))
    train, ev = tiny_chat_files
    if method == "dpo":
        rows = [json.loads(l) for l in open(train)]
        pref = tmp_path / "pref.jsonl"
        pref.write_text("".join(json.dumps({"prompt": r["messages"][:1], "chosen": r["messages"][1:],
                                            "rejected": [{"role": "assistant",
                                                          "content": "Buy now, it never turns!"}]})
                                + "\n" for r in rows))
        train, ev = str(pref), str(pref)
    start = make_adapter(tiny_model_dir, tmp_path / "start" / "adapter", seed=5, scale=0.05)
    runs = {}
    for backend in ("torch", "mlx"):
        raw = tiny_config(tiny_model_dir, train, ev, str(tmp_path / backend), max_steps=6,
                          eval_every=0, save_every=0, lr=1e-2)
        raw.update(method=method)
        raw["data"]["eval"] = None
        if backend == "torch":
            torch_run(from_dict(raw), log=lambda s: None, init_adapter=start)
        else:
            _run(raw, init_adapter=start)
        runs[backend] = [json.loads(l)["loss"] for l in
                         (tmp_path / backend / "metrics.jsonl").read_text().splitlines()
                         if "loss" in json.loads(l)]
    assert len(runs["torch"]) == 6
    np.testing.assert_allclose(runs["mlx"], runs["torch"], rtol=1e-3)
    assert _max_diff(_weights(tmp_path / "torch"), _weights(tmp_path / "mlx")) < 1e-4


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_base_trains(bits, tiny_model_dir, tiny_chat_files, tmp_path):
    """model.quantize on mlx: the frozen base linears are mx-quantised (QLoRA-style), LoRA trains
    over them in float32, the loss falls and both adapters are written."""
    import mlx.nn as nn

    from mindprint.backends.mlx.model import add_lora, load_base
    from mindprint.models import resolve
    from parity_helpers import lora_cfg

    model, _ = load_base(resolve(tiny_model_dir), dtype="float32", quantize=bits)
    add_lora(model, lora_cfg(), 0)
    q = model.model.layers[0].self_attn.q_proj
    assert isinstance(q.linear, nn.QuantizedLinear) and q.linear.bits == bits
    assert q.lora_a.dtype == mx.float32

    train, ev = tiny_chat_files
    raw = tiny_config(tiny_model_dir, train, ev, str(tmp_path / "run"), max_steps=6, lr=2e-2,
                      eval_every=3, save_every=0)
    raw["model"] = {"name": tiny_model_dir, "quantize": bits}
    s = _run(raw)
    assert s["steps"] == 6 and np.isfinite(s["train_loss"])
    assert s["final_eval_loss"] < s["first_eval_loss"]
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").exists()
    assert (tmp_path / "run" / "adapter-mlx" / "adapters.safetensors").exists()
