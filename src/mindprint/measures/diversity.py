"""What the voice cost: lexical diversity and degenerate repetition of a model's answers.

* ``distinct_n`` (Li et al. 2016): distinct word n-grams over all n-grams, pooled across the
  answers (lower-cased words). A tuned model that says the same few things to every prompt
  drops here even when each answer reads well.
* ``loop_share``: share of answers that loop — at least :data:`LOOP_SHARE` of the answer's word
  4-grams repeat an earlier 4-gram of the same answer (``"the the the"``, a sentence said three
  times). Answers shorter than 8 words never count as loops.

Pure functions of text.
"""

from __future__ import annotations

import re

WORD = re.compile(r"\w+(?:'\w+)?", re.UNICODE)
LOOP_N = 4
LOOP_SHARE = 0.25


def _ngrams(words: list[str], n: int) -> list[tuple]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: list[str], n: int) -> float | None:
    """Distinct / total word n-grams over all ``texts`` (None when there are none)."""
    grams = [g for t in texts for g in _ngrams(WORD.findall((t or "").lower()), n)]
    return len(set(grams)) / len(grams) if grams else None


def loops(text: str) -> bool:
    """True when the answer repeats itself (see the module docstring)."""
    words = WORD.findall((text or "").lower())
    if len(words) < 8:
        return False
    grams = _ngrams(words, LOOP_N)
    return (len(grams) - len(set(grams))) / len(grams) >= LOOP_SHARE


def diversity(texts: list[str]) -> dict:
    """``distinct_1``, ``distinct_2`` and ``loop_share`` of one model's answers."""
    return {"distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2),
            "loop_share": sum(map(loops, texts)) / len(texts) if texts else None}
