"""Adapter I/O: PEFT-format adapters written atomically with Mindprint's metadata, read back,
attached to a base model, or copied into an existing model's LoRA layers."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ...errors import ModelError
from ..common import ADAPTER_META, atomic_dir


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_adapter(model, path: Path, meta: dict, state_dict: dict | None = None) -> None:
    """PEFT-format adapter (loads with ``PeftModel.from_pretrained``) + our metadata, atomically.
    ``state_dict``: whole tensors to write instead of the model's own (FSDP shards them)."""
    with atomic_dir(Path(path)) as tmp:
        if state_dict is None:
            model.save_pretrained(str(tmp))
        else:
            model.save_pretrained(str(tmp), state_dict=state_dict)
        (tmp / ADAPTER_META).write_text(json.dumps(meta, indent=2))


def read_adapter_meta(path: Path) -> dict:
    p = Path(path)
    if not p.is_dir() or not (p / "adapter_config.json").exists():
        raise ModelError(f"{path}: not an adapter directory (no adapter_config.json)")
    meta_file = p / ADAPTER_META
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    if "base_model" not in meta:
        cfg = json.loads((p / "adapter_config.json").read_text())
        meta["base_model"] = cfg.get("base_model_name_or_path")
    return meta


def base_model_of(adapter, model_spec: str | None = None, *, default: str | None = None):
    """``(model spec, adapter metadata)``: ``model_spec`` when given, else the base model the
    adapter names, else ``default`` when there is no adapter."""
    meta = read_adapter_meta(Path(adapter)) if adapter else {}
    spec = model_spec or (meta.get("base_model") if adapter else default)
    if not spec:
        raise ModelError(f"{adapter}: the adapter does not say which base model it belongs to; "
                         "pass --model")
    return spec, meta

def attach_adapter(model, adapter, base_spec: str = "the base model", **kwargs):
    """``PeftModel.from_pretrained`` with one-line errors for adapters that do not fit the base
    (missing files, other module names, shape mismatches)."""
    from peft import PeftModel

    read_adapter_meta(Path(adapter))
    try:
        return PeftModel.from_pretrained(model, str(adapter), **kwargs)
    except (RuntimeError, ValueError, KeyError, OSError) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "size mismatch" in ln), lines[0] if lines else repr(e))
        raise ModelError(f"{adapter}: the adapter does not fit {base_spec} (was it trained on "
                         f"another base model?): {detail[:300]}") from None


@torch.no_grad()
def load_adapter_weights(model, adapter) -> None:
    """Copy a saved adapter's weights into ``model``'s LoRA layers (same layout required): how a
    curriculum carries one adapter from topic to topic while each topic builds its own trainer."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(adapter) / "adapter_model.safetensors"
    if not path.exists():
        raise ModelError(f"{adapter}: no adapter_model.safetensors to continue from")
    weights = load_file(str(path))
    own = {n for n, p in model.named_parameters() if p.requires_grad}
    res = set_peft_model_state_dict(model, weights)
    if getattr(res, "unexpected_keys", None) or len(weights) != len(own):
        raise ModelError(f"{adapter}: its LoRA layout does not match this config's (lora.r / "
                         f"lora.targets must be the same for every topic)")
