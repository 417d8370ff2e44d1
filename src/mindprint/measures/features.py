"""Content-independent style features of a text, for the voice verifier (:mod:`.voice`).

Two views of a text, both meant to stay the same when a person changes topic:

* :func:`mask_content` — the text with every *content* word (one not in :data:`FUNCTION_WORDS`)
  replaced by a shape of its casing (``*`` per lower-case letter, ``#`` per upper-case one,
  ``0`` per digit). Character n-grams of the masked text see a person's function words,
  punctuation, casing, contractions and word lengths, not what they talk about (text
  distortion, Stamatatos 2017).
* :func:`dense_features` — a fixed-length vector: function-word rates, punctuation rates,
  sentence-length rhythm, casing, openers/closers, emoji, line structure. Names in
  :data:`DENSE_NAMES`, in order.

Pure functions of ``str``; no state, no model.
"""

from __future__ import annotations

import math
import re

import numpy as np

# English function words (closed classes: pronouns, determiners, prepositions, conjunctions,
# auxiliaries, common adverbs and discourse markers). Contractions are kept whole.
FUNCTION_WORDS = frozenset("""
a about above after again against all also although am an and another any anyone anything are
around as at be because been before being below between both but by can could did do does doing
done down during each either else enough even ever every few for from further had has have having
he her here hers herself him himself his how however i if in indeed into is it its itself just
least less like lot lots many may maybe me might mine more most much must my myself neither never
no nobody none nor not nothing now of off often on once one only onto or other others otherwise
our ours ourselves out over own perhaps quite rather really same she should since so some
somebody someone something sometimes still such than that the their theirs them themselves then
there therefore these they thing things this those though through thus to too toward towards
under unless until up upon us usually very was we well were what whatever when whenever where
whether which while who whom whose why will with within without would yes yet you your yours
yourself yourselves oh okay ok yeah yep nope hmm well honestly actually basically literally
pretty kind sort just anyway though lol tbh idk imo btw gonna wanna gotta ain't
i'm i've i'd i'll you're you've you'd you'll he's she's it's we're we've we'd we'll they're
they've they'd they'll that's there's here's what's who's let's don't doesn't didn't can't
couldn't won't wouldn't shouldn't isn't aren't wasn't weren't haven't hasn't hadn't
""".split())

WORD_RE = re.compile(r"[A-Za-z\u00C0-\u024F]+(?:['’][A-Za-z]+)?|\d+")
SENT_RE = re.compile(r"[^.!?\n]+[.!?]*")
EMOJI_RE = re.compile("[\U0001F300-\U0001FAFF\u2600-\u27BF\U0001F000-\U0001F2FF]")
PUNCT = ".,;:!?-—–()\"'…/*&%$#@[]"
# the fixed dense profile: function words (most frequent first) in a stable order
_FW_LIST = sorted(FUNCTION_WORDS)


def _shape(word: str) -> str:
    return "".join("#" if c.isupper() else "0" if c.isdigit() else "*" for c in word)


def mask_content(text: str) -> str:
    """``text`` with content words replaced by their casing shape (see the module docstring)."""
    def repl(m: re.Match) -> str:
        w = m.group(0)
        return w if w.lower().replace("’", "'") in FUNCTION_WORDS else _shape(w)
    return WORD_RE.sub(repl, text)


def _rate(n: float, d: float) -> float:
    return n / d if d else 0.0


def dense_features(text: str) -> np.ndarray:
    """The dense style vector of ``text`` (float64, ``len(DENSE_NAMES)``)."""
    words = WORD_RE.findall(text)
    low = [w.lower().replace("’", "'") for w in words]
    nw = len(words)
    nc = max(len(text), 1)
    sents = [s.strip() for s in SENT_RE.findall(text) if s.strip()]
    slen = [len(WORD_RE.findall(s)) for s in sents] or [0]
    lines = [ln for ln in text.splitlines() if ln.strip()]
    stripped = text.strip()
    counts: dict[str, int] = {}
    for w in low:
        if w in FUNCTION_WORDS:
            counts[w] = counts.get(w, 0) + 1
    fw = [_rate(counts.get(w, 0), nw) for w in _FW_LIST]
    punct = [_rate(text.count(p), nc) * 100 for p in PUNCT]
    alpha = [c for c in text if c.isalpha()]
    shape = [
        math.log1p(nw),                                             # length
        float(np.mean(slen)), float(np.std(slen)),                  # sentence rhythm
        _rate(sum(s <= 5 for s in slen), len(slen)),                # share of fragments
        _rate(sum(len(w) for w in words), nw),                      # word length
        _rate(sum(c.isupper() for c in alpha), len(alpha)),         # upper-case share
        _rate(sum(s[:1].islower() for s in sents), len(sents)),     # sentences started lower-case
        _rate(sum(w.isupper() and len(w) > 1 for w in words), nw),  # SHOUTED words
        _rate(sum(w.lower() == "i" and w == "i" for w in words), nw),  # lower-case "i"
        _rate(len(EMOJI_RE.findall(text)), nw) * 10,                # emoji
        _rate(sum("'" in w or "’" in w for w in words), nw),        # contractions
        _rate(sum(w in FUNCTION_WORDS for w in low), nw),           # function-word share
        float(len(lines)), _rate(sum(bool(re.match(r"\s*([-*•]|\d+[.)])\s", ln)) for ln in lines),
                                 len(lines)),                      # lines, list lines
        float(stripped.endswith("?")), float(stripped.endswith("!")),
        float(stripped.endswith(".")), float(bool(stripped) and stripped[-1].isalnum()),
        float(text.count("...") + text.count("…")) / max(len(sents), 1),
        _rate(sum(c.isdigit() for c in text), nc) * 10,
    ]
    return np.asarray(fw + punct + shape, dtype=np.float64)


DENSE_NAMES = ([f"fw:{w}" for w in _FW_LIST] + [f"punct:{p}" for p in PUNCT] +
               ["log_words", "sent_len_mean", "sent_len_std", "fragment_share", "word_len",
                "upper_share", "lower_sentence_start", "shouted", "lowercase_i", "emoji",
                "contractions", "function_share", "lines", "list_lines", "ends_question",
                "ends_exclaim", "ends_period", "ends_bare", "ellipses", "digits"])


def dense_matrix(texts: list[str]) -> np.ndarray:
    """Rows of :func:`dense_features`, ``[N, len(DENSE_NAMES)]``."""
    if not texts:
        return np.zeros((0, len(DENSE_NAMES)))
    return np.vstack([dense_features(t) for t in texts])
