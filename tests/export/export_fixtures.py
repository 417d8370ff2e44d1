"""Adapters on the tiny model, made directly (no training): LoRA B is random instead of zero,
so merging changes every targeted weight. Imported by the test modules (not a conftest.py: test
modules elsewhere import names from the root conftest, which another conftest.py would shadow)."""

from __future__ import annotations

from pathlib import Path

import pytest

PERSONA = Path(__file__).resolve().parents[2] / "examples" / "data"


def make_adapter(base_dir: str, out, *, seed: int = 0, scale: float = 1.0) -> str:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from mindprint.backends.torch.model import save_adapter

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                        "gate_proj", "up_proj", "down_proj"],
                     init_lora_weights=False, task_type="CAUSAL_LM")
    pm = get_peft_model(model, cfg)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.mul_(scale)
    save_adapter(pm, out, {"base_model": base_dir, "method": "sft", "step": 0})
    return str(out)


@pytest.fixture(scope="session")
def tiny_adapter(tiny_model_dir, tmp_path_factory) -> str:
    return make_adapter(tiny_model_dir, tmp_path_factory.mktemp("adapters") / "run" / "adapter")
