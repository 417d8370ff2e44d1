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

mx = pytest.importorskip("mlx.core")
pytest.importorskip("mlx_lm")

PROMPTS = [[{"role": "user", "content": "What is the capital of France?"}],
           [{"role": "user", "content": "Give me one tip for saving money."}]]


@pytest.mark.slow
def test_greedy_generation_matches_torch(bundled_model_dir):
    import torch

    from mindprint.backends.mlx.model import generate_ids, load_base
    from mindprint.backends.torch.model import load_base as torch_load
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


@pytest.mark.slow
@pytest.mark.wip
def test_bundled_logits_match_between_peft_and_mlx(tmp_path, bundled_model_dir):
    """Open: on the bundled model transformers and mlx-lm already differ by up to ~0.06 in the
    base logits (fp32, 30 layers), so the ≤ 1e-4 check holds on the tiny model only so far."""
    import torch
    from mlx_lm.tuner.utils import load_adapters
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from conftest import make_adapter
    from mindprint.backends.mlx.model import load_base
    from mindprint.export.adapters import convert
    from mindprint.models import resolve

    out = tmp_path
    make_adapter(bundled_model_dir, out / "adapter", scale=0.01)
    convert(out / "adapter", out / "adapter-mlx", "mlx")
    ids = [1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3717, 28, 7018, 411, 4529, 30]
    ref = resolve("smollm2-135m-instruct")
    base = AutoModelForCausalLM.from_pretrained(ref.path, dtype=torch.float32)
    peft = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
    with torch.no_grad():
        t = peft(torch.tensor([ids])).logits[0].numpy()
    model, _ = load_base(ref, dtype="float32")
    load_adapters(model, str(out / "adapter-mlx"))
    m = np.array(model(mx.array([ids]))[0])
    assert np.abs(m - t).max() <= 1e-4
