"""Batched, KV-cached sampling for GRPO rollouts on MLX.

The same contract as the torch sampler (:func:`mindprint.backends.torch.generate.sample_completions`): ``n``
completions per prompt, prompt after prompt, each ``(ids up to and including the first end-of-turn
token, finished)``, seeded without touching the global random stream, ``temperature = 0`` greedy.

How: every prompt is prefilled once into its own cache from mlx-lm's ``make_prompt_cache`` (no
padding inside a prefill, so a prompt's keys are exactly those of an unbatched run); the caches are
then merged ``n`` times each into one batch cache by mlx-lm's own ``merge`` (``BatchKVCache``:
left padding, a per-row RoPE offset and a padding-aware causal mask), and the batch decodes one
token per step for every live row. Rows that have emitted end-of-turn leave the batch
(``BatchKVCache.filter``), so late steps only pay for the rows still writing. The LoRA layers stay
as they are (mlx-lm's own layers, eval mode: no dropout).
"""

from __future__ import annotations

import mlx.core as mx

from ...errors import ModelError


def pick(logits: mx.array, temperature: float, top_p: float, key: mx.array) -> mx.array:
    """One token per row of ``logits`` ``[B, V]`` from softmax(logits / temperature), restricted to
    the smallest set of most likely tokens whose probability reaches ``top_p``; argmax when
    ``temperature <= 0``. Inverse-CDF sampling: one uniform per row against the cumulative sum (the
    index is the number of CDF entries at or below it)."""
    if temperature <= 0:
        return mx.argmax(logits, axis=-1)
    probs = mx.softmax(logits.astype(mx.float32) / temperature, axis=-1)
    order = None
    if top_p < 1.0:
        order = mx.argsort(-probs, axis=-1)
        probs = mx.take_along_axis(probs, order, axis=-1)
        probs = mx.where(mx.cumsum(probs, axis=-1) - probs > top_p, 0.0, probs)
    cdf = mx.cumsum(probs, axis=-1)
    u = mx.random.uniform(shape=(probs.shape[0], 1), key=key) * cdf[:, -1:]
    idx = mx.minimum(mx.sum(cdf <= u, axis=-1), probs.shape[-1] - 1)
    if order is None:
        return idx
    return mx.take_along_axis(order, idx[:, None], axis=-1).squeeze(-1)


def _merged(caches: list[list], n: int) -> list:
    """One batch cache per layer: each prompt's cache repeated ``n`` times (row r = prompt r // n)."""
    out = []
    for layer in range(len(caches[0])):
        first = caches[0][layer]
        if not hasattr(first, "merge"):
            raise ModelError(f"GRPO sampling on mlx needs a batchable KV cache; this model's "
                             f"{type(first).__name__} has no merge (use backend: torch)")
        out.append(type(first).merge([c[layer] for c in caches for _ in range(n)]))
    return out


def sample_completions(model, prompts: list[list[int]], *, n: int, max_new_tokens: int,
                       temperature: float, top_p: float, seed: int, eos: list[int]
                       ) -> list[tuple[list[int], bool]]:
    """``n`` completions per prompt (see the module docstring)."""
    from mlx_lm.models.cache import make_prompt_cache

    if not prompts or max_new_tokens <= 0:
        return [([], False) for _ in prompts for _ in range(n)]
    eos_set = set(eos)
    was_training = model.training
    model.eval()
    try:
        caches, last = [], []
        for p in prompts:
            c = make_prompt_cache(model)
            logits = model(mx.array([p], dtype=mx.int32), cache=c)[:, -1]
            mx.eval(logits, [x.state for x in c])
            caches.append(c)
            last.append(logits)
        cache = _merged(caches, n)
        del caches
        logits = mx.concatenate([x for x in last for _ in range(n)], axis=0)
        B = len(prompts) * n
        out: list[list[int]] = [[] for _ in range(B)]
        finished = [False] * B
        live = list(range(B))                  # original row of each batch row
        key = mx.random.key(seed)
        for t in range(max_new_tokens):
            key, sub = mx.random.split(key)
            tok = pick(logits, temperature, top_p, sub)
            keep = []
            for j, (r, x) in enumerate(zip(live, tok.tolist())):
                out[r].append(x)
                if x in eos_set:
                    finished[r] = True
                else:
                    keep.append(j)
            if not keep or t == max_new_tokens - 1:
                break
            if len(keep) < len(live):          # finished rows leave the batch
                idx = mx.array(keep, dtype=mx.int32)
                for c in cache:
                    c.filter(idx)
                tok = tok[idx]
                live = [live[j] for j in keep]
            logits = model(tok[:, None].astype(mx.int32), cache=cache)[:, -1]
            mx.eval(logits)
    finally:
        model.train(was_training)
    return [(ids, done) for ids, done in zip(out, finished)]
