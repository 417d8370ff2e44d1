"""``mindprint adapters convert``: PEFT ⇄ mlx-lm (names, A/B transpose, alpha/r ⇄ scale, DoRA
magnitudes), checked by equal logits of PEFT and of mlx-lm with the converted adapter."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mlx.core as mx  # noqa: E402
import mlx_lm  # noqa: E402,F401

IDS = [1, 504, 2734, 28, 5210, 314, 253, 6092, 30, 2, 77, 901]


def _peft_adapter(base_dir, out, *, dora=False, rslora=False, seed=0):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=12, target_modules=["q_proj", "v_proj", "down_proj"],
                     init_lora_weights=False, use_dora=dora, use_rslora=rslora,
                     task_type="CAUSAL_LM")
    pm = get_peft_model(model, cfg)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_magnitude" in n:
                p.mul_(1 + 0.2 * torch.rand(p.shape))
    pm.save_pretrained(str(out))
    with torch.no_grad():
        return pm.eval()(torch.tensor([IDS])).logits[0].numpy()


@pytest.mark.parametrize("kind", ["lora", "dora", "rslora"])
def test_peft_to_mlx_gives_the_same_logits_and_back(kind, tiny_model_dir, tmp_path):
    from safetensors.numpy import load_file

    from mindprint.backends.mlx.model import load_with_adapter
    from mindprint.cli import main
    from mindprint.models import resolve

    want = _peft_adapter(tiny_model_dir, tmp_path / "peft", dora=kind == "dora",
                         rslora=kind == "rslora")
    assert main(["adapters", "convert", str(tmp_path / "peft"), str(tmp_path / "mlx"),
                 "--to", "mlx"]) == 0
    cfg = json.loads((tmp_path / "mlx" / "adapter_config.json").read_text())
    assert cfg["fine_tune_type"] == ("dora" if kind == "dora" else "lora")
    assert cfg["lora_parameters"]["scale"] == pytest.approx(12 / 2 if kind == "rslora" else 12 / 4)
    model, _ = load_with_adapter(resolve(tiny_model_dir), tmp_path / "mlx", dtype="float32")
    got = np.array(model(mx.array([IDS]))[0])
    assert np.abs(got - want).max() <= 1e-4
    # and back: the same tensors, a config PEFT reads to the same scale
    assert main(["adapters", "convert", str(tmp_path / "mlx"), str(tmp_path / "back"),
                 "--to", "peft"]) == 0
    a = load_file(str(tmp_path / "peft" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "back" / "adapter_model.safetensors"))
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    back = json.loads((tmp_path / "back" / "adapter_config.json").read_text())
    assert back["lora_alpha"] / back["r"] == pytest.approx(cfg["lora_parameters"]["scale"])


def test_convert_refuses_what_is_no_adapter(tmp_path, capsys):
    from mindprint.cli import main

    (tmp_path / "x").mkdir()
    assert main(["adapters", "convert", str(tmp_path / "x"), str(tmp_path / "y"), "--to", "mlx"]) != 0
    # --adapter takes an adapter or a run directory (issue 19): the message names both
    assert "neither an adapter directory (no adapter_config.json) nor a run directory" \
        in capsys.readouterr().err
