"""Log-probs of target tokens through the LM head, without a full-vocabulary tensor per position.

Only the positions that predict a trained token reach the head, a chunk of rows at a time, with
hand-written backwards (:class:`_SelectedLogps` for log-probs, :class:`_RowKL` for the KL to the
adapter-free base), so no ``[rows, vocab]`` tensor outlives its chunk. Models whose logits are not a
plain projection (soft-capping, logit scale) take their own logits instead.

Shapes: a batch is right-padded ``input_ids`` / ``attention_mask`` / ``loss_mask`` ``[B, T]``
(:func:`to_batch`); results are ``[B, T]`` float32 with 0 where ``loss_mask`` is 0 and at position 0.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from ...losses import xp as xpmod
from ...losses.kl import kl_to_base
from .onednn import linear, linear_dx


def decoder_and_head(model):
    """The transformer body and the output projection, when logits are a plain projection."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = base.config
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None):
        return None, None
    head = base.get_output_embeddings()
    body = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, "model", None)
    if body is None or head is None or not isinstance(head, torch.nn.Linear):
        return None, None
    return body, head


# Softmax rows kept from the forward pass for the backward when they fit in this many bytes;
# larger batches recompute them chunk by chunk instead (one more LM-head matmul, flat memory).
KEEP_PROBS_BYTES = 256 * 2**20


class _SelectedLogps(torch.autograd.Function):
    """log softmax(h W^T + b)[target] per row, a chunk of rows at a time, with a hand-written
    backward: d/dlogits = g·(onehot − softmax). Only the trained rows are ever projected. When
    their softmax fits in ``KEEP_PROBS_BYTES`` it is kept for the backward (saves a third of the
    LM-head arithmetic); otherwise the backward recomputes each chunk's logits, so no
    ``[rows, vocab]`` tensor outlives its chunk. ``entropy_out``, when given, receives each row's
    entropy −Σ p log p (no gradient) from the same logits."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk, entropy_out=None):
        n = hidden.shape[0]
        keep = any(ctx.needs_input_grad[:3]) and n * weight.shape[0] * 4 <= KEEP_PROBS_BYTES
        out = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty(n, dtype=torch.float32, device=hidden.device)
        probs = []
        for s in range(0, n, chunk):
            e = min(s + chunk, n)
            logits = linear(hidden[s:e], weight, bias)
            # one fused log-softmax pass, then exp once for both the entropy and the backward
            # (this tensor is [rows, vocab]: every extra pass over it costs)
            z = torch.log_softmax(logits, dim=-1, dtype=torch.float32)
            out[s:e] = z.gather(-1, targets[s:e, None]).squeeze(-1)
            lse[s:e] = logits[:, 0].float() - z[:, 0]
            if entropy_out is not None or keep:
                p = z.exp()
                if entropy_out is not None:
                    entropy_out[s:e] = -torch.linalg.vecdot(p, z)
                if keep:
                    probs.append(p)
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.chunk, ctx.probs = chunk, probs if keep else None
        dev = hidden.device.type
        # under autocast the logits' products ran in its dtype: so do the backward's
        ctx.amp = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
        return out

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        gh = torch.empty_like(hidden) if need_h else None
        gw = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        gb = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
        grad = grad.float()
        w_h = weight if ctx.amp is None or not need_h else weight.to(ctx.amp)
        for i, s in enumerate(range(0, hidden.shape[0], ctx.chunk)):
            h, g = hidden[s:s + ctx.chunk], grad[s:s + ctx.chunk, None]
            if ctx.probs is not None:
                d = ctx.probs[i].mul_(-g)
            else:
                d = linear(h, weight, bias).float().sub_(lse[s:s + ctx.chunk, None]).exp_().mul_(-g)
            d.scatter_add_(-1, targets[s:s + ctx.chunk, None], g)      # g·(onehot − softmax)
            if need_h:
                gh[s:s + ctx.chunk] = linear_dx(d.to(w_h.dtype), w_h)
            if need_w:
                gw += d.t() @ h.float()
            if need_b:
                gb += d.sum(0)
        ctx.probs = None
        return (gh, gw.to(weight.dtype) if need_w else None, gb.to(bias.dtype) if need_b else None,
                None, None, None)


def selected_logps(hidden: torch.Tensor, weight: torch.Tensor, bias, targets: torch.Tensor,
                    chunk: int = 512, entropy_out: torch.Tensor | None = None) -> torch.Tensor:
    """log softmax(h W^T)[target] for the rows that are trained on (see :class:`_SelectedLogps`)."""
    return _SelectedLogps.apply(hidden, weight, bias, targets, chunk, entropy_out)


def token_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                loss_mask: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` log p(token_t | tokens_<t) where ``loss_mask`` is 1, else 0.

    Position 0 has no prediction and is always 0. Logits are computed only at trained positions.
    """
    target_mask = loss_mask[:, 1:].bool()
    out = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    body, head = decoder_and_head(model)
    if body is None:   # unusual heads (soft-capping, logit scale): the model's own logits
        logits = model(use_cache=False, input_ids=input_ids,
                       attention_mask=attention_mask).logits[:, :-1]
        lp = torch.log_softmax(logits.float(), dim=-1)
        sel = lp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
        out[:, 1:] = torch.where(target_mask, sel, torch.zeros_like(sel))
        return out
    hidden = body(use_cache=False, input_ids=input_ids,
                  attention_mask=attention_mask).last_hidden_state
    rows = hidden[:, :-1][target_mask]
    tgt = input_ids[:, 1:][target_mask]
    return scatter_targets(target_mask, selected_logps(rows, head.weight, head.bias, tgt))


def scatter_targets(target_mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` with ``values`` (one per trained position, row-major) at positions 1..T-1."""
    B = target_mask.shape[0]
    inner = torch.zeros(target_mask.shape, dtype=values.dtype, device=values.device)
    inner = inner.masked_scatter(target_mask, values)
    return torch.cat([torch.zeros(B, 1, dtype=values.dtype, device=values.device), inner], dim=1)


class _RowKL(torch.autograd.Function):
    """τ²·KL(softmax(h_base W^T/τ) ‖ softmax(h W^T/τ)) per row, a chunk of rows at a time (the
    formula is :func:`mindprint.losses.kl.kl_to_base`). The backward recomputes each chunk:
    ∂/∂logits = τ·g·(p_tuned − p_base), so neither full-vocabulary distribution is kept between
    the passes. ``base_hidden`` is a constant (the adapter-free model's, computed without grad)."""

    @staticmethod
    def forward(ctx, hidden, base_hidden, weight, bias, tau, chunk):
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        for s in range(0, hidden.shape[0], chunk):
            lt = torch.log_softmax(linear(hidden[s:s + chunk], weight, bias).float() / tau, -1)
            lb = torch.log_softmax(linear(base_hidden[s:s + chunk], weight, bias).float() / tau, -1)
            out[s:s + chunk] = (lb.exp() * (lb - lt)).sum(-1) * (tau * tau)
        ctx.save_for_backward(hidden, base_hidden, weight, bias)
        ctx.tau, ctx.chunk = tau, chunk
        return out

    @staticmethod
    def backward(ctx, grad):
        hidden, base_hidden, weight, bias = ctx.saved_tensors
        tau, chunk = ctx.tau, ctx.chunk
        need_h, _, need_w, need_b = ctx.needs_input_grad[:4]
        gh = torch.empty_like(hidden) if need_h else None
        gw = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        gb = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
        grad = grad.float()
        for s in range(0, hidden.shape[0], chunk):
            h = hidden[s:s + chunk]
            pt = torch.softmax(linear(h, weight, bias).float() / tau, -1)
            pb = torch.softmax(linear(base_hidden[s:s + chunk], weight, bias).float() / tau, -1)
            d = pt.sub_(pb).mul_(grad[s:s + chunk, None] * tau)
            if need_h:
                gh[s:s + chunk] = linear_dx(d.to(weight.dtype), weight)
            if need_w:
                gw += d.t() @ h.float()
            if need_b:
                gb += d.sum(0)
        return (gh, None, gw.to(weight.dtype) if need_w else None,
                gb.to(bias.dtype) if need_b else None, None, None)


def _adapter_off(model):
    return model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()


def token_logps_and_kl(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       loss_mask: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logps, kl)``, each ``[B, T]`` and 0 where ``loss_mask`` is 0: the target log-probs of
    :func:`token_logps` and, at the same positions, τ²·KL(base ‖ tuned) of the next-token
    distributions, the base being this model with its adapter off (one extra no-grad forward)."""
    target_mask = loss_mask[:, 1:].bool()
    tgt = input_ids[:, 1:][target_mask]
    body, head = decoder_and_head(model)
    if body is None:   # unusual heads: full logits at the trained positions
        with torch.no_grad(), _adapter_off(model):
            base = model(use_cache=False, input_ids=input_ids,
                         attention_mask=attention_mask).logits[:, :-1][target_mask]
        logits = model(use_cache=False, input_ids=input_ids,
                       attention_mask=attention_mask).logits[:, :-1][target_mask]
        sel = torch.log_softmax(logits.float(), -1).gather(-1, tgt[:, None]).squeeze(-1)
        kl = kl_to_base(logits.float(), base.float(), tau, xpmod.get("torch"))
    else:
        with torch.no_grad(), _adapter_off(model):
            base_rows = body(use_cache=False, input_ids=input_ids,
                             attention_mask=attention_mask).last_hidden_state[:, :-1][target_mask]
        rows = body(use_cache=False, input_ids=input_ids,
                    attention_mask=attention_mask).last_hidden_state[:, :-1][target_mask]
        sel = selected_logps(rows, head.weight, head.bias, tgt)
        kl = _RowKL.apply(rows, base_rows, head.weight, head.bias, float(tau), 512)
    return scatter_targets(target_mask, sel), scatter_targets(target_mask, kl)

def to_batch(seqs: list[list[int]], masks: list[list[int]], pad_id: int, device) -> dict:
    """Right-padded tensors: input_ids, attention_mask, loss_mask."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(seqs), width), dtype=torch.long)
    lm = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s, m) in enumerate(zip(seqs, masks)):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        att[i, :len(s)] = 1
        lm[i, :len(m)] = torch.tensor(m, dtype=torch.long)
    return {"input_ids": ids.to(device), "attention_mask": att.to(device), "loss_mask": lm.to(device)}


# -- model passes ------------------------------------------------------------------------------


def completion_logps(model, batch: dict, temperature: float = 1.0, *, entropy: bool = False):
    """``([B, T] log-probs at loss_mask positions (0 elsewhere), entropy sum or None)`` of the
    tokens under softmax(logits / temperature). Only completion rows reach the LM head (chunked);
    the entropy, when asked for, is computed from the same rows without gradient."""
    ids, att = batch["input_ids"], batch["attention_mask"]
    target_mask = batch["loss_mask"][:, 1:].bool()
    tgt = ids[:, 1:][target_mask]
    body, head = decoder_and_head(model)
    ent = None
    if body is None:     # unusual heads: the model's own logits
        logits = model(input_ids=ids, attention_mask=att).logits[:, :-1][target_mask].float()
        lp = torch.log_softmax(logits / temperature, -1)
        sel = lp.gather(-1, tgt[:, None]).squeeze(-1)
        if entropy:
            with torch.no_grad():
                ent = float(-(lp.exp() * lp).sum())
        return scatter_targets(target_mask, sel), ent
    rows = body(input_ids=ids, attention_mask=att).last_hidden_state[:, :-1][target_mask]
    w, b = head.weight, head.bias
    if temperature != 1.0:
        rows = rows / temperature
        b = None if b is None else b / temperature
    sel = selected_logps(rows, w, b, tgt)
    if entropy:
        with torch.no_grad():
            ent = 0.0
            for s in range(0, rows.shape[0], 512):
                lp = torch.log_softmax(F.linear(rows[s:s + 512].detach(), w, b).float(), -1)
                ent += float(-(lp.exp() * lp).sum())
    return scatter_targets(target_mask, sel), ent

