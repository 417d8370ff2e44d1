"""General ability kept: does the tuned model still do the everyday things the base model did?

A voice costs something: an adapter that makes a model sound like one person can also make it
worse at recipes, directions, sums and e-mails. This measures that cost on a small bundled set of
everyday prompts written for Mindprint (``mindprint/measures/data/everyday.jsonl``: recipes,
directions, arithmetic word problems, e-mail drafting, explanations, conversions, planning,
grammar; one ``{"prompt", "kind"}`` a line), with the base model's own greedy answers as the
yardstick:

* ``kept_logprob`` (per variant): mean per-token log-prob (nats) of the base model's answers under
  the variant, over the answer tokens;
* ``kept_likelihood_ratio`` (tuned): ``exp(kept_logprob[tuned] − kept_logprob[base])``, the
  per-token geometric-mean probability the tuned model gives the base's answers relative to the
  base itself: 1.0 = nothing lost, 0.5 = each token half as likely. Usually ≤ 1 (the base's
  greedy answers are its own most likely ones);
* ``kept_similarity`` (tuned): content similarity (MiniLM cosine, as ``content_similarity``) of
  the tuned model's own greedy answers to the base's: did it still say the same things?

The base answers are generated once per (base weights, chat template, prompts, token budget) and
cached as JSON under ``$MINDPRINT_CACHE/kept/<key>.json`` (default ``~/.cache/mindprint``): every
run of the same base shares them, which a cache in the run directory would not, and the key's
weight hash (:func:`mindprint.manifest.model_identity`, itself cached by file stamp) means a
changed model never reads stale answers. Decoding on another device can pick a different greedy
token now and then; the cached answers stay the yardstick (the cost is measured against the same
text for every run). The curriculum gate keys ``min_kept_likelihood_ratio`` and
``min_kept_similarity`` require them (:mod:`mindprint.curriculum.gate`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from importlib import resources
from pathlib import Path

from ..data.records import ChatRecord, Message
from ..manifest import model_identity
from ..models import cache_dir
from ..outputs import write_atomic
from . import metrics as M
from .data import PromptItem

KEPT_VERSION = 1          # bump when the prompts' rendering or the answer format changes
EVERYDAY = "data/everyday.jsonl"


def everyday_prompts(limit: int | None = None) -> list[dict]:
    """The bundled everyday prompts (``{"prompt", "kind"}``), the first ``limit``."""
    raw = resources.files("mindprint.measures").joinpath(EVERYDAY).read_text("utf-8")
    rows = [json.loads(ln) for ln in raw.splitlines() if ln.strip()]
    return rows[:limit] if limit else rows


def _items(rows: list[dict]) -> list[PromptItem]:
    return [PromptItem([{"role": "user", "content": r["prompt"]}], None, f"everyday.jsonl:{i}",
                       r.get("kind")) for i, r in enumerate(rows, 1)]


def cache_path(ref, tok, prompts: list[str], max_new_tokens: int) -> Path:
    """Where the base answers to ``prompts`` are cached (see the module docstring)."""
    ident = model_identity(ref.spec, ref.kind, ref.path)
    weights = ident["weights_sha256"] or f"unhashed:{ref.path}"
    key = json.dumps({"v": KEPT_VERSION, "weights": weights, "prompts": prompts,
                      "max_new_tokens": max_new_tokens,
                      "template": getattr(tok, "chat_template", None)}, sort_keys=True)
    return cache_dir() / "kept" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


def base_answers(model, tok, ref, items: list[PromptItem], *, max_new_tokens: int,
                 batch_size: int, base_context, log) -> tuple[list[str], Path]:
    """The base model's greedy answers to ``items``: from the cache, else generated under
    ``base_context()`` and cached (an unwritable cache only costs time)."""
    path = cache_path(ref, tok, [it.text for it in items], max_new_tokens)
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if len(cached.get("answers", [])) == len(items):
            log(f"kept: base answers to {len(items)} everyday prompts from the cache ({path})")
            return cached["answers"], path
    except (OSError, ValueError):
        pass
    log(f"kept: the base model answers {len(items)} everyday prompts (cached for next time)")
    with base_context():
        answers = M.answer(model, tok, items, max_new_tokens=max_new_tokens,
                           batch_size=batch_size)["answers"]
    with contextlib.suppress(OSError):
        write_atomic(path, json.dumps({"model": ref.spec, "prompts": [it.text for it in items],
                                       "max_new_tokens": max_new_tokens, "answers": answers},
                                      indent=1, ensure_ascii=False))
    return answers, path


def kept_figures(model, tok, ref, contexts: dict, *, n: int, max_new_tokens: int,
                 batch_size: int, max_length: int, log=lambda s: None) -> dict:
    """Kept figures for each variant in ``contexts`` (name → a no-argument function returning the
    context manager that makes ``model`` act as that variant; ``"base"`` is required).

    Returns ``{"summary": {name: {kept_logprob, [kept_likelihood_ratio, kept_similarity]}},
    "rows": [{prompt, kind, answers: {name: text}, similarity: {name: cos}}], "cache": path,
    "n": n}``; the base's answers are the cached yardstick, the others' are generated here."""
    items = _items(everyday_prompts(n))
    base, path = base_answers(model, tok, ref, items, max_new_tokens=max_new_tokens,
                              batch_size=batch_size, base_context=contexts["base"], log=log)
    records = [ChatRecord((Message("user", it.text), Message("assistant", a or " ")),
                          where=it.where) for it, a in zip(items, base)]
    summary: dict = {}
    rows = [{"prompt": it.text, "kind": it.topic, "answers": {"base": a}, "similarity": {}}
            for it, a in zip(items, base)]
    for name, ctx in contexts.items():
        with ctx():
            nll = M.perplexity(model, tok, records, max_length=max_length,
                               batch_size=batch_size)["nll"]
            summary[name] = {"kept_logprob": -nll}
            if name == "base":
                continue
            log(f"kept: {name} answers {len(items)} everyday prompts")
            own = M.answer(model, tok, items, max_new_tokens=max_new_tokens,
                           batch_size=batch_size)["answers"]
        sim, sims = M.content_similarity(own, base)
        summary[name].update(kept_similarity=sim)
        for row, text, s in zip(rows, own, sims):
            row["answers"][name] = text
            row["similarity"][name] = s
    for name, s in summary.items():
        if name != "base":
            s["kept_likelihood_ratio"] = math.exp(s["kept_logprob"] - summary["base"]["kept_logprob"])
    return {"summary": summary, "rows": rows, "cache": str(path), "n": len(items),
            "max_new_tokens": max_new_tokens}
