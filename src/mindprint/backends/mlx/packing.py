"""Padding-free SFT rows on mlx (``data.packing``; rows from
:func:`mindprint.data.packing.best_fit_decreasing`, as on torch).

mlx-lm's model bodies build their own causal mask and take no position ids, so the packed forward
runs the body's parts itself: the token embedding, every block with a block-diagonal causal mask
(each example attends to itself only; the padding tail of a row is a block of its own, so no
softmax row is empty), the final norm. Positions do not restart per example here: RoPE is applied
at the row position, and RoPE attention scores depend only on the distance between query and key
(q·R(m)ᵀR(n)·k = q·R(n−m)·k), which inside a block is the same as in the example's own row; the
values agree up to float rounding. Whether that holds for a given model (plain RoPE, a body of
``embed_tokens`` / ``layers`` / ``norm`` whose blocks take ``(x, mask)``, no extra embedding
scale) is not assumed: :func:`packing_works` compares a packed forward with the padded one once
per model, and a model that fails trains unpacked.

Results come back in the unpacked ``[N, T]`` layout, as on torch, so the methods and losses see
the arrays of an unpacked batch. The first token of every example is never a target.
"""

from __future__ import annotations

import numpy as np

import mlx.core as mx

from ...data.packing import best_fit_decreasing


def packed_batch(seqs: list[list[int]], masks: list[list[int]], rows: list[list[int]],
                 pad_id: int) -> dict:
    """Rows ``input_ids`` ``[R, W]`` of ``seqs`` laid out as ``rows`` (example indices per row,
    e.g. :func:`~mindprint.data.packing.plan_rows`), the block mask ``mask`` ``[R, 1, W, W]``
    (bool, True = attend), for every scored target the flat index of the position predicting
    it (``rows``, into ``[R·W]``), its id (``targets``) and its flat index into the unpacked
    ``[N, T]`` (``unpack``); ``loss_mask`` ``[N, T]`` is the unpacked mask and ``packed_rows``
    the example indices per row."""
    W = max(sum(len(seqs[i]) for i in row) for row in rows)
    T = max(len(s) for s in seqs)
    ids = np.full((len(rows), W), pad_id, dtype=np.int32)
    seg = np.full((len(rows), W), -1, dtype=np.int64)       # -1: the padding tail
    pred, tgt, unpack = [], [], []
    for r, row in enumerate(rows):
        s = 0
        for k, i in enumerate(row):
            L = len(seqs[i])
            ids[r, s:s + L] = seqs[i]
            seg[r, s:s + L] = k
            for j in range(1, L):
                if j < len(masks[i]) and masks[i][j]:
                    pred.append(r * W + s + j - 1)
                    tgt.append(seqs[i][j])
                    unpack.append(i * T + j)
            s += L
    causal = np.tril(np.ones((W, W), dtype=bool))
    block = causal[None] & (seg[:, :, None] == seg[:, None, :])
    lm = np.zeros((len(seqs), T), dtype=np.int32)
    for i, m in enumerate(masks):
        lm[i, :len(m)] = m
    as_i32 = lambda x: mx.array(np.array(x, dtype=np.int32))  # noqa: E731
    return {"input_ids": mx.array(ids), "mask": mx.array(block[:, None]),
            "rows": as_i32(pred), "targets": as_i32(tgt), "unpack": as_i32(unpack),
            "n_rows": len(pred), "out_shape": (len(seqs), T), "loss_mask": mx.array(lm),
            "packed_rows": rows}


def packed_hidden(body, batch: dict) -> mx.array:
    """Last hidden states ``[R, W, d]`` of a :func:`packed_batch` through an mlx-lm body."""
    h = body.embed_tokens(batch["input_ids"])
    for layer in body.layers:
        h = layer(h, batch["mask"])
    return body.norm(h)


def unpacked(batch: dict, values: mx.array) -> mx.array:
    """``[N, T]`` with ``values`` (one per scored target) at their unpacked positions, else 0."""
    N, T = batch["out_shape"]
    return mx.zeros((N * T,), dtype=values.dtype).at[batch["unpack"]].add(values).reshape(N, T)


def body_parts_ok(body) -> bool:
    """The body has the parts :func:`packed_hidden` calls and no sliding-window layer (a block
    mask would replace its window)."""
    if body is None or not all(hasattr(body, n) for n in ("embed_tokens", "layers", "norm")):
        return False
    return not any(getattr(layer, "use_sliding", False) for layer in body.layers)


def probe_batch(vocab: int) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
    """Random sequences (lengths 9, 4, 6, 1, 7), masks and rows of 16 for the backend's check."""
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, vocab, n).tolist() for n in (9, 4, 6, 1, 7)]
    masks = [[0, 0] + [1] * (len(s) - 2) if len(s) > 2 else [1] * len(s) for s in seqs]
    return seqs, masks, best_fit_decreasing([len(s) for s in seqs], 16)


def close(a: mx.array, b: mx.array, dtype) -> bool:
    """Packed equals padded within float32 rounding (5e-2 for half precision)."""
    tol = 1e-3 if dtype == mx.float32 else 5e-2
    return bool(mx.allclose(a.astype(mx.float32), b.astype(mx.float32), rtol=tol, atol=tol).item())
