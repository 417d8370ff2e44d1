"""Generation: chat answers (``generate``, transformers' KV-cached decoding) and GRPO rollouts
(``sample_completions``: the fast static-cache sampler of :mod:`.sampling` where it covers the
model, ``generate`` on a left-padded batch otherwise)."""

from __future__ import annotations

import torch

from ...data.records import Messages
from ...data.render import end_of_turn_ids, render_text
from ...errors import DataError
from ...progress import TrainProgress
from .load import load_for_inference
from .sampling import fast_sampler


@torch.no_grad()
def generate(model, tok, prompts: list[list[dict]], *, max_new_tokens: int = 200,
             temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
             stats: dict | None = None) -> list[str]:
    """Batched, KV-cached generation from chat prompts; stops at end-of-turn.

    ``stats``, when given, receives ``new_tokens``: the tokens generated per prompt (end-of-turn
    included, padding after it not).
    """
    torch.manual_seed(seed)
    texts = [render_text(tok, p, add_generation_prompt=True) for p in prompts]
    old_side = tok.padding_side
    tok.padding_side = "left"
    try:
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tok.padding_side = old_side
    dev = next(model.parameters()).device
    enc = {k: v.to(dev) for k, v in enc.items()}
    eos = end_of_turn_ids(tok)
    kwargs = dict(max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=tok.pad_token_id)
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    out = model.generate(**enc, **kwargs)
    new = out[:, enc["input_ids"].shape[1]:]
    if stats is not None:
        ends = [[j for j, t in enumerate(row) if t in eos] for row in new.tolist()]
        stats["new_tokens"] = [e[0] + 1 if e else new.shape[1] for e in ends]
    return [tok.decode(row, skip_special_tokens=True).strip() for row in new]


@torch.no_grad()
def sample_completions(model, tok, prompts: list[list[int]], *, n: int, max_new_tokens: int,
                       temperature: float, top_p: float, seed: int,
                       synced: bool = False, fast: bool = True,
                       dtype: torch.dtype | None = None) -> list[tuple[list[int], bool]]:
    """``n`` completions per prompt (prompt after prompt): ``(ids, finished)`` with the ids cut
    after the first end-of-turn token (kept: the model learns to stop); ``finished`` is False when
    max_new_tokens ran out first. One batch for all prompts × n, static KV cache, adapter merged
    (:mod:`.sampling`); models it does not cover use ``generate`` on a
    left-padded batch (also with ``fast=False``); ``dtype`` casts the fast sampler's weights
    (``grpo.sampler_dtype``: bfloat16 halves the memory read per decoded token; ``generate`` keeps
    the model's dtype). Seeded without disturbing the global random stream. ``temperature = 0``
    decodes greedily. ``synced``: under FSDP every rank keeps stepping until all ranks are done
    (each step is a collective)."""
    dev = next(model.parameters()).device
    pad = tok.pad_token_id
    width = max(len(p) for p in prompts)
    rows = [p for p in prompts for _ in range(n)]
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    att = torch.zeros((len(rows), width), dtype=torch.long)
    for i, p in enumerate(rows):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        att[i, width - len(p):] = 1
    eos = end_of_turn_ids(tok)
    sampler = fast_sampler(model, dtype) if fast and not synced else None
    if sampler is not None:
        return sampler.sample(prompts, n=n, max_new_tokens=max_new_tokens, temperature=temperature,
                           top_p=top_p, seed=seed, eos=eos, pad=pad)
    kw = dict(max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad, use_cache=True)
    if synced:
        kw["synced_gpus"] = True
    if temperature > 0:
        kw.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
    else:
        kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    was_training = model.training
    model.eval()
    devices = [dev] if dev.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = model.generate(input_ids=ids.to(dev), attention_mask=att.to(dev), **kw)
    finally:
        model.train(was_training)
    result = []
    eos_set = set(eos)
    for row in out[:, width:].tolist():
        end = next((j for j, t in enumerate(row) if t in eos_set), None)
        result.append((row[:end + 1], True) if end is not None else (row, False))
    return result


class BaseAnswers:
    """A model's greedy answers to chat prompts, a batch at a time, with progress on stderr:
    the other side of the pairs ``data convert`` and ``data synth`` write (satisfies
    :class:`mindprint.data.convert.Answers`). ``total`` is how many prompts will be asked."""

    def __init__(self, model_spec: str | None, *, max_new_tokens: int, batch_size: int,
                 device: str, total: int):
        if max_new_tokens < 1 or batch_size < 1:
            raise DataError("--max-new-tokens and --batch-size must be at least 1")
        self.model, self.tok, ref = load_for_inference(model_spec, None, device=device)
        self.name = (f"the base model's answers with {ref.spec} "
                     f"(greedy, up to {max_new_tokens} new tokens)")
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.progress = TrainProgress(total, desc="generate")
        self.done = 0

    def __call__(self, prompts: list[Messages]) -> list[str]:
        chats = [[m.as_dict() for m in p] for p in prompts]
        answers = generate(self.model, self.tok, chats, max_new_tokens=self.max_new_tokens)
        self.done += len(prompts)
        self.progress.update(self.done)
        return answers

    def close(self) -> None:
        self.progress.close()
