"""Chat generation on mlx: mlx-lm's KV-cached ``generate_step`` with its sampler, one prompt at a
time, stopping at end-of-turn (GRPO's batched rollouts are :mod:`.sampling`)."""

from __future__ import annotations

import mlx.core as mx
from mlx_lm.generate import generate_step
from mlx_lm.sample_utils import make_sampler

from ...data.render import end_of_turn_ids, render_text


def generate_ids(model, tok, prompts: list[list[dict]], *, max_new_tokens: int = 200,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int = 0) -> list[list[int]]:
    """New token ids per chat prompt (KV-cached, one prompt at a time), ending at end-of-turn."""
    mx.random.seed(seed)
    eos = set(end_of_turn_ids(tok))
    sampler = make_sampler(temp=temperature, top_p=top_p if temperature > 0 else 0.0)
    was_training = model.training
    model.eval()
    out = []
    try:
        for p in prompts:
            ids = tok(render_text(tok, p, add_generation_prompt=True),
                      add_special_tokens=False)["input_ids"]
            new = []
            for token, _ in generate_step(mx.array(ids), model, max_tokens=max_new_tokens,
                                          sampler=sampler):
                t = int(token)
                new.append(t)
                if t in eos:
                    break
            out.append(new)
    finally:
        model.train(was_training)
    return out


def generate(model, tok, prompts, *, max_new_tokens: int = 200, temperature: float = 0.0,
             top_p: float = 1.0, seed: int = 0, stats: dict | None = None) -> list[str]:
    new = generate_ids(model, tok, prompts, max_new_tokens=max_new_tokens,
                       temperature=temperature, top_p=top_p, seed=seed)
    if stats is not None:
        stats["new_tokens"] = [len(n) for n in new]
    return [tok.decode(n, skip_special_tokens=True).strip() for n in new]
