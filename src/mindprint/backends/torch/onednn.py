"""oneDNN products on a CPU: the frozen base linears, the LM head and PEFT's LoRA layers.

On x86 CPUs torch sends a float32 ``F.linear`` / matmul to MKL; oneDNN's inner product, which torch
also ships (the kernel its CPU compiler emits), runs the products of a LoRA step faster on the same
numbers (benchmarks/RESULTS.md, "Numbers behind code comments"), and it reads a transposed weight in
place, so the backward's dx = dy·W needs no copy of W either. Used for float32 products with a
weight that is not trained (the frozen base under LoRA, the LM head); anything else goes to
``F.linear``. :func:`dnn_linear` is the one oneDNN call (the GRPO sampler's prepacked bf16 weights
go through it too).

Routing a model's layers here is an explicit model-setup step (:func:`use_onednn_linears`, called
by :func:`~.lora.add_lora` once the base is frozen), never a side effect of building a backend.
"""

from __future__ import annotations

import functools
import types

import torch
import torch.nn.functional as F


def dnn_linear(x, w, b=None):
    """oneDNN's inner product x W^T + b (no autograd; a prepacked weight from
    ``torch.ops.mkldnn._reorder_linear_weight`` works too): the one call every oneDNN product
    of the backend goes through."""
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")


@functools.cache
def onednn_linear_ok(dtype: torch.dtype = torch.float32) -> bool:
    """Whether this torch build has oneDNN's linear for ``dtype`` on the CPU and it agrees with
    F.linear (forward, and the transposed-weight product of the backward) on a probe."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        g = torch.Generator().manual_seed(0)
        x = torch.randn(3, 5, 40, generator=g).to(dtype)
        w = torch.randn(24, 40, generator=g).to(dtype)
        b = torch.randn(24, generator=g).to(dtype)
        dy = torch.randn(3, 5, 24, generator=g).to(dtype)
        tol = 1e-4 if dtype == torch.float32 else 2e-2
        return bool(torch.allclose(dnn_linear(x, w, b), F.linear(x, w, b), rtol=tol, atol=tol)
                    and torch.allclose(dnn_linear(dy, w.t()), dy @ w, rtol=tol, atol=tol))
    except (AttributeError, RuntimeError):
        return False


def _dnn_for(x: torch.Tensor, w: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == torch.float32 and w.dtype == torch.float32
            and x.numel() > 0 and not torch.is_autocast_enabled("cpu") and onednn_linear_ok())


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, w, b) through oneDNN where it is faster; no autograd (for the passes of an
    autograd.Function, where grad mode is off)."""
    return dnn_linear(x, w, b) if _dnn_for(x, w) else F.linear(x, w, b)


def linear_dx(dy: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """dy @ w: the input gradient of :func:`linear`, through oneDNN where it is faster."""
    return dnn_linear(dy, w.t()) if _dnn_for(dy, w) else dy @ w


class _FrozenLinear(torch.autograd.Function):
    """y = x W^T + b with W, b constants; backward dx = dy W (both through oneDNN)."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(w)
        return dnn_linear(x, w, b)

    @staticmethod
    def backward(ctx, dy):
        (w,) = ctx.saved_tensors
        return dnn_linear(dy.contiguous(), w.t()), None, None


def _frozen_forward(self, x):
    w, b = self.weight, self.bias
    if w.requires_grad or (b is not None and b.requires_grad) or not _dnn_for(x, w):
        return F.linear(x, w, b)
    if x.requires_grad and torch.is_grad_enabled():
        return _FrozenLinear.apply(x, w, b)
    return dnn_linear(x, w, b)


class _LoraLinear(torch.autograd.Function):
    """A LoRA layer in one node: y = x W^T + b + s·(x A^T) B^T, W and b constant.

    Backward, with g = dy B (the [N, r] product everything else reuses):
    dx = dy W + s·g A,  dA = s·g^T x,  dB = s·dy^T (x A^T) (computed as ((x A^T)^T dy)^T, a
    short-wide product, much faster than the tall-skinny dy^T (x A^T) on a CPU). Against PEFT's
    layer (base + B(A(x))·s as separate autograd nodes) this saves the [N, out] scale and add
    passes of the forward, the [N, in] sum of the two input gradients, and MKL's slow skinny
    products."""

    @staticmethod
    def forward(ctx, x, w, b, A, B, s):
        a = dnn_linear(x, A)
        y = dnn_linear(x, w, b)
        y.view(-1, y.shape[-1]).addmm_(a.view(-1, a.shape[-1]), B.t(), alpha=s)
        ctx.save_for_backward(x, w, A, B, a)
        ctx.s = s
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w, A, B, a = ctx.saved_tensors
        s = ctx.s
        dy = dy.reshape(-1, dy.shape[-1])
        x2, a2 = x.reshape(-1, x.shape[-1]), a.reshape(-1, a.shape[-1])
        g = dnn_linear(dy, B.t())                                   # dy B      [N, r]
        dx = dA = dB = None
        if ctx.needs_input_grad[0]:
            dx = dnn_linear(dy, w.t())
            dx.addmm_(g, A, alpha=s)
            dx = dx.view(x.shape)
        if ctx.needs_input_grad[3]:
            dA = dnn_linear(g.t(), x2.t()).mul_(s)                  # s g^T x   [r, in]
        if ctx.needs_input_grad[4]:
            dB = dnn_linear(a2.t(), dy.t()).t().mul_(s)             # s dy^T a  [out, r]
        return dx, None, None, dA, dB, None


def _plain_lora(layer, x):
    """(W, b, A, B, s) of a PEFT ``lora.Linear`` in the plain case :class:`_LoraLinear` covers (one
    active vanilla adapter, no dropout, plain float32 layers on a CPU, frozen base); else None."""
    if layer.disable_adapters or layer.merged:
        return None
    names = [n for n in layer.active_adapters if n in layer.lora_A]
    if len(names) != 1 or names[0] in getattr(layer, "lora_variant", {}):
        return None
    name = names[0]
    base, A, B = layer.base_layer, layer.lora_A[name], layer.lora_B[name]
    if not (type(base) is type(A) is type(B) is torch.nn.Linear
            and isinstance(layer.lora_dropout[name], torch.nn.Identity)
            and A.bias is None and B.bias is None):
        return None
    w, b = base.weight, base.bias
    if (w.requires_grad or (b is not None and b.requires_grad) or not _dnn_for(x, w)
            or any(t.dtype != torch.float32 or t.device.type != "cpu" for t in (A.weight, B.weight))):
        return None
    return w, b, A.weight, B.weight, float(layer.scaling[name])


def _lora_forward(self, x, *args, **kwargs):
    """A PEFT ``lora.Linear`` forward through :class:`_LoraLinear` in the plain case (see
    :func:`_plain_lora`); PEFT's own otherwise."""
    parts = None if (args or kwargs) else _plain_lora(self, x)
    if parts is None:
        return type(self).forward(self, x, *args, **kwargs)
    return _LoraLinear.apply(x, *parts)


def _is_peft_lora_linear(mod) -> bool:
    t = type(mod)
    return t.__name__ == "Linear" and t.__module__.startswith("peft.tuners.lora")


def use_onednn_linears(model) -> int:
    """Route the frozen ``nn.Linear`` layers of a CPU model (the base under LoRA) through
    oneDNN, see :func:`linear`, and PEFT's LoRA layers through :class:`_LoraLinear`; the choice
    is re-checked on every call (a layer that becomes trainable, a second adapter, dropout,
    autocast, another dtype or device go back to the stock forward). Returns how many."""
    n = 0
    if not onednn_linear_ok():
        return 0
    for mod in model.modules():
        if "forward" in vars(mod):
            continue
        if (type(mod) is torch.nn.Linear and mod.weight.device.type == "cpu"
                and not mod.weight.requires_grad):
            mod.forward = types.MethodType(_frozen_forward, mod)
            n += 1
        elif _is_peft_lora_linear(mod):
            mod.forward = types.MethodType(_lora_forward, mod)
            n += 1
    return n
