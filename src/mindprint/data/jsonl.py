"""Read data files into typed records, reporting ``file:line: field: what`` problems.

Every record is checked, not only the first bad one, so a user can fix a file in one pass. What
a path can be (JSON Lines, a JSON array, CSV/TSV, Parquet, a saved ``datasets`` folder, an
mlx-lm folder) is :mod:`mindprint.data.sources`' business; what a record can look like is
:mod:`mindprint.data.formats`'. A JSON Lines file is read as bytes and split on ``\\n`` before
decoding: one bad byte then spoils one line, not the file, and Unicode line separators (U+2028,
U+0085) inside JSON strings never split a record.

The format of a file is detected from its keys unless the caller names it (see
:func:`detect_format`); all records of a file share one format. Bad lines are skipped and
returned as problems while their share stays within ``max_error_rate`` (0 by default: any bad
line is an error), so a caller can choose to warn instead of refusing a large scraped file.
Values a format reads but cannot use are counted and reported once per kind (``warnings``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mindprint.data.fields import Problem
from mindprint.data.formats import (
    FORMATS,
    KEYS_HINT,
    ORDER,
    accepts,
    detect_format,
    parse_record,
    record_type,
)
from mindprint.data.records import SFT_RECORDS, Record
from mindprint.data.sources import data_folder, decode, iter_items, iter_lines
from mindprint.errors import DataError

# names other modules and tests have imported from here
_Problem, _KEYS_HINT, _decode = Problem, KEYS_HINT, decode
__all__ = ["LoadResult", "accepts", "detect_format", "iter_lines", "load_jsonl", "load_many",
           "parse_line", "parse_record"]
HIGH_ERROR_SHARE = 0.2  # from one bad line in five, a file is likely of another format


@dataclass
class LoadResult:
    records: list
    format: str  # None only inside validation, when no line revealed a format
    n_lines: int  # non-blank lines: records plus bad lines
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # values read but not used, counted
    hints: list[str] = field(default_factory=list)     # about the whole file (its encoding, …)


class Notes:
    """Counts of (field, what) notes, each with the first place it was seen."""

    def __init__(self):
        self.counts: Counter = Counter()
        self.first: dict[tuple[str, str], str] = {}

    def add(self, where: str, notes) -> None:
        for note in dict.fromkeys(notes):  # once per record
            self.counts[note] += 1
            self.first.setdefault(note, where)

    def lines(self) -> list[str]:
        return [f"{self.first[n]}: {n[0]}: {n[1]} ({c} record{'s' * (c != 1)})"
                for n, c in self.counts.items()]


def _vote(objs: list[dict]) -> str | None:
    """The file's format: the one most lines show; ties go to the more specific format."""
    counts = Counter(f for obj in objs if (f := detect_format(obj)))
    if not counts:
        return None
    return max(counts, key=lambda f: (counts[f], -ORDER.index(f)))


def parse_line(obj: dict, fmt: str, where: str, *, system_prompt: str | None = None,
               notes: list | None = None) -> Record:
    """:func:`parse_record` for one line of a ``fmt`` file: a problem on a line that looks like
    another format says so, since a mixed-up file is the likelier mistake than a bad field."""
    try:
        return parse_record(obj, fmt, where, system_prompt=system_prompt, notes=notes)
    except Problem as p:
        seen = detect_format(obj) if isinstance(obj, dict) else None
        if seen not in (None, fmt):
            raise Problem(p.field, f"{p.what} (this line looks like {seen} data; the file is "
                                   f"{fmt} data)") from None
        raise


def _read(path, fmt: str | None, system_prompt: str | None, *,
          columns: dict[str, str] | None = None) -> LoadResult:
    """Parse every record of ``path``; judging the error rate is left to the caller."""
    hints: list[str] = []
    items = list(iter_items(path, columns=columns, hints=hints))
    if not items:
        raise DataError(f"{path}: file is empty")
    fmt = fmt or _vote([it.obj for it in items if it.obj is not None])
    bad: list[tuple[int, str, Problem]] = []
    records = []
    notes = Notes()
    for it in items:
        if it.problem is not None:
            bad.append((it.n, it.where, it.problem))
        elif fmt is None:
            bad.append((it.n, it.where, Problem(None, f"cannot tell the format: {KEYS_HINT}")))
        else:
            found = list(it.notes)
            try:
                records.append(parse_line(it.obj, fmt, it.where, system_prompt=system_prompt,
                                          notes=found))
            except Problem as p:
                bad.append((it.n, it.where, p))
                continue
            notes.add(it.where, found)
    bad.sort(key=lambda b: b[0])
    return LoadResult(records, fmt, len(records) + len(bad), [f"{w}: {p}" for _, w, p in bad],
                      notes.lines(), hints)


def _either(formats: Iterable[str]) -> str:
    names = list(formats)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _check_format_name(fmt: str | None) -> None:
    if fmt is not None and fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def invalid_summary(path, n_bad: int, n: int, max_error_rate: float) -> str:
    """``FILE: 3 of 10 lines are invalid``, and from one line in five on, what to check."""
    text = f"{path}: {n_bad} of {n} lines are invalid"
    if n and n_bad / n >= HIGH_ERROR_SHARE:
        text += (f" ({n_bad / n:.0%}: that many usually means another format or a broken "
                 "export; check that before raising data.max_error_rate)")
    return text


def load_jsonl(
    path,
    fmt: str | None = None,
    *,
    system_prompt: str | None = None,
    max_error_rate: float = 0.0,
    expect: tuple[str, ...] | None = None,
    columns: dict[str, str] | None = None,
) -> LoadResult:
    """Load one data file of ``fmt`` records (detected when None); any file kind of
    :mod:`mindprint.data.sources`, not only JSON Lines.

    ``expect`` lists the formats the caller can use (a format of the same record type also
    does). Raises DataError when the file is missing or empty, of an unexpected format, has no
    valid record, or has more than ``max_error_rate`` of its records invalid (then
    ``err.problems`` holds every problem, and the file-level hints last).
    """
    _check_format_name(fmt)
    if not 0.0 <= max_error_rate <= 1.0:
        raise ValueError(f"max_error_rate must be within [0, 1], got {max_error_rate}")
    result = _read(path, fmt, system_prompt, columns=columns)
    if expect is not None and result.format is not None and not accepts(result.format, expect):
        raise DataError(f"{path}: is '{result.format}' data but this needs {_either(expect)}")
    n_bad = result.n_lines - len(result.records)
    if not result.records or n_bad / result.n_lines > max_error_rate:
        raise DataError(invalid_summary(path, n_bad, result.n_lines, max_error_rate),
                        result.problems + result.hints)
    return result


def _kind_of(fmt: str) -> type:
    """Record types that may share a run: SFT reads chat and text records alike."""
    t = record_type(fmt)
    return SFT_RECORDS if t in SFT_RECORDS else t


def load_many(
    paths,
    fmt: str | None = None,
    *,
    system_prompt: str | None = None,
    max_error_rate: float = 0.0,
    expect: tuple[str, ...] | None = None,
    columns: dict[str, str] | None = None,
) -> LoadResult:
    """Load several files (each checked on its own) into one list of records of one type.

    Files whose records are of one type mix (chat, alpaca and sharegpt all become ChatRecords;
    the result's format is then "chat"), and so do chat and text files (both are SFT data). An
    mlx-lm data folder stands for its train.jsonl.
    """
    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    if not paths:
        raise DataError("no data files given")
    paths = [f for p in paths for f in data_folder(p)[0]]
    results = [
        load_jsonl(p, fmt, system_prompt=system_prompt, max_error_rate=max_error_rate,
                   expect=expect, columns=columns)
        for p in paths
    ]
    first = results[0].format
    for p, r in zip(paths, results):
        if _kind_of(r.format) is not _kind_of(first):
            raise DataError(f"{p}: is '{r.format}' data but {paths[0]} is '{first}' data")
    formats = {r.format for r in results}
    return LoadResult(
        records=[rec for r in results for rec in r.records],
        format=first if len(formats) == 1 else "chat",
        n_lines=sum(r.n_lines for r in results),
        problems=[p for r in results for p in r.problems],
        warnings=[w for r in results for w in r.warnings],
        hints=[h for r in results for h in r.hints],
    )
