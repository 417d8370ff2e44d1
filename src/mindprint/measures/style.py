"""Style of an answer, from its text alone: markdown structure, banned phrases, length.

Markdown adherence compares an answer's structure with its reference answer's: an answer
adheres when it uses a list exactly when the reference does, and a heading exactly when the
reference does. A persona who writes plain prose scores low for a model that answers in
bullet points, and the other way round.
"""

from __future__ import annotations

import re
from statistics import mean, median

LIST_RE = re.compile(r"^[ \t]{0,3}(?:[-*+•]|\d{1,3}[.)])[ \t]+\S", re.M)
HEADING_RE = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+\S", re.M)


def markdown_features(text: str) -> dict:
    return {"list": bool(LIST_RE.search(text or "")), "heading": bool(HEADING_RE.search(text or ""))}


def banned_hits(text: str, phrases: list[str]) -> dict[str, int]:
    """Case-insensitive occurrences of each phrase that occurs at least once."""
    low = (text or "").lower()
    out = {}
    for p in phrases:
        n = low.count(p.lower()) if p else 0
        if n:
            out[p] = n
    return out


def n_words(text: str) -> int:
    return len((text or "").split())


def _avg(xs):
    xs = [x for x in xs if x is not None]
    return mean(xs) if xs else None


def style_of(answers: list[str], references: list[str | None], phrases: list[str],
             new_tokens: list[int] | None = None) -> tuple[dict, list[dict]]:
    """(aggregate, per-sample) style numbers for one model's answers."""
    samples = []
    for i, (a, r) in enumerate(zip(answers, references)):
        f = markdown_features(a)
        s = {"list": f["list"], "heading": f["heading"], "words": n_words(a),
             "banned": banned_hits(a, phrases)}
        if new_tokens is not None:
            s["tokens"] = new_tokens[i]
        if r is not None:
            fr = markdown_features(r)
            s["markdown_adheres"] = f["list"] == fr["list"] and f["heading"] == fr["heading"]
        samples.append(s)
    with_ref = [s["markdown_adheres"] for s in samples if "markdown_adheres" in s]
    words = [s["words"] for s in samples]
    agg = {
        "markdown_adherence": _avg([float(x) for x in with_ref]),
        "list_rate": _avg([float(s["list"]) for s in samples]),
        "heading_rate": _avg([float(s["heading"]) for s in samples]),
        "banned_phrase_hits": sum(sum(s["banned"].values()) for s in samples),
        "banned_answer_rate": _avg([float(bool(s["banned"])) for s in samples]),
        "answer_words_mean": _avg(words),
        "answer_words_median": median(words) if words else None,
    }
    if new_tokens is not None:
        agg["answer_tokens_mean"] = _avg(new_tokens)
    return agg, samples


def reference_style(references: list[str | None]) -> dict:
    refs = [r for r in references if r is not None]
    feats = [markdown_features(r) for r in refs]
    return {"count": len(refs),
            "list_rate": _avg([float(f["list"]) for f in feats]),
            "heading_rate": _avg([float(f["heading"]) for f in feats]),
            "answer_words_mean": _avg([n_words(r) for r in refs])}
