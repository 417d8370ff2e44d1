"""LoRA: which linear layers to adapt (``lora.targets``) and PEFT's wrapping of the model."""

from __future__ import annotations

import torch

from ..common import target_names
from .onednn import use_onednn_linears


def linear_module_names(model) -> set[str]:
    names = set()
    for full, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            names.add(full.rsplit(".", 1)[-1])
    return names


def resolve_targets(model, targets) -> list[str] | str:
    return target_names(linear_module_names(model), targets)


def add_lora(model, lora_cfg, seed: int):
    """``model`` (frozen) wrapped by PEFT with the LoRA layers of ``lora_cfg``. On a CPU this is
    also where the frozen base linears and the LoRA layers are routed through oneDNN
    (:func:`~.onednn.use_onednn_linears`): the one model-setup step that does it."""
    # peft imports transformers: on first use, after load.quiet_hf has set its environment
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)   # LoRA A init is random: tie it to the run's seed
    pcfg = LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                      target_modules=resolve_targets(model, lora_cfg.targets),
                      use_dora=lora_cfg.dora, use_rslora=lora_cfg.rslora, bias="none",
                      task_type="CAUSAL_LM")
    model = get_peft_model(model, pcfg)
    if next(model.parameters()).device.type == "cpu":
        use_onednn_linears(model)
    return model
