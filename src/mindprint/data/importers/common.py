"""What every importer yields, and the small helpers they share.

An importer turns one source (a file, or a Slack export folder) into :class:`Conversation` s:
ordered lists of :class:`Msg` — who said what, when (seconds since the epoch, or ``None`` when
the source has no clock), and where (``file:line``, or ``file: message N`` for JSON sources), so
every drop and error can name its place. Whatever an importer skips (system lines, media
placeholders, service messages …) it counts in the shared :class:`~mindprint.data.stream.Drops`
with that place: nothing is dropped silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mindprint.data.stream import Drops
from mindprint.errors import DataError


@dataclass
class Msg:
    speaker: str                 # the display name (user turns of group chats are prefixed with it)
    text: str
    time: float | None           # seconds since the epoch (or since the start, for subtitles)
    where: str                   # "file:line" or "file: message N"
    aliases: tuple[str, ...] = ()  # other names --me may match: an e-mail address, a nickname, an id

    def names(self) -> tuple[str, ...]:
        return (self.speaker, *self.aliases)


@dataclass
class Conversation:
    messages: list[Msg]
    # e-mail: one conversation per reply (the thread up to it), and only that reply is an answer
    last_only: bool = False


@dataclass
class Imported:
    """What one source gave: conversations (chat-like sources) or passages (prose)."""

    path: str
    kind: str
    conversations: list[Conversation] = field(default_factory=list)
    passages: list[tuple[str, str]] = field(default_factory=list)   # (text, where)
    # counted facts the summary reports that are not drops ("question taken from the quoted text")
    notes: dict[str, int] = field(default_factory=dict)
    me: tuple[str, ...] = ()     # --me as resolved against this source's speakers (e-mail)


def read_text(path) -> str:
    """A text file as str: UTF-8 (a BOM is dropped), else a clear error naming the line."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x}); "
                        "save the file as UTF-8 or pass --from") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


_TAG = re.compile(r"<[^>\n]{1,200}>")
_BRACE = re.compile(r"\{\\[^}]*\}")    # SSA override tags some .srt files carry: {\an8}
_INVISIBLE = dict.fromkeys(map(ord, "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\ufeff"))


def clean(text: str) -> str:
    """Direction marks and BOMs removed, non-breaking spaces made plain, lines right-trimmed."""
    text = text.translate(_INVISIBLE).replace("\u202f", " ").replace("\u00a0", " ")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()


def strip_tags(text: str) -> str:
    return _BRACE.sub("", _TAG.sub("", text))


def need(cond: bool, where: str, what: str) -> None:
    """A structural problem in a source is an error naming its place, never a traceback."""
    if not cond:
        raise DataError(f"{where}: {what}")

