"""LoRA folded into plain weights, for the fast sampler (:mod:`.sampling`): the effective weight
W + s·B·A of an adapted linear layer, and several layers' weights fused side by side (q|k|v,
gate|up) with a scale each, made once per rollout.

Plain LoRA and rsLoRA on ``torch.nn.Linear`` fold exactly; anything else (several adapters,
DoRA, another layer type) goes through PEFT's own merge, or returns None so the caller falls back
to ``generate``.
"""

from __future__ import annotations

import torch


def lora_parts(linear):
    """(W, b, B, A, s) with the layer computing x (W + s·B·A)^T + b; B, A None for a plain,
    disabled or merged layer; None when that is not the form (several adapters, DoRA, ...)."""
    if isinstance(linear, torch.nn.Linear) and not hasattr(linear, "base_layer"):
        base = linear
    else:
        base = getattr(linear, "base_layer", None)
        if not isinstance(base, torch.nn.Linear) or not hasattr(linear, "lora_A"):
            return None
    w, b = base.weight.detach(), None if base.bias is None else base.bias.detach()
    if base is linear or getattr(linear, "disable_adapters", False) or getattr(linear, "merged", False):
        return w, b, None, None, 0.0
    names = [n for n in linear.active_adapters if n in linear.lora_A]
    if not names:
        return w, b, None, None, 0.0
    name = names[0]
    if (len(names) > 1 or getattr(linear, "fan_in_fan_out", False)
            or getattr(linear, "use_dora", {}).get(name, False)
            or name in getattr(linear, "lora_variant", {})):
        return None
    A, B = linear.lora_A[name].weight.detach(), linear.lora_B[name].weight.detach()
    return w, b, B.to(w.dtype), A.to(w.dtype), float(linear.scaling[name])


def effective(linear) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(weight, bias) of a plain or PEFT-LoRA linear layer as it computes now (the adapters'
    deltas added); None if unknown (DoRA, other layer types)."""
    p = lora_parts(linear)
    if p is not None:
        w, b, B, A, s = p
        return (w if B is None else torch.addmm(w, B, A, alpha=s)), b
    if (not isinstance(getattr(linear, "base_layer", None), torch.nn.Linear)
            or not hasattr(linear, "lora_A") or getattr(linear, "fan_in_fan_out", False)):
        return None
    w = linear.base_layer.weight.detach()
    delta = None
    for name in linear.active_adapters:            # several active adapters: their sum
        if name not in linear.lora_A:
            continue
        if (getattr(linear, "use_dora", {}).get(name, False)
                or name in getattr(linear, "lora_variant", {})):
            return None
        d = linear.get_delta_weight(name).detach()
        delta = d if delta is None else delta + d
    b = linear.base_layer.bias
    return w + delta.to(w.dtype), None if b is None else b.detach()


def fused(linears, scales, dtype):
    """(weight, bias) of ``linears`` side by side (their outputs concatenated), each layer's
    effective weight (adapter merged) times its scale, in ``dtype`` (None: the weights' own);
    None when a layer is not supported. W + s·B·A is one addmm per layer into a scratch buffer,
    cast straight into the fused copy: no full-size delta, sum or per-layer cast is made (this
    runs once per rollout over the whole model)."""
    parts = [lora_parts(x) for x in linears]
    for i, (lin, p) in enumerate(zip(linears, parts)):
        if p is None:             # several adapters: merged the general way
            e = effective(lin)
            if e is None:
                return None
            parts[i] = (e[0], e[1], None, None, 0.0)
    w0 = parts[0][0]
    dt = dtype or w0.dtype
    if len(parts) == 1 and parts[0][2] is None and scales[0] == 1.0 and dt == w0.dtype:
        return w0, parts[0][1]                      # nothing to merge, cast or fuse
    n_in = w0.shape[1]
    buf = torch.empty((sum(p[0].shape[0] for p in parts), n_in), dtype=dt, device=w0.device)
    scratch = None
    row = 0
    for (w, _, B, A, s), sc in zip(parts, scales):
        n = w.shape[0]
        dst = buf[row:row + n]
        row += n
        if B is None and sc == 1.0:
            dst.copy_(w)
            continue
        if dst.dtype == w.dtype:
            tgt = dst
        else:
            if scratch is None:
                scratch = torch.empty(max(p[0].numel() for p in parts), dtype=w.dtype,
                                      device=w.device)
            tgt = scratch[:w.numel()].view(w.shape)
        if B is None:
            torch.mul(w, sc, out=tgt)
        else:
            torch.addmm(w, B, A, beta=sc, alpha=s * sc, out=tgt)
        if tgt is not dst:
            dst.copy_(tgt)
    if all(p[1] is None for p in parts):
        return buf, None
    bias = torch.cat([(p[1] * sc) if p[1] is not None else
                      torch.zeros(p[0].shape[0], dtype=p[0].dtype, device=p[0].device)
                      for p, sc in zip(parts, scales)])
    return buf, bias.to(dt)
