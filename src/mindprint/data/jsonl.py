"""Read JSONL data files into typed records, reporting ``file:line: field: what`` problems.

Every line is checked, not only the first bad one, so a user can fix a file in one pass. A file
is read as bytes and split on ``\\n`` before decoding: one bad byte then spoils one line, not the
file, and Unicode line separators (U+2028, U+0085) inside JSON strings never split a record.

The format of a file is detected from its keys unless the caller names it (see
:func:`detect_format`); all records of a file share one format. Bad lines are skipped and
returned as problems while their share stays within ``max_error_rate`` (0 by default: any bad
line is an error), so a caller can choose to warn instead of refusing a large scraped file.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mindprint.data.records import (
    FORMATS,
    RECORD_TYPE,
    ROLES,
    ChatRecord,
    KTORecord,
    Message,
    Messages,
    PreferenceRecord,
    PromptRecord,
    Record,
)
from mindprint.errors import DataError

# Most specific first: a preference or KTO line may also carry "messages" or "prompt", and a
# preference or KTO line that lost a key looks like a prompt line, never the other way round.
_SPECIFIC_FIRST = ("preference", "kto", "chat", "alpaca", "prompt")
_KEYS_HINT = (
    "expected messages (chat), instruction + output (alpaca), chosen + rejected (preference), "
    "completion + label (kto) or prompt (prompt)"
)


class _Problem(ValueError):
    """One thing wrong with one line. ``field`` is a path like ``messages[2].role``, or None."""

    def __init__(self, field: str | None, what: str):
        super().__init__(f"{field}: {what}" if field else what)
        self.field = field
        self.what = what


def detect_format(obj: dict) -> str | None:
    """The format whose distinctive keys ``obj`` has, or None."""
    if "chosen" in obj and "rejected" in obj:
        return "preference"
    if "completion" in obj and "label" in obj:
        return "kto"
    if "messages" in obj:
        return "chat"
    if "instruction" in obj and "output" in obj:
        return "alpaca"
    if "prompt" in obj:
        return "prompt"
    return None


# ---------------------------------------------------------------------------------- values


def _kind(value) -> str:
    """The JSON name of a value's type: users wrote JSON, not Python."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _show(value, limit: int = 40) -> str:
    """A short JSON rendering of a bad value, safe to print (lone surrogates escaped)."""
    text = json.dumps(value, ensure_ascii=False)
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _string(value, field: str, *, empty_ok: bool = False) -> str:
    if not isinstance(value, str):
        raise _Problem(field, f"must be a string, got {_kind(value)}")
    if not empty_ok and not value.strip():
        raise _Problem(field, "must not be empty")
    try:
        value.encode("utf-8")  # "\ud800" is valid JSON but no tokenizer can encode it
    except UnicodeEncodeError:
        raise _Problem(field, "contains an unpaired surrogate escape (\\ud800-\\udfff)") from None
    return value


def _required(obj: dict, key: str):
    if key not in obj:
        raise _Problem(key, "missing")
    return obj[key]


def _optional(obj: dict, key: str, *, empty_ok: bool = False) -> str | None:
    # null means absent: exporters often write "input": null for "no input".
    value = obj.get(key)
    return None if value is None else _string(value, key, empty_ok=empty_ok)


def _messages(value, field: str) -> Messages:
    if not isinstance(value, list):
        raise _Problem(field, f"must be a list of messages, got {_kind(value)}")
    if not value:
        raise _Problem(field, "must not be empty")
    out = []
    for i, item in enumerate(value):
        at = f"{field}[{i}]"
        if not isinstance(item, dict):
            raise _Problem(at, f"must be an object with role and content, got {_kind(item)}")
        if "role" not in item:
            raise _Problem(f"{at}.role", "missing")
        role = item["role"]
        if not isinstance(role, str) or role not in ROLES:
            raise _Problem(f"{at}.role", f"unknown role {_show(role)}; expected one of {', '.join(ROLES)}")
        if role == "system" and i > 0:
            raise _Problem(f"{at}.role", "a system message may only come first")
        if "content" not in item:
            raise _Problem(f"{at}.content", "missing")
        out.append(Message(role, _string(item["content"], f"{at}.content")))
    return tuple(out)


def _prompt(value, field: str) -> Messages:
    """A string (one user turn) or messages ending with the user's turn."""
    if isinstance(value, str):
        return (Message("user", _string(value, field)),)
    if not isinstance(value, list):
        raise _Problem(field, f"must be a string or a list of messages, got {_kind(value)}")
    msgs = _messages(value, field)
    if msgs[-1].role != "user":
        raise _Problem(f"{field}[{len(msgs) - 1}].role",
                       f'a prompt must end with a user turn, got {_show(msgs[-1].role)}')
    return msgs


def _prompt_of(obj: dict) -> Messages:
    """Preference and KTO prompts come as "prompt" or, conversation style, as "messages"."""
    if "prompt" in obj and "messages" in obj:
        raise _Problem(None, "give prompt or messages, not both")
    key = "messages" if "messages" in obj else "prompt"
    return _prompt(_required(obj, key), key)


def _completion(value, field: str) -> Messages:
    """A string (one assistant turn) or a list of assistant messages."""
    if isinstance(value, str):
        return (Message("assistant", _string(value, field)),)
    if not isinstance(value, list):
        raise _Problem(field, f"must be a string or a list of assistant messages, got {_kind(value)}")
    msgs = _messages(value, field)
    for i, m in enumerate(msgs):
        if m.role != "assistant":
            raise _Problem(f"{field}[{i}].role", f'must be "assistant", got {_show(m.role)}')
    return msgs


# --------------------------------------------------------------------------------- formats


def _chat(obj, topic, where, system_prompt) -> ChatRecord:
    # A chat record states its own system message; the configured one is for alpaca/prompt data.
    msgs = _messages(_required(obj, "messages"), "messages")
    if msgs[-1].role != "assistant":
        raise _Problem(f"messages[{len(msgs) - 1}].role",
                       f'the last turn must be "assistant" (it is trained on), got {_show(msgs[-1].role)}')
    if not any(m.role == "user" for m in msgs):
        raise _Problem("messages", "needs at least one user turn")
    return ChatRecord(msgs, topic, where)


def _alpaca(obj, topic, where, system_prompt) -> ChatRecord:
    instruction = _string(_required(obj, "instruction"), "instruction")
    extra = _optional(obj, "input", empty_ok=True)  # the original Alpaca data has "input": ""
    output = _string(_required(obj, "output"), "output")
    user = instruction + ("\n\n" + extra if extra and extra.strip() else "")
    system = (Message("system", system_prompt),) if system_prompt else ()
    return ChatRecord((*system, Message("user", user), Message("assistant", output)), topic, where)


def _preference(obj, topic, where, system_prompt) -> PreferenceRecord:
    prompt = _prompt_of(obj)
    chosen = _completion(_required(obj, "chosen"), "chosen")
    rejected = _completion(_required(obj, "rejected"), "rejected")
    # Pairs equal up to surrounding whitespace carry no preference signal, only noise.
    if [(m.role, m.content.strip()) for m in chosen] == [(m.role, m.content.strip()) for m in rejected]:
        raise _Problem(None, "chosen equals rejected")
    return PreferenceRecord(prompt, chosen, rejected, topic, where)


def _kto(obj, topic, where, system_prompt) -> KTORecord:
    prompt = _prompt_of(obj)
    completion = _completion(_required(obj, "completion"), "completion")
    label = _required(obj, "label")
    if not isinstance(label, bool):  # 0/1 or "true" usually means a column was mis-exported
        raise _Problem("label", f"must be true or false, got {_show(label)}")
    return KTORecord(prompt, completion, label, topic, where)


def _prompt_record(obj, topic, where, system_prompt) -> PromptRecord:
    prompt = _prompt(_required(obj, "prompt"), "prompt")
    answer = _optional(obj, "answer")
    system = _optional(obj, "system")
    if system is not None:
        if prompt[0].role == "system":
            raise _Problem("system", "the prompt already starts with a system message")
        prompt = (Message("system", system), *prompt)
    elif system_prompt and prompt[0].role != "system":
        prompt = (Message("system", system_prompt), *prompt)
    return PromptRecord(prompt, answer, topic, where)


_PARSERS = {
    "chat": _chat,
    "alpaca": _alpaca,
    "preference": _preference,
    "kto": _kto,
    "prompt": _prompt_record,
}
assert set(_PARSERS) == set(FORMATS)


def parse_record(obj, fmt: str, where: str = "", *, system_prompt: str | None = None) -> Record:
    """Validate one JSON value as a ``fmt`` record; raise ``_Problem`` (a ValueError) if invalid.

    Keys a format does not use are ignored, so one file can feed several methods.
    """
    if fmt not in _PARSERS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not isinstance(obj, dict):
        raise _Problem(None, f"expected a JSON object, got {_kind(obj)}")
    topic = _optional(obj, "topic")
    return _PARSERS[fmt](obj, topic, where, system_prompt)


# ----------------------------------------------------------------------------------- files


@dataclass
class LoadResult:
    records: list
    format: str  # None only inside validation, when no line revealed a format
    n_lines: int  # non-blank lines: records plus bad lines
    problems: list[str] = field(default_factory=list)


def iter_lines(path):
    """Yield ``(line number from 1, byte offset, line bytes without "\\n")`` for every non-blank
    line, reading one line at a time; file-level trouble raises DataError.

    The offset lets a caller seek back to a line without holding the file in memory.
    """
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{path}: is a directory, not a file")
    try:
        f = open(p, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
    with f:
        offset = 0
        for n, raw in enumerate(f, 1):
            start, line = offset, raw
            offset += len(raw)
            if n == 1:
                if line.startswith((b"\xff\xfe", b"\xfe\xff")):
                    raise DataError(f"{path}: file is UTF-16; save it as UTF-8")
                if line.startswith(b"\xef\xbb\xbf"):  # editors on Windows add a UTF-8 BOM
                    start, line = start + 3, line[3:]
            line = line.removesuffix(b"\n")
            if line.strip():
                yield n, start, line


def _read_lines(path) -> list[tuple[int, bytes]]:
    """Non-blank lines as (line number from 1, bytes); file-level trouble raises DataError."""
    lines = [(n, line) for n, _, line in iter_lines(path)]
    if not lines:
        raise DataError(f"{path}: file is empty")
    return lines


def _decode(line: bytes):
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _Problem(None, f"invalid UTF-8: byte 0x{line[err.start]:02x} at offset {err.start}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise _Problem(None, f"invalid JSON: {err.msg} (column {err.colno})") from None
    except ValueError as err:  # e.g. an integer beyond Python's digit limit
        raise _Problem(None, f"invalid JSON: {err}") from None
    except RecursionError:
        raise _Problem(None, "invalid JSON: nested too deeply") from None
    if not isinstance(value, dict):
        raise _Problem(None, f"expected a JSON object, got {_kind(value)}")
    return value


def _vote(objs: list[dict]) -> str | None:
    """The file's format: the one most lines show; ties go to the more specific format."""
    counts = Counter(f for obj in objs if (f := detect_format(obj)))
    if not counts:
        return None
    return max(counts, key=lambda f: (counts[f], -_SPECIFIC_FIRST.index(f)))


def parse_line(obj: dict, fmt: str, where: str, *, system_prompt: str | None = None) -> Record:
    """:func:`parse_record` for one line of a ``fmt`` file: a problem on a line that looks like
    another format says so, since a mixed-up file is the likelier mistake than a bad field."""
    try:
        return parse_record(obj, fmt, where, system_prompt=system_prompt)
    except _Problem as p:
        seen = detect_format(obj)
        if seen not in (None, fmt):
            raise _Problem(p.field, f"{p.what} (this line looks like {seen} data; the file is "
                                    f"{fmt} data)") from None
        raise


def _read(path, fmt: str | None, system_prompt: str | None) -> LoadResult:
    """Parse every line of ``path``; judging the error rate is left to the caller."""
    bad: list[tuple[int, _Problem]] = []
    objs: list[tuple[int, dict]] = []
    for n, raw in _read_lines(path):
        try:
            objs.append((n, _decode(raw)))
        except _Problem as p:
            bad.append((n, p))
    fmt = fmt or _vote([obj for _, obj in objs])
    records = []
    for n, obj in objs:
        if fmt is None:
            bad.append((n, _Problem(None, f"cannot tell the format: {_KEYS_HINT}")))
            continue
        try:
            records.append(parse_line(obj, fmt, f"{path}:{n}", system_prompt=system_prompt))
        except _Problem as p:
            bad.append((n, p))
    bad.sort(key=lambda item: item[0])
    return LoadResult(records, fmt, len(records) + len(bad), [f"{path}:{n}: {p}" for n, p in bad])


def _either(formats: Iterable[str]) -> str:
    names = list(formats)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _check_format_name(fmt: str | None) -> None:
    if fmt is not None and fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def load_jsonl(
    path,
    fmt: str | None = None,
    *,
    system_prompt: str | None = None,
    max_error_rate: float = 0.0,
    expect: tuple[str, ...] | None = None,
) -> LoadResult:
    """Load one JSONL file of ``fmt`` records (detected when None).

    ``expect`` lists the formats the caller can use. Raises DataError when the file is missing or
    empty, of an unexpected format, has no valid record, or has more than ``max_error_rate`` of its
    non-blank lines invalid (then ``err.problems`` holds every problem).
    """
    _check_format_name(fmt)
    if not 0.0 <= max_error_rate <= 1.0:
        raise ValueError(f"max_error_rate must be within [0, 1], got {max_error_rate}")
    result = _read(path, fmt, system_prompt)
    if expect is not None and result.format is not None and result.format not in expect:
        raise DataError(f"{path}: is '{result.format}' data but this needs {_either(expect)}")
    n_bad = result.n_lines - len(result.records)
    if not result.records or n_bad / result.n_lines > max_error_rate:
        raise DataError(f"{path}: {n_bad} of {result.n_lines} lines are invalid", result.problems)
    return result


def load_many(
    paths,
    fmt: str | None = None,
    *,
    system_prompt: str | None = None,
    max_error_rate: float = 0.0,
    expect: tuple[str, ...] | None = None,
) -> LoadResult:
    """Load several files (each checked on its own) into one list of records of one type.

    chat and alpaca files mix (both become ChatRecords; the result's format is then "chat").
    """
    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    if not paths:
        raise DataError("no data files given")
    results = [
        load_jsonl(p, fmt, system_prompt=system_prompt, max_error_rate=max_error_rate, expect=expect)
        for p in paths
    ]
    first = results[0].format
    for p, r in zip(paths, results):
        if RECORD_TYPE[r.format] is not RECORD_TYPE[first]:
            raise DataError(f"{p}: is '{r.format}' data but {paths[0]} is '{first}' data")
    formats = {r.format for r in results}
    return LoadResult(
        records=[rec for r in results for rec in r.records],
        format=first if len(formats) == 1 else "chat",
        n_lines=sum(r.n_lines for r in results),
        problems=[p for r in results for p in r.problems],
    )
