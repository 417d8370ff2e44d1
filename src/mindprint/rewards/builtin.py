"""Built-in rewards. Each ``make(name, cfg)`` returns ``f(prompts, completions, records) -> list``.

* ``content_similarity`` (was ``voice_fidelity``): cosine similarity of the completion's and the
  record's ``answer`` MiniLM embeddings (the same model as ``mindprint eval``): closeness in
  content; None without an answer.
* ``voice_match``: the probability that the completion is the person's, from the voice verifier
  (:mod:`mindprint.measures.voice`) fitted once on ``grpo.voice_person`` (default: data.train's
  answers): the voice, whatever the topic. Two kinds of completion score 0, because the verifier
  gives them P ≈ 1 and GRPO learns to produce them (RESULTS.md "GRPO on voice_match"): one caught
  in a loop (:func:`mindprint.measures.diversity.loops`: ≥ 25 % repeated word 4-grams), and one
  too short to judge (fewer words than ``VoiceVerifier.min_words``, a quarter of the person's
  median answer: the verifier was fitted against no background that short, so a bare stock
  phrase, "Zoom out. Patience.", reads as the person).
* ``answer_similarity``: token F1 (bag of lower-cased words) or ROUGE-L F (longest common word
  subsequence) against ``answer``; None without an answer.
* ``length``: 1 when the completion's word count n is inside [lo, hi]; n/lo below;
  max(0, 1 − (n − hi)/hi) above; 0 for a completion that never ended (cut off by
  ``grpo.max_completion_length`` before end-of-turn: its length is unknown, and scoring its
  visible words would reward packing fewer, longer "words" into the budget instead of stopping).
* ``format``: 1 when ``re.search(grpo.format_pattern, completion)`` finds a match, else 0.
* ``banned_phrases``: 1/(1 + h), h = occurrences of ``eval.banned_phrases`` (case-insensitive).
"""

from __future__ import annotations

import re
from collections import Counter

from ..config import DEFAULT_BANNED_PHRASES
from ..measures.diversity import loops
from ..measures.embed import cosine_pairs
from ..measures.style import banned_hits
from ..measures.voice import VoiceVerifier
from ..measures.voice_data import person_texts

WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    return WORD.findall((text or "").lower())


def token_f1(a: str, b: str) -> float:
    wa, wb = words(a), words(b)
    if not wa or not wb:
        return float(wa == wb)
    common = sum((Counter(wa) & Counter(wb)).values())
    if not common:
        return 0.0
    p, r = common / len(wa), common / len(wb)
    return 2 * p * r / (p + r)


def rouge_l(a: str, b: str) -> float:
    wa, wb = words(a), words(b)
    if not wa or not wb:
        return float(wa == wb)
    prev = [0] * (len(wb) + 1)
    for x in wa:
        cur = [0]
        for j, y in enumerate(wb):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if not lcs:
        return 0.0
    p, r = lcs / len(wa), lcs / len(wb)
    return 2 * p * r / (p + r)


def length_score(n: int, lo: int, hi: int) -> float:
    if lo <= n <= hi:
        return 1.0
    if n < lo:
        return n / lo
    return max(0.0, 1.0 - (n - hi) / max(hi, 1))


def content_similarity(cfg, banned_phrases):
    def content_similarity(prompts, completions, records):
        idx = [i for i, r in enumerate(records) if getattr(r, "answer", None)]
        out = [None] * len(completions)
        if idx:
            sims = cosine_pairs([completions[i] for i in idx], [records[i].answer for i in idx])
            for i, s in zip(idx, sims):
                out[i] = s
        return out
    return content_similarity


def voice_match(cfg, banned_phrases):
    mine, _ = person_texts(cfg.voice_person)
    verifier = VoiceVerifier.fit(mine)

    def voice_match(prompts, completions, records):
        return [0.0 if loops(c) or len(c.split()) < verifier.min_words else float(p)
                for c, p in zip(completions, verifier.predict(list(completions)))]
    return voice_match


def answer_similarity(cfg, banned_phrases):
    measure = rouge_l if cfg.similarity == "rouge_l" else token_f1

    def answer_similarity(prompts, completions, records):
        return [measure(c, r.answer) if getattr(r, "answer", None) else None
                for c, r in zip(completions, records)]
    return answer_similarity


def length(cfg, banned_phrases):
    lo, hi = cfg.length_range

    def length(prompts, completions, records, finished=None):
        done = [True] * len(completions) if finished is None else finished
        return [length_score(len((c or "").split()), lo, hi) if f else 0.0
                for c, f in zip(completions, done)]
    return length


def format_(cfg, banned_phrases):
    pattern = re.compile(cfg.format_pattern)

    def format_(prompts, completions, records):
        return [1.0 if pattern.search(c or "") else 0.0 for c in completions]
    return format_


def banned(cfg, banned_phrases):
    phrases = list(DEFAULT_BANNED_PHRASES if banned_phrases is None else banned_phrases)

    def banned(prompts, completions, records):
        return [1.0 / (1.0 + sum(banned_hits(c, phrases).values())) for c in completions]
    return banned


# name -> maker(grpo config, banned phrases or None) -> reward function; the names are
# mindprint.reward_names.BUILTINS (a test checks that the two agree)
MAKERS = {"content_similarity": content_similarity, "voice_match": voice_match,
          "answer_similarity": answer_similarity,
          "length": length, "format": format_, "banned_phrases": banned}


def make(name: str, cfg, banned_phrases: list[str] | None = None):
    try:
        maker = MAKERS[name]
    except KeyError:
        raise ValueError(f"unknown built-in reward {name!r}") from None
    return maker(cfg, banned_phrases)
