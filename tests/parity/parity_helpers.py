"""Helpers for the parity tests: torch and mlx backends on the same weights (identical base,
identical LoRA tensors) and small data files."""

from __future__ import annotations

import pytest

from conftest import chat, write_jsonl  # noqa: E402


def lora_cfg(**over):
    from mindprint.config import LoraConfig

    kw = dict(r=4, alpha=8.0, dropout=0.0, targets="attn_mlp")
    kw.update(over)
    return LoraConfig(**kw)


def torch_pair(model_dir: str, lora, *, seed: int = 0, b_scale: float = 0.05):
    """Torch PEFT model with LoRA B made non-zero (so A has a gradient), and its backend."""
    import torch

    from mindprint.backends.torch.backend import TorchBackend
    from mindprint.backends.torch.load import load_base
    from mindprint.backends.torch.lora import add_lora
    from mindprint.models import resolve

    base, tok = load_base(resolve(model_dir), dtype="float32", device="cpu")
    model = add_lora(base, lora, seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * b_scale)
            if "lora_magnitude" in n:
                p.mul_(1 + 0.1 * torch.rand(p.shape, generator=g))
    model.eval()
    return model, TorchBackend(model, tok)


def mlx_like(model_dir: str, lora, torch_model):
    """mlx-lm model with the same LoRA tensors as ``torch_model`` (converted from PEFT's)."""
    import mlx.core as mx
    from peft import get_peft_model_state_dict

    from mindprint.backends.mlx.model import MLXBackend, add_lora, load_base
    from mindprint.export.adapters import peft_to_mlx
    from mindprint.models import resolve

    model, tok = load_base(resolve(model_dir), dtype="float32")
    info = add_lora(model, lora, 0)
    sd = {k: v.detach().numpy() for k, v in get_peft_model_state_dict(torch_model).items()}
    weights = peft_to_mlx(sd)
    model.load_weights([(k, mx.array(v)) for k, v in weights.items()], strict=False)
    model.eval()
    return model, MLXBackend(model, tok, info)


@pytest.fixture
def pref_file(tmp_path):
    rows = []
    for i, w in enumerate(["tide", "season", "credit", "cycle", "risk", "cash"]):
        rows.append({"prompt": [{"role": "user", "content": f"What about the {w} {i}?"}],
                     "chosen": [{"role": "assistant", "content": f"Zoom out: the {w} turns."}],
                     "rejected": [{"role": "assistant",
                                   "content": f"Buy everything now, the {w} {i} never turns!"}]})
    return str(write_jsonl(tmp_path / "pref.jsonl", rows))


@pytest.fixture
def sft_file(tmp_path):
    rows = [chat(f"Tell me about the {w}.", f"Zoom out. The {w} turns, as it did in {1990 + i}.")
            for i, w in enumerate(["tide", "season", "pendulum", "credit", "crowd", "cycle"])]
    return str(write_jsonl(tmp_path / "sft.jsonl", rows))
