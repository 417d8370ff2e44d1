"""``mindprint data validate``: check data files before a run spends time on them.

Unlike :func:`mindprint.data.jsonl.load_jsonl`, validation never stops at a bad line: it reports
every problem, one ``file:line: field: what`` line each, so editors and CI can jump to them.
Values read but not used are reported as counted ``warning:`` lines, file-level hints (an
encoding, a high share of bad lines) as ``hint:`` lines. An mlx-lm data folder is validated
file by file (train, valid, test).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from mindprint.data.columns import parse_columns
from mindprint.data.jsonl import _check_format_name, _read, invalid_summary
from mindprint.data.sources import mlx_folder
from mindprint.errors import DataError


@dataclass
class ValidationReport:
    path: str
    format: str | None  # None when no line revealed a format
    total: int  # non-blank lines
    valid: int
    invalid: int
    topics: dict[str, int] = field(default_factory=dict)  # valid records per topic, first-seen order
    no_topic: int = 0  # valid records without a topic
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.invalid == 0


def validate_file(path, fmt: str | None = None, *, columns: dict[str, str] | None = None
                  ) -> ValidationReport:
    """Check every record of ``path``. File-level trouble (missing, empty) raises DataError."""
    _check_format_name(fmt)
    result = _read(path, fmt, system_prompt=None, columns=columns)
    topics = Counter(r.topic for r in result.records)  # Counter keeps first-seen order
    no_topic = topics.pop(None, 0)
    return ValidationReport(
        path=str(path),
        format=result.format,
        total=result.n_lines,
        valid=len(result.records),
        invalid=result.n_lines - len(result.records),
        topics=dict(topics),
        no_topic=no_topic,
        problems=result.problems,
        warnings=result.warnings,
        hints=result.hints,
    )


def format_report(report: ValidationReport) -> str:
    """``ok: 170 records (chat) in FILE; topics: …`` or one line per problem and a total; then
    counted warnings and hints."""
    extra = [f"warning: {w}" for w in report.warnings] + [f"hint: {h}" for h in report.hints]
    if not report.ok:
        total = invalid_summary(report.path, report.invalid, report.total, 0.0)
        return "\n".join([*report.problems, total, *extra])
    text = f"ok: {report.valid} records ({report.format}) in {report.path}"
    if report.topics:
        parts = [f"{name} {count}" for name, count in report.topics.items()]
        if report.no_topic:
            parts.append(f"no topic {report.no_topic}")
        text += "; topics: " + ", ".join(parts)
    return "\n".join([text, *extra])


def cmd_validate(paths: list[str], fmt: str | None = None, columns: str | None = None) -> int:
    """Validate each file, print the reports to stdout, return the exit code (0 ok, 2 invalid)."""
    if not paths:
        print("no data files given")
        return DataError.exit_code
    code = 0
    try:
        mapping = parse_columns(columns)
    except DataError as err:
        print(str(err))
        return err.exit_code
    files = [str(f) for p in paths for f in (mlx_folder(p) or {"": p}).values()]
    for path in files:
        try:
            report = validate_file(path, fmt, columns=mapping)
        except DataError as err:
            print("\n".join([*err.problems, str(err)]))
            code = err.exit_code
            continue
        print(format_report(report))
        if not report.ok:
            code = DataError.exit_code
    return code
