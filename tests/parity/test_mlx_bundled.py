"""The bundled model on mlx: greedy generation equals torch's, and the quickstart trains with
``--set backend=mlx`` through the CLI into adapters that load in PEFT and mlx-lm with the same
logits (slow)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import EXAMPLES, REPO

import mlx.core as mx  # noqa: E402
import mlx_lm  # noqa: E402,F401

PROMPTS = [[{"role": "user", "content": "What is the capital of France?"}],
           [{"role": "user", "content": "Give me one tip for saving money."}]]


@pytest.mark.slow
def test_greedy_generation_matches_torch(bundled_model_dir):
    import torch

    from mindprint.backends.mlx.generate import generate_ids
    from mindprint.backends.mlx.model import load_base
    from mindprint.backends.torch.load import load_base as torch_load
    from mindprint.data.render import render_text
    from mindprint.models import resolve

    ref = resolve("smollm2-135m-instruct")
    model, tok = load_base(ref, dtype="float32")
    got = generate_ids(model, tok, PROMPTS, max_new_tokens=20)
    tmodel, _ = torch_load(ref, dtype="float32", device="cpu")
    for p, g in zip(PROMPTS, got):
        ids = tok(render_text(tok, p, add_generation_prompt=True), add_special_tokens=False,
                  return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = tmodel.generate(ids, max_new_tokens=20, do_sample=False, temperature=None,
                                  top_p=None, top_k=None, pad_token_id=tok.pad_token_id,
                                  eos_token_id=[tok.eos_token_id,
                                                tok.convert_tokens_to_ids("<|im_end|>")])
        want = out[0, ids.shape[1]:].tolist()
        assert len(g) >= 5
        assert g[:20] == want[:20], (tok.decode(g), tok.decode(want))


@pytest.mark.slow
def test_quickstart_on_mlx_adapter_loads_in_peft(tmp_path, bundled_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from mindprint.models import resolve

    # mlx on a Linux CPU is far slower than torch there: a short run on short examples
    out = tmp_path / "run"
    ev = tmp_path / "eval.jsonl"
    ev.write_text("".join((EXAMPLES / "data" / "persona_eval.jsonl").read_text().splitlines(True)[:2]))
    r = subprocess.run([sys.executable, "-m", "mindprint.cli", "train",
                        str(EXAMPLES / "quickstart.yaml"), "--set", "backend=mlx",
                        "--set", "train.max_steps=2", "--set", "train.batch_size=1",
                        "--set", "train.eval_every=0", "--set", "train.save_every=1",
                        "--set", "data.max_length=64", "--set", f"data.eval={ev}",
                        "--output-dir", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "mlx" and summary["steps"] == 2
    assert summary["final_eval_loss"] is not None and summary["train_loss"] > 0
    # the PEFT adapter converts to mlx-lm's format: the same tensors as adapter-mlx/
    conv = tmp_path / "converted"
    c = subprocess.run([sys.executable, "-m", "mindprint.cli", "adapters", "convert",
                        str(out / "adapter"), str(conv), "--to", "mlx"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert c.returncode == 0, c.stderr[-2000:]
    a, b = mx.load(str(conv / "adapters.safetensors")), mx.load(str(out / "adapter-mlx" / "adapters.safetensors"))
    assert set(a) == set(b) and all(mx.array_equal(a[k], b[k]).item() for k in a)
    assert json.loads((conv / "adapter_config.json").read_text())["lora_parameters"] == \
        json.loads((out / "adapter-mlx" / "adapter_config.json").read_text())["lora_parameters"]

    # the adapter loads in plain PEFT
    base = AutoModelForCausalLM.from_pretrained(resolve("smollm2-135m-instruct").path,
                                                dtype=torch.float32)
    peft = PeftModel.from_pretrained(base, str(out / "adapter"))
    assert sum("lora_A" in n for n, _ in peft.named_parameters()) == 30 * 7
    del peft, base
    # and gives the logits mlx-lm gives with the converted adapter
    _assert_same_logits(_logits_both(out / "adapter", conv, [1, 9690, 198, 2683, 359, 253, 5356,
                                                              5646, 11173, 3365, 3717, 28, 30]))


def _logits_both(adapter, adapter_mlx, ids):
    """Logits of ``ids`` through PEFT (``adapter``) and mlx-lm (``adapter_mlx``) on the bundled
    model, each in float32 and float64, and torch's without the adapter (float32)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from mindprint.backends.mlx.model import load_with_adapter
    from mindprint.models import resolve

    ref = resolve("smollm2-135m-instruct")
    base = AutoModelForCausalLM.from_pretrained(ref.path, dtype=torch.float32)
    peft = PeftModel.from_pretrained(base, str(adapter)).eval()
    x = torch.tensor([ids])
    with torch.no_grad():
        t32 = peft(x).logits[0].double().numpy()
        with peft.disable_adapter():
            t0 = peft(x).logits[0].double().numpy()
        t64 = peft.double()(x).logits[0].numpy()
    del peft, base
    model, _ = load_with_adapter(ref, adapter_mlx, dtype="float32")
    with mx.stream(mx.cpu):                 # float64 runs on the CPU (Metal has none)
        m32 = np.array(model(mx.array([ids]))[0]).astype(np.float64)
        model.set_dtype(mx.float64)
        m64 = np.array(model(mx.array([ids]))[0])
    return {"t32": t32, "t64": t64, "m32": m32, "m64": m64, "t0": t0}


def _assert_same_logits(r):
    assert np.abs(r["t32"] - r["t0"]).max() > 1e-3         # the adapter does change the logits
    assert np.abs(r["m64"] - r["t64"]).max() <= 1e-4
    # fp32: rounding alone (measured 1.3e-4 and 1.8e-4 on these prompts; torch's own fp32 vs
    # float64 differs by up to 1.1e-4); a conversion fault (scale, transpose, a module) is ≥ 1e-2
    assert np.abs(r["m32"] - r["t32"]).max() <= 5e-4


@pytest.mark.slow
def test_bundled_logits_match_between_peft_and_mlx(tmp_path, bundled_model_dir):
    """PEFT and mlx-lm (converted adapter) give the same logits for the same prompt.

    The adapter has LoRA dropout 0.05 (as the quickstart's): loaded with mlx-lm's
    ``load_adapters`` alone its fresh LoRA layers stay in training mode and the dropout moves the
    logits by up to 0.06; ``load_with_adapter`` puts the model in eval mode, as ``mlx_lm.load``.

    In float64 on both sides they agree within 1e-4 (measured 5e-5; torch's RMSNorm and both
    RoPEs still compute in fp32 inside a float64 model). In float32 each framework is off its own
    float64 result by rounding alone: from layer 12 on the first position carries activations of
    ~2.5e4, where one fp32 ulp is 2e-3, and 30 layers later torch's fp32 logits differ from its
    float64 ones by ~1.1e-4 — mostly a per-row shift (the error lies along the embeddings' common
    direction). So the 1e-4 check is in float64 and fp32 gets a rounding-sized bound; a
    conversion fault (scale, transpose, a missing module) moves logits by 1e-2 or more."""
    from conftest import make_adapter
    from mindprint.export.adapters import convert

    make_adapter(bundled_model_dir, tmp_path / "adapter", scale=0.01)
    cfg_file = tmp_path / "adapter" / "adapter_config.json"
    cfg_file.write_text(json.dumps(dict(json.loads(cfg_file.read_text()), lora_dropout=0.05)))
    convert(tmp_path / "adapter", tmp_path / "adapter-mlx", "mlx")
    ids = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3717, 28, 7018, 411, 4529, 30]
    _assert_same_logits(_logits_both(tmp_path / "adapter", tmp_path / "adapter-mlx", ids))
