"""Streaming batched decoding on the fast sampler's merged weights (for serving and chat).

:class:`~.sampling.FastSampler` holds one model state with the adapter folded in (static KV cache,
fused q|k|v and gate|up products, bf16 where native); GRPO uses it for whole completions.
:func:`decode` runs the same model forward for up to a handful of *independent* requests at once
and hands every new token to a callback as soon as it is chosen, so a server can stream it:

* each row has its own prompt, token budget, temperature, top-p and seed (a private
  ``torch.Generator`` per row: a seeded row draws the same uniforms however it is batched);
* prompts are left-padded to one width and prefilled in one forward pass (the padding is masked
  out of every attention, and positions count from each prompt's first real token);
* a row ends at an end-of-turn token, at its budget, or when the callback says so (a stop string
  was seen, the client went away); ended rows are dropped from the batch as it thins out, as in
  the GRPO sampler.

Invariant: the callback sees row ``i``'s tokens in order, each once, ending with the end-of-turn
token when that is how the row ended; nothing is called for a row after it ended. The callback
runs on the decoding thread between steps; what it does is up to the caller.

Rows join only at the start: a request arriving while a batch decodes waits for the next one
(continuous batching would need per-row cache offsets).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .sampling import FastSampler, _pick

EOS, LENGTH, STOPPED = "eos", "length", "stopped"


@dataclass
class Row:
    """One request's decoding settings (``temperature`` 0: greedy)."""

    prompt: list[int]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0


@torch.inference_mode()
def decode(sampler: FastSampler, rows: list[Row], *, eos: list[int], pad: int,
           on_token: Callable[[int, int], bool]) -> list[tuple[int, str]]:
    """Decode ``rows`` together; ``on_token(i, token_id)`` returns False to end row ``i`` there.
    Returns per row ``(tokens generated, how it ended)``: :data:`EOS`, :data:`LENGTH` or
    :data:`STOPPED` (the callback ended it)."""
    if not rows:
        return []
    s = sampler
    dev = s.head_w.device
    B = len(rows)
    width = max(len(r.prompt) for r in rows)
    budget = max(r.max_new_tokens for r in rows)
    total = width + budget
    ids = torch.full((B, width), pad, dtype=torch.long)
    valid = torch.zeros((B, total), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, width - len(r.prompt):] = torch.tensor(r.prompt, dtype=torch.long)
        valid[i, width - len(r.prompt):width] = True
    lens = torch.tensor([len(r.prompt) for r in rows], dtype=torch.long, device=dev)
    ids, valid = ids.to(dev), valid.to(dev)
    pos = (torch.arange(width, device=dev)[None] - (width - lens)[:, None]).clamp(min=0)
    cache = [(torch.zeros((B, s.nkv, s.hd, total), dtype=s.dtype, device=dev),
              torch.zeros((B, s.nkv, total, s.hd), dtype=s.dtype, device=dev))
             for _ in s.layers]
    causal = torch.ones((width, width), dtype=torch.bool, device=dev).tril()
    allowed = (causal[None] & valid[:, None, :width])[:, None]
    allowed = allowed | ~valid[:, None, :width, None]      # padding rows attend somewhere
    logits = s._logits(s._forward(ids, pos, cache, 0, allowed)[:, -1])
    gens = []
    for r in rows:
        g = torch.Generator(device=dev)
        g.manual_seed(int(r.seed))
        gens.append(g)
    eos_set = set(eos)
    live = list(range(B))                  # original row of each batch row
    done: dict[int, tuple[int, str]] = {}
    for t in range(budget):
        toks = _pick_rows(logits, [rows[i] for i in live], [gens[i] for i in live]).tolist()
        keep = []
        for j, (i, tok) in enumerate(zip(live, toks)):
            go = on_token(i, tok)
            if tok in eos_set:
                done[i] = (t + 1, EOS)
            elif not go:
                done[i] = (t + 1, STOPPED)
            elif t + 1 >= rows[i].max_new_tokens:
                done[i] = (t + 1, LENGTH)
            else:
                keep.append(j)
        if not keep:
            break
        if len(keep) < len(live):          # drop ended rows (a cache row per live request)
            idx = torch.tensor(keep, dtype=torch.long, device=dev)
            live = [live[j] for j in keep]
            toks = [toks[j] for j in keep]
            valid, lens = valid[idx], lens[idx]
            cache = [(k[idx], v[idx]) for k, v in cache]
        col = width + t
        valid[:, col] = True
        neg = torch.zeros((len(live), 1, col + 1), dtype=torch.float32, device=dev)
        neg.masked_fill_(~valid[:, None, :col + 1], float("-inf"))
        tok_t = torch.tensor(toks, dtype=torch.long, device=dev)[:, None]
        h = s._forward(tok_t, (lens + t)[:, None], cache, col, neg)
        logits = s._logits(h[:, -1])
    return [done[i] for i in range(B)]


def _pick_rows(logits: torch.Tensor, rows: list[Row], gens: list) -> torch.Tensor:
    """One token per row: greedy rows by argmax together, sampled rows each with its own
    settings and generator (:func:`~.sampling._pick`)."""
    out = logits.argmax(-1)
    for j, (r, g) in enumerate(zip(rows, gens)):
        if r.temperature > 0:
            out[j] = _pick(logits[j:j + 1], r.temperature, r.top_p, g)[0]
    return out
