"""The metrics that need a model: answers (+ tokens/s), voice fidelity, perplexity, preference
accuracy. Each takes a loaded model; "base" is the same model under ``disable_adapter()``, so
base and tuned never need two copies in memory."""

from __future__ import annotations

import contextlib
import math
import time

import torch

from ..data.render import render_chat_records
from ..measures.embed import cosine_pairs


def variant(model, name: str):
    """Context in which ``model`` acts as ``name``: "base" switches a PEFT adapter off."""
    if name == "base" and hasattr(model, "disable_adapter"):
        return model.disable_adapter()
    return contextlib.nullcontext()


def answer(model, tok, items, *, max_new_tokens: int, temperature: float = 0.0,
           top_p: float = 1.0, seed: int = 0, batch_size: int = 8) -> dict:
    """Answers to ``items`` (PromptItems) in order, generated tokens per answer, and speed."""
    from ..backends.torch.generate import generate

    answers, tokens = [], []
    t0 = time.perf_counter()
    for s in range(0, len(items), batch_size):
        chunk = items[s:s + batch_size]
        stats: dict = {}
        answers += generate(model, tok, [it.prompt for it in chunk], max_new_tokens=max_new_tokens,
                            temperature=temperature, top_p=top_p, seed=seed + s, stats=stats)
        tokens += stats["new_tokens"]
    secs = time.perf_counter() - t0
    return {"answers": answers, "new_tokens": tokens, "seconds": secs,
            "tokens_per_s": sum(tokens) / secs if secs > 0 else None}


def content_similarity(answers: list[str], references: list[str | None]) -> tuple[float | None, list]:
    """Mean cosine similarity of answer and reference embeddings (pairs with a reference): how
    close in *content* an answer is to the reference (formerly ``voice_fidelity``; the voice
    itself is :mod:`mindprint.measures.voice`'s score)."""
    idx = [i for i, r in enumerate(references) if r is not None]
    sims: list = [None] * len(answers)
    if not idx:
        return None, sims
    got = cosine_pairs([answers[i] for i in idx], [references[i] for i in idx])
    for i, s in zip(idx, got):
        sims[i] = s
    return sum(got) / len(got), sims


@torch.no_grad()
def perplexity(model, tok, records, *, max_length: int, batch_size: int = 8) -> dict:
    """exp(token-weighted NLL of the assistant tokens) over held-out chat records."""
    from ..backends.torch.logps import to_batch, token_logps

    rendered, _ = render_chat_records(tok, records, max_length)
    dev = next(model.parameters()).device
    samples, nll_sum, n_tok = [], 0.0, 0
    for s in range(0, len(rendered), batch_size):
        chunk = rendered[s:s + batch_size]
        b = to_batch([r.input_ids for r in chunk], [r.loss_mask for r in chunk],
                     tok.pad_token_id, dev)
        lp = token_logps(model, b["input_ids"], b["attention_mask"], b["loss_mask"])
        for i, r in enumerate(chunk):
            nll = -float(lp[i].sum())
            samples.append({"nll": nll / max(r.n_target, 1), "tokens": r.n_target,
                            "perplexity": math.exp(min(nll / max(r.n_target, 1), 50.0))})
            nll_sum += nll
            n_tok += r.n_target
    mean_nll = nll_sum / max(n_tok, 1)
    return {"perplexity": math.exp(min(mean_nll, 50.0)), "nll": mean_nll, "tokens": n_tok,
            "samples": samples}


@torch.no_grad()
def preference_logps(model, tok, records, *, max_length: int, batch_size: int = 8) -> dict:
    """Summed log-probs and token counts of chosen and rejected, per pair, under ``model``."""
    from ..backends.torch.backend import TorchBackend
    from ..methods.groups import pair_items, render_groups

    groups, notes = render_groups(tok, pair_items(records), max_length, 1.0, "eval.preference")
    backend = TorchBackend(model, tok)
    out = {"where": [g.where for g in groups], "chosen": [], "rejected": [],
           "chosen_tokens": [], "rejected_tokens": [], "notes": notes}
    for s in range(0, len(groups), batch_size):
        sums, counts = backend.group_logps([g.packed() for g in groups[s:s + batch_size]])
        out["chosen"] += sums[:, 0].tolist()
        out["rejected"] += sums[:, 1].tolist()
        out["chosen_tokens"] += counts[:, 0].tolist()
        out["rejected_tokens"] += counts[:, 1].tolist()
    return out


def preference_accuracy(policy: dict, reference: dict | None = None) -> dict:
    """Accuracy of a model on pairs.

    * ``logp_accuracy``: log p(chosen) > log p(rejected) (summed over tokens);
    * ``avg_logp_accuracy``: the same with per-token means (length-neutral);
    * with a reference (the adapter-disabled base): ``implicit_accuracy``, the DPO implicit
      reward margin [log π(c) − log π_ref(c)] − [log π(r) − log π_ref(r)] > 0, and its mean.
    """
    n = len(policy["chosen"])
    samples = []
    for i in range(n):
        c, r = policy["chosen"][i], policy["rejected"][i]
        lc, lr = max(policy["chosen_tokens"][i], 1.0), max(policy["rejected_tokens"][i], 1.0)
        s = {"where": policy["where"][i], "logp_chosen": c, "logp_rejected": r,
             "chosen_tokens": int(lc), "rejected_tokens": int(lr),
             "logp_correct": c > r, "avg_logp_correct": c / lc > r / lr}
        if reference is not None:
            m = (c - reference["chosen"][i]) - (r - reference["rejected"][i])
            s.update(margin=m, implicit_correct=m > 0)
        samples.append(s)
    frac = lambda key: sum(s[key] for s in samples) / n if n else None  # noqa: E731
    agg = {"pairs": n, "logp_accuracy": frac("logp_correct"),
           "avg_logp_accuracy": frac("avg_logp_correct")}
    if reference is not None:
        agg["implicit_accuracy"] = frac("implicit_correct")
        agg["implicit_margin_mean"] = sum(s["margin"] for s in samples) / n if n else None
    return {**agg, "samples": samples}
