"""Array namespaces: the handful of array ops the losses need, per backend.

A loss written against ``xp`` runs unchanged on torch and mlx, so backend parity follows
from construction. Keep this tiny: add an op only when a loss needs it.
"""

from __future__ import annotations

from types import SimpleNamespace


def _torch_namespace() -> SimpleNamespace:
    import torch
    import torch.nn.functional as F

    return SimpleNamespace(
        name="torch",
        logsigmoid=F.logsigmoid,
        sigmoid=torch.sigmoid,
        exp=torch.exp,
        log=torch.log,
        log1p=torch.log1p,
        log_softmax=lambda x, axis=-1: torch.log_softmax(x, dim=axis),
        expm1=torch.expm1,
        where=torch.where,
        clip=lambda x, lo=None, hi=None: torch.clamp(x, lo, hi),
        minimum=torch.minimum,
        maximum=torch.maximum,
        abs=torch.abs,
        sum=lambda x, axis=None: x.sum() if axis is None else x.sum(dim=axis),
        mean=lambda x, axis=None: x.mean() if axis is None else x.mean(dim=axis),
        stop_gradient=lambda x: x.detach(),
        astype_float=lambda x: x.float(),
        zeros_like=torch.zeros_like,
        ones_like=torch.ones_like,
        to_float=lambda x: float(x.detach().float().item()),
        # method glue: pick entries of a flattened array by host-side index, host copies
        take=lambda x, idx: x.reshape(-1)[torch.as_tensor(idx, dtype=torch.long, device=x.device)],
        asarray=lambda values, like: torch.as_tensor(values, dtype=like.dtype, device=like.device),
        to_numpy=lambda x: x.detach().float().cpu().numpy(),
        # host-side float64 from Python numbers (GRPO's rewards → advantages, whatever the backend)
        float64=lambda values: torch.tensor(values, dtype=torch.float64),
    )


def _mlx_namespace() -> SimpleNamespace:
    # The mlx backend package, imported before this on every mlx run (the stepper lives in it),
    # has already put an optimised BLAS ahead of mlx.core (backends/mlx/__init__.py); called on
    # its own, this namespace works the same, only with the mlx wheel's slower reference BLAS.
    import mlx.core as mx
    import mlx.nn as nn
    import numpy as np

    def clip(x, lo=None, hi=None):
        # torch.clamp semantics: one bound may be None
        if lo is not None:
            x = mx.maximum(x, lo)
        if hi is not None:
            x = mx.minimum(x, hi)
        return x

    return SimpleNamespace(
        name="mlx",
        logsigmoid=nn.log_sigmoid,
        sigmoid=mx.sigmoid,
        exp=mx.exp,
        log=mx.log,
        log1p=mx.log1p,
        # x − logsumexp(x): mlx has no fused log_softmax op
        log_softmax=lambda x, axis=-1: x - mx.logsumexp(x, axis=axis, keepdims=True),
        expm1=mx.expm1,
        where=mx.where,
        clip=clip,
        minimum=mx.minimum,
        maximum=mx.maximum,
        abs=mx.abs,
        sum=lambda x, axis=None: mx.sum(x, axis=axis),
        mean=lambda x, axis=None: mx.mean(x, axis=axis),
        stop_gradient=mx.stop_gradient,
        astype_float=lambda x: x.astype(mx.float32),
        zeros_like=mx.zeros_like,
        ones_like=mx.ones_like,
        to_float=lambda x: float(mx.stop_gradient(x).astype(mx.float32).item())
        if isinstance(x, mx.array) else float(x),
        take=lambda x, idx: mx.take(x.reshape(-1), mx.array(list(idx), dtype=mx.int32)),
        asarray=lambda values, like: mx.array(values, dtype=like.dtype),
        to_numpy=lambda x: np.array(mx.stop_gradient(x).astype(mx.float32)),
        float64=lambda values: mx.array(values, dtype=mx.float64),    # CPU-only dtype in mlx
    )


_CACHE: dict[str, SimpleNamespace] = {}


def get(name: str = "torch") -> SimpleNamespace:
    """Return the namespace for ``name`` ("torch" or "mlx"), built once."""
    if name not in _CACHE:
        if name == "torch":
            _CACHE[name] = _torch_namespace()
        elif name == "mlx":
            _CACHE[name] = _mlx_namespace()
        else:
            raise ValueError(f"unknown array namespace {name!r}")
    return _CACHE[name]


def of(x) -> SimpleNamespace:
    """The namespace matching the array ``x``."""
    mod = type(x).__module__
    if mod.startswith("torch"):
        return get("torch")
    if mod.startswith("mlx"):
        return get("mlx")
    raise TypeError(f"no array namespace for {type(x)!r}")
