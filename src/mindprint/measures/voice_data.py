"""Texts for the voice verifier, read from the user's files.

* :func:`person_texts` — the person's own writing, to fit on: every trained assistant turn of a
  chat record, a prompt record's ``answer``, a text record's ``text``, a preference record's
  chosen answer, a desirable KTO completion. Records that hold none (a prompt without an
  answer, an undesirable KTO completion) are counted in the returned notes, never silently
  dropped.
* :func:`scored_texts` — texts to score, one per record, in file order: a chat record's last
  answer, a prompt record's ``answer``, a text record's ``text``, a preference record's chosen
  answer, a KTO completion. A record with nothing to score is an error naming ``file:line``.

Any data file the project reads (:func:`mindprint.data.jsonl.load_many`: JSONL, JSON, CSV,
Parquet, …) or a ``.txt`` file with one text per line (blank lines are separators, not texts).
"""

from __future__ import annotations

from pathlib import Path

from ..data.jsonl import load_many
from ..data.records import ChatRecord, KTORecord, PreferenceRecord, PromptRecord, TextRecord
from ..errors import DataError


def _last(messages) -> str:
    return messages[-1].content if messages else ""


# record type -> (texts of the person in it, the one text to score)
PERSON = {
    ChatRecord: lambda r: [m.content for m in r.messages if m.trained and m.content.strip()],
    PromptRecord: lambda r: [r.answer] if r.answer else [],
    TextRecord: lambda r: [r.text],
    PreferenceRecord: lambda r: [_last(r.chosen)],
    KTORecord: lambda r: [_last(r.completion)] if r.label else [],
}
SCORED = {
    ChatRecord: lambda r: _last(r.messages),
    PromptRecord: lambda r: r.answer,
    TextRecord: lambda r: r.text,
    PreferenceRecord: lambda r: _last(r.chosen),
    KTORecord: lambda r: _last(r.completion),
}


def _txt_lines(path: str) -> list[tuple[str, str]]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{path}: no such file")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    return [(ln.strip(), f"{path}:{i}") for i, ln in enumerate(lines, 1) if ln.strip()]


def _records(paths) -> list[tuple[object, str]]:
    """(record or text, where) for every item of ``paths``, in order."""
    out: list = []
    for p in paths:
        if str(p).endswith(".txt"):
            out += _txt_lines(str(p))
        else:
            out += [(r, r.where) for r in load_many([p]).records]
    return out


def person_texts(paths) -> tuple[list[str], list[str]]:
    """(the person's texts, notes on records that gave none)."""
    texts, empty = [], []
    for rec, where in _records(paths):
        got = [rec] if isinstance(rec, str) else PERSON[type(rec)](rec)
        texts += got
        if not got:
            empty.append(where)
    notes = []
    if empty:
        notes.append(f"{len(empty)} record(s) hold no answer of the person (a prompt without "
                     f"an answer, an undesirable completion), first at {empty[0]}: not used")
    return texts, notes


def scored_texts(paths) -> list[tuple[str, str]]:
    """(text, where) to score, one per record or line, in order."""
    out = []
    for rec, where in _records(paths):
        text = rec if isinstance(rec, str) else SCORED[type(rec)](rec)
        if not text or not text.strip():
            raise DataError(f"{where}: answer: nothing to score (the record has no answer text)")
        out.append((text, where))
    return out
