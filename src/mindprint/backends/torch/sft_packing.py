"""Padding-free SFT rows on torch: several examples per row, block-diagonal causal attention,
positions restarting at 0 for every example (``data.packing``; the row layout is
:func:`mindprint.data.packing.best_fit_decreasing`).

A packed row is a prompt group with an empty prompt: each example is a "branch" that attends to
itself only and whose positions start at 0. So the attention machinery of :mod:`.packing`
(written for prompt-shared preference rows) serves unchanged: :func:`~.packing.group_batch` with
no prompt builds the rows, the position ids and, per the model's attention, either the layout of
:func:`~.packing.group_attention` (``"layout"``: each example's queries against its own keys only,
Σ L² scores instead of W² for a row of W tokens: the CPU path, and SDPA per example on CUDA) or
a 4-D block mask (``"bool"`` for SDPA, ``"float"`` for eager). Models that honour neither
(flash-attention-2 builds, soft-capped logits, an unusual head) train unpacked:
:func:`packing_works` decides once per model, by comparing a packed forward with the padded one.

Results come back in the unpacked ``[N, T]`` layout (example ``i``, position ``j``), so the
methods and losses see exactly the arrays of an unpacked batch: the same per-example sums, the
same token-weighted loss, the same gradient (up to float summation order).

The first token of every example predicts nothing (in a padded row it is position 0): its mask
bit is kept in ``loss_mask`` (token counts are those of the unpacked batch) but it never selects
a target, as :func:`~.logps.token_logps` never scores position 0.
"""

from __future__ import annotations

import torch

from ...data.packing import best_fit_decreasing
from .logps import _adapter_off, _RowKL, decoder_and_head, selected_logps, to_batch, token_logps
from .packing import group_batch, group_hidden, group_kind


def packed_batch(seqs: list[list[int]], masks: list[list[int]], rows: list[list[int]],
                 pad_id: int, device, kind: str) -> dict:
    """:func:`~.packing.group_batch` rows of ``seqs`` (``rows``: example indices per row, e.g.
    :func:`~mindprint.data.packing.plan_rows`), plus ``loss_mask`` ``[N, T]`` (the unpacked one),
    ``unpack`` (for every scored target, in group_batch's order, its flat index into ``[N, T]``),
    ``out_shape`` and ``packed_rows`` (= ``rows``)."""
    # the first token of an example has no prediction inside its block: never a target
    tmask = [[0] + list(m[1:]) for m in masks]
    gb = group_batch([([], [(seqs[i], tmask[i]) for i in row]) for row in rows], pad_id, device,
                     kind)
    T = max(len(s) for s in seqs)
    unpack = [i * T + j for row in rows for i in row for j, m in enumerate(tmask[i]) if m]
    lm = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, m in enumerate(masks):
        lm[i, :len(m)] = torch.tensor(m, dtype=torch.long)
    gb.update(loss_mask=lm.to(device), out_shape=(len(seqs), T), packed_rows=rows,
              unpack=torch.tensor(unpack, dtype=torch.long, device=device))
    return gb


def _unpacked(batch: dict, values: torch.Tensor) -> torch.Tensor:
    """``[N, T]`` with ``values`` (one per scored target) at their unpacked positions, else 0."""
    N, T = batch["out_shape"]
    out = torch.zeros(N * T, dtype=values.dtype, device=values.device)
    return out.index_put((batch["unpack"],), values).view(N, T)


def packed_token_logps(model, batch: dict) -> torch.Tensor:
    """``[N, T]`` target log-probs of a :func:`packed_batch` (as :func:`~.logps.token_logps` of
    the unpacked batch)."""
    body, head = decoder_and_head(model)
    hidden = group_hidden(model, batch, body)
    sel = selected_logps(hidden[batch["rows"], batch["pred"]], head.weight, head.bias,
                         batch["targets"])
    return _unpacked(batch, sel)


def packed_token_logps_and_kl(model, batch: dict, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logps, τ²·KL(base ‖ tuned))``, each ``[N, T]``, of a :func:`packed_batch` (as
    :func:`~.logps.token_logps_and_kl`; the base pass is packed the same way)."""
    body, head = decoder_and_head(model)
    at = (batch["rows"], batch["pred"])
    with torch.no_grad(), _adapter_off(model):
        base_rows = group_hidden(model, batch, body)[at]
    rows = group_hidden(model, batch, body)[at]
    sel = selected_logps(rows, head.weight, head.bias, batch["targets"])
    kl = _RowKL.apply(rows, base_rows, head.weight, head.bias, float(tau), 512)
    return _unpacked(batch, sel), _unpacked(batch, kl)


def packing_kind(model) -> str | None:
    """How packed rows are attended (:func:`~.packing.group_kind`), or None when this model's
    logits are not a plain projection of a decoder body (then SFT trains unpacked)."""
    if decoder_and_head(model)[0] is None:
        return None
    return group_kind(model)


@torch.no_grad()
def packing_works(model, pad_id: int, device) -> bool:
    """Check once that packed rows give the padded rows' log-probs on this model (it honours the
    block mask / per-example layout and the restarting position ids)."""
    kind = packing_kind(model)
    if kind is None:
        return False
    vocab = model.get_input_embeddings().weight.shape[0]
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, vocab, (n,), generator=g).tolist() for n in (9, 4, 6, 1, 7)]
    masks = [[0] * 2 + [1] * (len(s) - 2) if len(s) > 2 else [1] * len(s) for s in seqs]
    was_training = model.training
    model.eval()
    try:
        rows = best_fit_decreasing([len(s) for s in seqs], 16)
        a = packed_token_logps(model, packed_batch(seqs, masks, rows, pad_id, device, kind))
        b = to_batch(seqs, masks, pad_id, device)
        ref = token_logps(model, b["input_ids"], b["attention_mask"], b["loss_mask"])
    except Exception:   # noqa: BLE001 - any refusal of the mask or layout means: unpacked
        return False
    finally:
        model.train(was_training)
    half = next(model.parameters()).dtype != torch.float32
    tol = 5e-2 if half else 1e-3
    return bool(torch.allclose(a, ref, rtol=tol, atol=tol))
