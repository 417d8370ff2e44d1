"""Subtitles: SubRip ``.srt`` (parsed by ``srt``) and WebVTT ``.vtt`` (parsed by ``webvtt-py``).

Both libraries are small, pure Python and well kept; they own the cue framing and timestamps,
this module only finds who speaks. A cue line names its speaker by a WebVTT voice tag
``<v Name>``, a ``NAME:`` prefix, or not at all; ``- `` dialogue dashes start a new utterance
within a cue. An utterance without a name continues the last named speaker — except after a
dash, which means someone else speaks: then, when the file has exactly two named speakers, the
other one of them, else ``(unnamed)``. Cue times (seconds from the start) let the turn builder
merge consecutive cues of one speaker into one turn. Formatting tags (``<i>``, ``{\\an8}``) go.
"""

from __future__ import annotations

import re

import srt
import webvtt

from mindprint.data.importers.common import Conversation, Imported, Msg, clean, read_text, strip_tags
from mindprint.data.stream import Drops
from mindprint.errors import DataError

UNNAMED = "(unnamed)"
_VOICE = re.compile(r"<v(?:\.[\w.-]+)?\s+([^>]+)>")
_PREFIX = re.compile(r"^([^\W\d_][\w .'’-]{0,30}?|[A-Z][A-Z .'-]{1,30}):\s+")


def _utterances(lines: list[str]) -> list[tuple[str | None, bool, str]]:
    """(named speaker or None, starts with a dash, text) per utterance of one cue."""
    out: list[tuple[str | None, bool, str]] = []
    for raw in lines:
        voice = _VOICE.search(raw)
        line = clean(strip_tags(raw))
        dash = line.startswith(("- ", "– ", "-\t"))
        if dash:
            line = line[2:].lstrip()
        name = voice.group(1).strip() if voice else None
        m = _PREFIX.match(line)
        if m and name is None:
            name, line = m.group(1).strip(), line[m.end():]
        if not line:
            continue
        if out and name is None and not dash:
            prev = out[-1]
            out[-1] = (prev[0], prev[1], f"{prev[2]} {line}")
        else:
            out.append((name, dash, line))
    return out


def _assign(cues: list[tuple[float, list[str], str]], path: str, drops: Drops) -> Imported:
    parsed = [(t, _utterances(lines), where) for t, lines, where in cues]
    named = {name for _, us, _ in parsed for name, _, _ in us if name}
    msgs, current = [], None
    for t, us, where in parsed:
        if not us:
            drops.add("cue with no words", where)
        for name, dash, text in us:
            if name:
                current = name
            elif dash or current is None:
                other = sorted(named - {current}) if current else []
                current = other[0] if len(named) == 2 and len(other) == 1 else UNNAMED
            msgs.append(Msg(current, text, t, where))
    return Imported(path, "subtitles", [Conversation(msgs)])


def parse_srt(path: str, drops: Drops) -> Imported:
    text = read_text(path)
    try:
        subs = list(srt.parse(text))
    except srt.SRTParseError as err:
        line = text.count("\n", 0, err.actual_start) + 1
        raise DataError(f"{path}:{line}: not a SubRip cue (expected a number, then "
                        "'00:00:01,000 --> 00:00:02,000', then text)") from None
    # srt does not keep line numbers: find each cue's timing line to name its place
    starts = {m.group(1): text.count("\n", 0, m.start()) + 1
              for m in re.finditer(r"^(\d+)\s*\n", text, re.M)}
    cues = []
    for s in subs:
        where = f"{path}:{starts.get(str(s.index), '?')}"
        # srt reads a broken timing line leniently (the rest of it becomes "proprietary" and
        # the cue swallows the cues after it): refuse what it could only have guessed
        if s.end < s.start or "\n\n" in s.content.strip():
            raise DataError(f"{where}: malformed cue {s.index}: its timing line does not read "
                            "'00:00:01,000 --> 00:00:02,000', or a cue after it is broken")
        cues.append((s.start.total_seconds(), s.content.split("\n"), where))
    return _assign(cues, path, drops)


def parse_vtt(path: str, drops: Drops) -> Imported:
    try:
        vtt = webvtt.read(path)
    except (webvtt.errors.MalformedFileError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a WebVTT file ({err})") from None
    cues = [(c.start_in_seconds, c.lines, f"{path}: cue {i}") for i, c in enumerate(vtt, 1)]
    return _assign(cues, path, drops)
