"""LoRA adapter files between PEFT and mlx-lm, in numpy (neither torch nor mlx needed). Below the
backends: the mlx backend reads and writes both forms; ``mindprint adapters convert``
(:mod:`mindprint.export.adapters`) is its command.

The two formats store the same low-rank update ΔW = s · B·A for a linear layer y = x·Wᵀ:

=============  =========================================  ===========================================
               PEFT (``adapter/``)                        mlx-lm (``adapter-mlx/``)
=============  =========================================  ===========================================
file           adapter_model.safetensors                  adapters.safetensors
A              ``base_model.model.<m>.lora_A.weight``      ``<m>.lora_a``  ``[in, r]`` (A transposed)
               ``[r, in]``
B              ``…lora_B.weight`` ``[out, r]``             ``<m>.lora_b``  ``[r, out]`` (B transposed)
DoRA magnitude ``…lora_magnitude_vector`` ``[out]``        ``<m>.m`` ``[out]``
scale s        lora_alpha / r  (alpha/√r with rsLoRA)     lora_parameters.scale, a raw multiplier
targets        target_modules: leaf names                 lora_parameters.keys: names inside a layer
=============  =========================================  ===========================================

``<m>`` is the module path (``model.layers.3.self_attn.q_proj``), the same in both for the
architectures mlx-lm maps one-to-one from transformers (Llama, Qwen2, Mistral, Gemma, Phi-3 ...).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..errors import ModelError
from .common import ADAPTER_META, atomic_dir, lora_scale

PEFT_PREFIX = "base_model.model."
_LAYER = re.compile(r"^(?P<stack>.*\.layers)\.(?P<i>\d+)\.(?P<rel>.+)$")


def _safetensors_save(tensors: dict[str, np.ndarray], path: Path, metadata: dict | None = None):
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path),
              metadata=metadata)


def _safetensors_load(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except Exception:   # noqa: BLE001 - bf16 has no numpy dtype: read through torch when there
        import torch
        from safetensors.torch import load_file as tload

        return {k: v.float().numpy() for k, v in tload(str(path)).items()}


# -- names -------------------------------------------------------------------------------------
def mlx_to_peft_name(name: str) -> str:
    module, leaf = name.rsplit(".", 1)
    tail = {"lora_a": "lora_A.weight", "lora_b": "lora_B.weight", "m": "lora_magnitude_vector"}
    if leaf not in tail:
        raise ModelError(f"{name}: not a LoRA/DoRA parameter")
    return f"{PEFT_PREFIX}{module}.{tail[leaf]}"


def peft_to_mlx_name(name: str) -> str:
    if not name.startswith(PEFT_PREFIX):
        raise ModelError(f"{name}: not a PEFT LoRA key (expected the prefix {PEFT_PREFIX!r})")
    body = name[len(PEFT_PREFIX):].replace(".default.", ".")
    for peft, mlx in ((".lora_A.weight", ".lora_a"), (".lora_B.weight", ".lora_b"),
                      (".lora_magnitude_vector.weight", ".m"), (".lora_magnitude_vector", ".m")):
        if body.endswith(peft):
            return body[: -len(peft)] + mlx
    raise ModelError(f"{name}: not a LoRA/DoRA parameter PEFT writes")


def mlx_to_peft(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """mlx-lm adapter tensors → PEFT's (names, A/B transposed; magnitudes as they are)."""
    out = {}
    for k, v in weights.items():
        out[mlx_to_peft_name(k)] = v if k.endswith(".m") else np.asarray(v).T
    return out


def peft_to_mlx(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in weights.items():
        name = peft_to_mlx_name(k)
        out[name] = v if name.endswith(".m") else np.asarray(v).T
    return out


# -- configs -----------------------------------------------------------------------------------
def peft_config(*, r: int, alpha: float, targets: list[str], dora: bool, rslora: bool,
                dropout: float, base_model: str | None) -> dict:
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": int(r), "lora_alpha": alpha,
            "lora_dropout": dropout, "target_modules": sorted(targets), "use_dora": bool(dora),
            "use_rslora": bool(rslora), "bias": "none", "fan_in_fan_out": False,
            "inference_mode": True, "init_lora_weights": True, "modules_to_save": None,
            "base_model_name_or_path": base_model}


def mlx_config(*, r: int, scale: float, keys: list[str], dora: bool, dropout: float,
               num_layers: int) -> dict:
    return {"fine_tune_type": "dora" if dora else "lora", "num_layers": int(num_layers),
            "lora_parameters": {"rank": int(r), "scale": float(scale), "dropout": dropout,
                                "keys": sorted(keys)}}


def _layer_keys(mlx_names) -> tuple[list[str], int]:
    """mlx-lm's ``keys`` (module names inside a transformer block) and the highest block index + 1."""
    keys, top = set(), 0
    for n in mlx_names:
        module = n.rsplit(".", 1)[0]
        m = _LAYER.match(module)
        if not m:
            raise ModelError(f"{n}: mlx-lm adapters only hold layers inside the transformer blocks")
        keys.add(m["rel"])
        top = max(top, int(m["i"]) + 1)
    return sorted(keys), top


# -- writers -----------------------------------------------------------------------------------
def write_peft(path: Path, weights_mlx: dict[str, np.ndarray], *, r: int, alpha: float,
               dora: bool, rslora: bool, dropout: float, base_model: str | None,
               meta: dict | None = None) -> None:
    """A PEFT adapter directory from mlx-named tensors, written atomically."""
    targets = sorted({k.rsplit(".", 2)[-2] for k in weights_mlx})
    with atomic_dir(Path(path)) as tmp:
        _safetensors_save(mlx_to_peft(weights_mlx), tmp / "adapter_model.safetensors",
                          {"format": "pt"})
        cfg = peft_config(r=r, alpha=alpha, targets=targets, dora=dora, rslora=rslora,
                          dropout=dropout, base_model=base_model)
        (tmp / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
        if meta is not None:
            (tmp / ADAPTER_META).write_text(json.dumps(meta, indent=2))


def write_mlx(path: Path, weights_mlx: dict[str, np.ndarray], *, r: int, scale: float,
              dora: bool, dropout: float, num_layers: int | None = None,
              meta: dict | None = None) -> None:
    """An mlx-lm adapter directory (``mlx_lm.load(model, adapter_path=...)``), atomically."""
    keys, top = _layer_keys(weights_mlx)
    with atomic_dir(Path(path)) as tmp:
        _safetensors_save(dict(weights_mlx), tmp / "adapters.safetensors")
        cfg = mlx_config(r=r, scale=scale, keys=keys, dora=dora, dropout=dropout,
                         num_layers=num_layers or top)
        (tmp / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
        if meta is not None:
            (tmp / ADAPTER_META).write_text(json.dumps(meta, indent=2))


# -- conversion --------------------------------------------------------------------------------
def detect(path: Path) -> str:
    p = Path(path)
    if (p / "adapter_model.safetensors").exists() and (p / "adapter_config.json").exists():
        return "peft"
    if (p / "adapters.safetensors").exists() and (p / "adapter_config.json").exists():
        return "mlx"
    raise ModelError(f"{path}: neither a PEFT adapter (adapter_model.safetensors) nor an mlx-lm "
                     "adapter (adapters.safetensors)")


def convert(src: Path, dst: Path, to: str, *, num_layers: int | None = None) -> str:
    """Convert the adapter at ``src`` to format ``to`` ("peft" or "mlx") at ``dst``; returns the
    source format. Converting to the format it already has copies it (normalised)."""
    src, dst = Path(src), Path(dst)
    kind = detect(src)
    cfg = json.loads((src / "adapter_config.json").read_text())
    meta_file = src / ADAPTER_META
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else None
    if kind == "peft":
        if cfg.get("peft_type", "LORA") != "LORA":
            raise ModelError(f"{src}: only LoRA/DoRA PEFT adapters convert (this is "
                             f"{cfg.get('peft_type')})")
        if cfg.get("fan_in_fan_out"):
            raise ModelError(f"{src}: fan_in_fan_out adapters (GPT-2 Conv1D) have no mlx-lm form")
        r, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
        if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
            raise ModelError(f"{src}: per-module rank/alpha patterns have no mlx-lm form")
        rslora, dora = bool(cfg.get("use_rslora")), bool(cfg.get("use_dora"))
        weights = peft_to_mlx(_safetensors_load(src / "adapter_model.safetensors"))
        dropout = float(cfg.get("lora_dropout", 0.0))
        scale = lora_scale(r, alpha, rslora)
        if meta is None:
            meta = {"base_model": cfg.get("base_model_name_or_path")}
    else:
        lp = cfg.get("lora_parameters", {})
        r, scale = int(lp["rank"]), float(lp["scale"])
        dora = cfg.get("fine_tune_type", "lora") == "dora"
        if cfg.get("fine_tune_type") == "full":
            raise ModelError(f"{src}: a full fine-tune is not an adapter")
        weights = _safetensors_load(src / "adapters.safetensors")
        dropout = float(lp.get("dropout", 0.0))
        alpha, rslora = scale * r, False        # PEFT's alpha/r reproduces the raw scale
        num_layers = num_layers or cfg.get("num_layers")
    if to == "peft":
        write_peft(dst, weights, r=r, alpha=alpha, dora=dora, rslora=rslora, dropout=dropout,
                   base_model=(meta or {}).get("base_model"), meta=meta)
    elif to == "mlx":
        write_mlx(dst, weights, r=r, scale=scale, dora=dora, dropout=dropout,
                  num_layers=num_layers, meta=meta)
    else:
        raise ModelError(f"--to must be peft or mlx, not {to!r}")
    return kind
