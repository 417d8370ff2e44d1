"""Speaker-labelled transcripts: interviews, podcasts, meeting notes.

Layouts understood (mixed freely within one file):

* ``Name: text`` and ``Q:`` / ``A:``; a turn runs on over the following lines until the next label;
* markdown interview style: ``**Name:** text`` or ``**Name**: text``;
* timestamps before or after the label: ``[00:01:23] Name: …``, ``00:01:23 Name: …``,
  ``Name (00:01:23): …``, ``Name [01:23]: …``, and the Otter/Zoom layout where a line holds only
  ``Name  00:03`` (or ``Name 0:03:12``) and the words follow on the next lines;
* stage directions in brackets (``[laughs]``, ``(inaudible)``) are removed.

A label counts as a speaker when it appears at least twice in the file, or once when it is
explicit (bold, timestamped, a header line) or ``Q``/``A``, so a stray "Note: …" inside an answer
stays part of the answer (a file where no label repeats takes every label as a speaker). Text before the
first speaker (a title, a date) is dropped and counted.
"""

from __future__ import annotations

import re
from collections import Counter

from mindprint.data.importers.common import Conversation, Imported, Msg, clean, read_text
from mindprint.data.stream import Drops
from mindprint.errors import DataError

_TS = r"\(?\[?\d{1,2}:\d{2}(?::\d{2})?(?:[.,]\d{1,3})?\]?\)?"
_NAME = r"[^\W\d_][\w .'’\-]{0,38}?"
_LABEL = re.compile(rf"^\s*(?:{_TS}\s*[-–]?\s*)?(?:\*\*)?(?P<name>{_NAME})(?:\*\*)?"
                    rf"\s*(?:{_TS})?\s*(?:\*\*)?:(?:\*\*)?(?:\s+|$)(?P<text>.*)$")
_HEADER = re.compile(rf"^\s*(?P<name>{_NAME})\s+{_TS}\s*$")         # Otter: "Anna Berg  0:03"
_LEAD_TS = re.compile(rf"^\s*{_TS}\s*[-–]?\s*")
_DIRECTION = re.compile(r"\s*[\[(](?:[A-Za-z][a-z]*(?: [a-z]+){0,3})[\])]\s*")
_QA = {"q", "a", "question", "answer", "interviewer", "frage", "antwort"}


def _label(line: str):
    """(name, text, explicit) when the line opens with a speaker label; explicit labels are
    marked beyond a colon (bold, a timestamp, a header line of their own)."""
    for pattern in (_LABEL, _HEADER):
        m = pattern.match(line)
        if m and len(m.group("name").split()) <= 4 and "http" not in m.group("name"):
            explicit = pattern is _HEADER or "**" in line[: m.start("name") + len(m.group("name")) + 4] \
                or bool(re.search(r"\d:\d\d", line[: m.start("text")]))
            return m.group("name").strip(" *"), (m.groupdict().get("text") or ""), explicit
    return None


def speakers(lines: list[str]) -> set[str]:
    """Labels seen twice, or once when explicit or Q/A-style: those are the speakers."""
    labels = [lab for line in lines if (lab := _label(line))]
    counts = Counter(name for name, _, _ in labels)
    return {name for name, _, explicit in labels
            if counts[name] >= 2 or explicit or name.casefold() in _QA}


def looks_like(text: str) -> bool:
    lines = [line for line in text.split("\n")[:400] if line.strip()]
    names = speakers(lines)
    hits = sum(1 for line in lines if (lab := _label(line)) and lab[0] in names)
    return bool(names) and hits >= 3 and hits >= 0.15 * len(lines)


def _tidy(text: str) -> str:
    text = _DIRECTION.sub(" ", text)
    text = re.sub(r"\*\*|__", "", text)          # markdown bold left inside a turn
    return re.sub(r"[ \t]+", " ", text)


def parse(path: str, drops: Drops) -> Imported:
    text = read_text(path)
    lines = text.split("\n")
    # a two-line exchange has no repeated label: then every label is taken as a speaker
    names = speakers(lines) or {lab[0] for line in lines if (lab := _label(line))}
    if not names:
        raise DataError(f"{path}: no speaker labels found (expected lines like 'Name: text' or "
                        "'Q: …'); pass --from prose to import it as prose")
    msgs: list[Msg] = []
    speaker, body, start = None, [], 0

    def flush():
        said = clean(_tidy("\n".join(body)))
        if speaker is not None and said:
            msgs.append(Msg(speaker, said, None, f"{path}:{start}"))
        elif speaker is not None:
            drops.add("turn with no words (only a stage direction or timestamp)", f"{path}:{start}")

    for n, line in enumerate(lines, 1):
        lab = _label(line)
        if lab and lab[0] in names:
            flush()
            speaker, body, start = lab[0], [lab[1]], n
        elif speaker is None:
            if line.strip():
                drops.add("text before the first speaker label", f"{path}:{n}")
        else:
            body.append(_LEAD_TS.sub("", line))
    flush()
    return Imported(path, "transcript", [Conversation(msgs)])
