"""Reference log-probs, computed once and cached on disk.

DPO, IPO and KTO compare the policy with the *reference* model — the same base weights with the
adapter switched off. The reference never changes during a run, so its log-probs are a function
of (base weights, tokenized data, max_length, numerics) only. They are computed once, written to
``<cache>/reflogps/<key>.safetensors`` and reused by every later epoch, resume and rerun.

The key hashes:

* the adapter-free weights themselves (names normalised, so another LoRA layout on the same base
  reuses the entry; bytes hashed, so dtype counts),
* every token id and loss-mask bit of the split (truncation by ``data.max_length`` is in there),
* ``max_length``, the device type and the batch layout (they change the last bits of the numbers).

Writes go to a temporary file renamed into place: a killed run never leaves a partial entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .models import cache_dir

FORMAT_VERSION = 1


def reference_dir() -> Path:
    return cache_dir() / "reflogps"


def _base_name(name: str) -> str:
    name = name.replace(".base_layer.", ".")
    for prefix in ("base_model.model.", "base_model."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name


def weights_hash(model) -> str:
    """sha256 of the adapter-free weights (LoRA tensors excluded), in a stable order."""
    h = hashlib.sha256()
    params = {_base_name(n): p for n, p in model.named_parameters() if "lora_" not in n}
    for name in sorted(params):
        t = params[name].detach()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        t = t.contiguous().cpu()
        h.update(t.view(torch.uint8).numpy() if t.numel() else b"")
    return h.hexdigest()


def data_hash(rows) -> str:
    """sha256 of any JSON-serialisable description of the tokenized data."""
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


def cache_key(parts: dict) -> str:
    return hashlib.sha256(json.dumps({"v": FORMAT_VERSION, **parts}, sort_keys=True).encode()
                          ).hexdigest()[:32]


def cached(parts: dict, compute, *, what: str = "reference log-probs", log=print,
           dist=None) -> torch.Tensor:
    """The tensor stored under ``parts``' key, or ``compute()``'s result (a tensor or a numpy
    array) stored there first.

    Under torchrun (``dist``) rank 0 alone reads and writes the cache and hands the table to every
    rank; ``compute`` then runs on every rank (it splits the work between them itself)."""
    if dist is not None:
        t = dist.broadcast(_load(parts, what, log) if dist.is_main else None)
        if t is not None:
            return t
        t0 = time.monotonic()
        t = torch.as_tensor(compute()).detach().to("cpu", torch.float64).contiguous()
        if dist.is_main:
            _store(parts, t, what, log, t0)
        dist.barrier()
        return t
    path = reference_dir() / f"{cache_key(parts)}.safetensors"
    if path.exists():
        try:
            t = load_file(str(path))["logps"]
            log(f"{what}: loaded from cache {path}")
            return t
        except Exception as e:   # noqa: BLE001 - a damaged entry is recomputed, never trusted
            log(f"{what}: ignoring unreadable cache entry {path} ({e})")
    t0 = time.monotonic()
    t = torch.as_tensor(compute()).detach().to("cpu", torch.float64).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    meta = {k: str(v) for k, v in parts.items() if k != "data"}
    save_file({"logps": t}, str(tmp), metadata=meta)
    os.replace(tmp, path)
    log(f"{what}: computed in {time.monotonic() - t0:.1f}s, cached in {path}")
    return t


def _load(parts: dict, what: str, log) -> torch.Tensor | None:
    path = reference_dir() / f"{cache_key(parts)}.safetensors"
    if not path.exists():
        return None
    try:
        t = load_file(str(path))["logps"]
    except Exception as e:   # noqa: BLE001 - a damaged entry is recomputed, never trusted
        log(f"{what}: ignoring unreadable cache entry {path} ({e})")
        return None
    log(f"{what}: loaded from cache {path}")
    return t


def _store(parts: dict, t: torch.Tensor, what: str, log, t0: float) -> None:
    path = reference_dir() / f"{cache_key(parts)}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    meta = {k: str(v) for k, v in parts.items() if k != "data"}
    save_file({"logps": t}, str(tmp), metadata=meta)
    os.replace(tmp, path)
    log(f"{what}: computed in {time.monotonic() - t0:.1f}s (split over the processes), cached "
        f"in {path}")
