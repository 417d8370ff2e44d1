"""Streaming building blocks of the data tools: read records line by line, count what is dropped
and why, write outputs atomically.

Nothing here holds a whole JSON Lines file: a :class:`Source` yields one :class:`Line` at a time
(its number, byte offset and raw bytes, the parsed record), so a tool keeps only what it needs
per line (an offset, a 16-byte hash, a topic index) and can seek back to the raw bytes later.
Other file kinds (a JSON array, a table: see :mod:`mindprint.data.sources`) have no line to seek
back to: their records come as one JSON line each (``raw``, offset None), and tools writing them
out keep those bytes (such files are read whole anyway).
Validation is the loader's own (:func:`mindprint.data.jsonl.parse_line`), so a line a tool drops
as invalid is reported with the same ``file:line: field: what`` text ``data validate`` prints.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

from mindprint.data.jsonl import Notes, _check_format_name, _vote, parse_line
from mindprint.data.fields import Problem
from mindprint.data.formats import KEYS_HINT
from mindprint.data.records import Message, Record
from mindprint.data.sources import iter_items
from mindprint.errors import DataError

PEEK_LINES = 100  # lines whose keys vote for a file's format when --format is not given
SHOW_FIRST = 5    # file:line examples shown per drop reason


@dataclass
class Line:
    n: int            # line number from 1 (JSON Lines), else the record's ordinal from 1
    offset: int | None  # byte offset of the line in the file; None for other file kinds
    raw: bytes        # the line as written, without its newline (other kinds: one JSON line)
    obj: dict         # the decoded JSON object
    record: Record    # the validated record
    where: str = ""   # "file:line" or "file:[index]"

    @property
    def length(self) -> int:
        return len(self.raw)


class Drops:
    """Counts of dropped lines per reason, with the first few ``file:line`` of each."""

    def __init__(self):
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < SHOW_FIRST:
            shown.append(where)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def lines(self, noun: str = "line") -> list[str]:
        """``dropped N lines: …`` and, indented, each reason with its first few places."""
        if not self.total:
            return []
        out = [f"dropped {self.total} {noun}{'s' * (self.total != 1)}:"]
        for reason, count in self.counts.items():
            more = f" (first {SHOW_FIRST} shown)" if count > SHOW_FIRST else ""
            out.append(f"  {reason}: {count}{more}")
            out += [f"    {where}" for where in self.examples[reason]]
        return out


class Source:
    """One data file (any kind :mod:`mindprint.data.sources` reads) as a stream of valid
    records; bad ones go to ``drops`` as ``invalid`` with the loader's ``file:line: field:
    what`` message, values read but not used to ``notes`` (counted), file-level hints to
    ``hints``."""

    def __init__(self, path, fmt: str | None = None, drops: Drops | None = None, *,
                 system_prompt: str | None = None, columns: dict[str, str] | None = None):
        _check_format_name(fmt)
        self.path = str(path)
        self.drops = drops if drops is not None else Drops()
        self.system_prompt = system_prompt
        self.columns = columns
        self.lines_read = 0   # non-blank lines (records) seen by the last pass
        self.notes = Notes()
        self.hints: list[str] = []
        self.format = fmt or self._detect()

    def items(self, hints: list[str] | None = None):
        return iter_items(self.path, columns=self.columns, hints=hints)

    def _detect(self) -> str:
        """Vote on the first lines' keys, as the loader votes on all of them (a file that
        changes format after its first hundred lines is rare and still reported line by line)."""
        objs, seen = [], 0
        for item in self.items():
            seen += 1
            if item.obj is not None:
                objs.append(item.obj)
            if len(objs) >= PEEK_LINES:
                break
        if not seen:
            raise DataError(f"{self.path}: file is empty")
        fmt = _vote(objs)
        if fmt is None:
            raise DataError(f"{self.path}: cannot tell the format ({KEYS_HINT}); pass --format")
        return fmt

    def __iter__(self) -> Iterator[Line]:
        self.lines_read = 0
        self.notes, self.hints = Notes(), []
        for item in self.items(self.hints):
            self.lines_read += 1
            found = list(item.notes)
            try:
                if item.problem is not None:
                    raise item.problem
                record = parse_line(item.obj, self.format, item.where,
                                    system_prompt=self.system_prompt, notes=found)
            except Problem as p:
                self.drops.add("invalid", f"{item.where}: {p}")
                continue
            self.notes.add(item.where, found)
            yield Line(item.n, item.offset, item.raw, item.obj, record, item.where)

    def report(self) -> list[str]:
        """The last pass's counted notes and hints, one line each."""
        return [f"warning: {w}" for w in self.notes.lines()] + [f"hint: {h}" for h in self.hints]


def read_at(f, offset: int, length: int) -> bytes:
    f.seek(offset)
    return f.read(length)


# ---------------------------------------------------------------------------------- dedupe

_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Whitespace collapsed, case folded: "Zoom  out.\\n" and "zoom out." are one text."""
    return _SPACE.sub(" ", text).strip().casefold()


def _plain(value, norm):
    if isinstance(value, Message):
        extra = [value.weight, value.tool_calls, value.tool_call_id, value.name]
        return [value.role, norm(value.content)] + (extra if any(x is not None for x in extra) else [])
    if isinstance(value, tuple):
        return [_plain(v, norm) for v in value]
    return norm(value) if isinstance(value, str) else value


def record_key(record: Record, mode: str) -> bytes:
    """A 16-byte digest of what a record says (its texts, roles and label; not its topic or
    where), so duplicates are caught whatever the key order or extra keys of their lines."""
    norm = normalize if mode == "normalized" else (lambda s: s)
    body = [_plain(getattr(record, f.name), norm) for f in fields(record)
            if f.name not in ("topic", "where")]
    text = json.dumps([type(record).__name__, body], ensure_ascii=False)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


# ---------------------------------------------------------------------------------- output


def check_output(path, force: bool) -> Path:
    """Refuse to replace an existing file unless forced; checked before any work is done."""
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{path}: is a directory; give a file name")
    if p.exists() and not force:
        raise DataError(f"{path}: already exists; pass --force to replace it")
    return p


@contextlib.contextmanager
def atomic_output(path):
    """A binary file handle whose content appears at ``path`` only when the block succeeds:
    written to a temporary file in the same directory (same file system, so the rename is
    atomic), then renamed. On any error the temporary file is removed and ``path`` untouched."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"{path}: cannot create its directory ({err.strerror or err})") from None
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        f = open(tmp, "wb")
    except OSError as err:
        raise DataError(f"{path}: cannot write ({err.strerror or err})") from None
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_record(f, obj: dict) -> None:
    text = json.dumps(obj, ensure_ascii=False)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in a carried-over key: keep it as an escape
        data = json.dumps(obj).encode("ascii")
    f.write(data + b"\n")
