"""Plain prose (essays, posts, a book; ``.txt`` / ``.md``) → passages for ``{"text": …}`` records.

Passages are whole paragraphs (blank-line separated) packed greedily up to ``budget`` tokens, so
a passage never ends mid-paragraph unless one paragraph alone is over budget; that one is cut at
sentence ends, and a sentence over budget at word boundaries. Token counts come from a callable
(the CLI passes the model's tokenizer); :func:`approx_tokens` (words × 1.4) is the fallback for
callers without a tokenizer. Markdown front matter (``---`` … ``---`` at the top) is dropped and
counted; headings stay, as part of the passage they open.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from mindprint.data.importers.common import Imported, clean, read_text
from mindprint.data.stream import Drops

Count = Callable[[str], int]
_SENTENCE = re.compile(r"(?<=[.!?…])[\"'”’)]*\s+(?=\S)")


def approx_tokens(text: str) -> int:
    return int(len(text.split()) * 1.4 + 0.999)


def _pieces(paragraph: str, budget: int, count: Count) -> list[str]:
    """A paragraph over budget cut into sentence runs (sentences into word runs) under it."""
    if count(paragraph) <= budget:
        return [paragraph]
    units: list[str] = []
    for sentence in _SENTENCE.split(paragraph):
        if count(sentence) <= budget:
            units.append(sentence)
            continue
        words, cur = sentence.split(), []
        for w in words:
            if cur and count(" ".join(cur + [w])) > budget:
                units.append(" ".join(cur))
                cur = []
            cur.append(w)
        if cur:
            units.append(" ".join(cur))
    return _pack(units, budget, count, " ")


def _pack(units: list[str], budget: int, count: Count, sep: str) -> list[str]:
    out: list[str] = []
    for u in units:
        opens = u.startswith("#") and not (out and out[-1].split("\n")[-1].startswith("#"))
        if out and not opens and count(out[-1] + sep + u) <= budget:
            out[-1] += sep + u
        else:
            out.append(u)
    return out


def split_passages(text: str, budget: int, count: Count = approx_tokens) -> list[str]:
    """Passages of at most ``budget`` tokens, paragraph boundaries kept wherever possible."""
    paragraphs = [clean(p) for p in re.split(r"\n\s*\n", text) if p.strip()]
    units = [piece for p in paragraphs for piece in _pieces(p, budget, count)]
    return _pack(units, budget, count, "\n\n")


def parse(path: str, drops: Drops, budget: int, count: Count = approx_tokens) -> Imported:
    text = read_text(path)
    lines = text.split("\n")
    first = 0
    if lines and lines[0].strip() == "---" and "---" in (s.strip() for s in lines[1:60]):
        first = next(i for i in range(1, len(lines)) if lines[i].strip() == "---") + 1
        drops.add("markdown front matter", f"{path}:1")
    out = Imported(path, "prose")
    line_of = first + 1
    for block in re.split(r"(\n\s*\n)", "\n".join(lines[first:])):
        if block.strip():
            out.passages.append((block, f"{path}:{line_of}"))
        line_of += block.count("\n")
    # pack paragraphs across the whole file, keeping each passage's first line as its place;
    # a markdown heading opens a new passage rather than closing the one before it
    packed: list[tuple[str, str]] = []
    for block, where in out.passages:
        for piece in _pieces(clean(block), budget, count):
            heading = piece.startswith("#")
            follows_heading = bool(packed) and packed[-1][0].split("\n")[-1].startswith("#")
            if packed and (follows_heading or not heading) and \
                    count(packed[-1][0] + "\n\n" + piece) <= budget:
                packed[-1] = (packed[-1][0] + "\n\n" + piece, packed[-1][1])
            else:
                packed.append((piece, where))
    out.passages = packed
    return out
