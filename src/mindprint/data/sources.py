"""File kinds: everything a data path can be, read as a stream of :class:`Item` (its place, its
raw form, the JSON object or the problem that kept it from being one), so the loader, the data
tools and ``data validate`` share one validator whatever the file kind.

| path                                   | read as                                     | ``where``     |
|----------------------------------------|---------------------------------------------|---------------|
| ``*.jsonl`` (any other name)           | JSON Lines, one object per line             | ``file:LINE`` |
| ``*.json``                             | one JSON array of objects (or JSON Lines)   | see below     |
| ``*.csv`` / ``*.tsv``                  | a table with a header row (``csv`` module)  | ``file:LINE`` |
| ``*.parquet``                          | a table (``pyarrow``)                       | ``file:[i]``  |
| a ``datasets`` ``save_to_disk`` folder | a table (``datasets``, when installed)      | ``dir:[i]``   |
| an mlx-lm folder (``train.jsonl``,     | :func:`data_folder` resolves it to its      |               |
| ``valid.jsonl``, ``test.jsonl``)       | files (train; valid as eval)                |               |
| ``owner/name`` that is not a path      | a Hub dataset's train split (``datasets``)  | ``id:[i]``    |

A JSON array element is reported at the line where it starts (``file.json:14``) when every
element starts on its own line, else (a one-line array) by its index (``file.json:[12]``).
Table rows become objects through :mod:`mindprint.data.columns`.

File-level trouble says so once instead of once per line: a JSON array or pretty-printed JSON
in a ``.jsonl`` file, a file that is not UTF-8 but reads as cp1252/Latin-1 (a hint appended to
``hints``), a folder that is a ``DatasetDict``, a Hub id while offline.

Libraries: ``csv`` (standard library) for tables, ``pyarrow`` for Parquet (already a dependency
of ``datasets``), ``datasets`` for saved datasets and the Hub: each reads its format better than
hand-written code could.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mindprint.config_paths import is_hub_id
from mindprint.data.columns import Table
from mindprint.data.fields import Problem, kind
from mindprint.errors import DataError
from mindprint.models import network_allowed

MLX_FILES = ("train", "valid", "test")
# file kinds one uploaded file can be (a folder or a Hub id cannot be uploaded)
FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
_TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}


@dataclass
class Item:
    where: str              # "file:line" or "file:[index]"
    n: int                  # ordinal from 1 (the line number for JSON Lines)
    offset: int | None      # byte offset of a JSON Lines line; None for other kinds
    raw: bytes              # the line as written, or the object as one JSON line
    obj: dict | None        # None when ``problem`` says why there is none
    problem: Problem | None = None
    notes: tuple = ()       # (field, what) about values of the source that fill no key


# ---------------------------------------------------------------------------- JSON Lines


def iter_lines(path):
    """Yield ``(line number from 1, byte offset, line bytes without "\\n")`` for every non-blank
    line, reading one line at a time; file-level trouble raises DataError."""
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


def decode(line: bytes) -> dict:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        raise Problem(None, f"invalid UTF-8: byte 0x{line[err.start]:02x} at offset {err.start}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise Problem(None, f"invalid JSON: {err.msg} (column {err.colno})") from None
    except ValueError as err:  # e.g. an integer beyond Python's digit limit
        raise Problem(None, f"invalid JSON: {err}") from None
    except RecursionError:
        raise Problem(None, "invalid JSON: nested too deeply") from None
    if not isinstance(value, dict):
        raise Problem(None, f"expected a JSON object, got {kind(value)}")
    return value


def _legacy(raw: bytes) -> str | None:
    """The 8-bit encoding a non-UTF-8 line reads as: cp1252 (Windows), else Latin-1."""
    for enc in ("cp1252", "latin-1"):
        try:
            raw.decode(enc)
            return enc
        except UnicodeDecodeError:
            continue
    return None


def _whole_json(path) -> str | None:
    """Why a .jsonl file whose first line is not a JSON object is not JSON Lines, if it is one
    JSON value (an array, or an object spread over lines), else None."""
    data = Path(path).read_bytes().removeprefix(b"\xef\xbb\xbf")
    try:
        text = data.decode("utf-8")
        value, end = json.JSONDecoder().raw_decode(text, len(text) - len(text.lstrip()))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if isinstance(value, list) and not text[end:].strip():  # the whole file, not a first line
        return ("holds one JSON array, not JSON Lines (one object per line); name it *.json to "
                "read it as an array")
    if isinstance(value, dict) and "\n" in text[:end].strip():
        last = text.count("\n", 0, end) + 1
        return (f"holds pretty-printed JSON (the first object spans lines 1-{last}); JSON Lines "
                "needs each object on one line (e.g. jq -c . FILE)")
    return None


def _jsonl(path, hints: list[str]) -> Iterator[Item]:
    legacy: set[str] = set()
    bad_utf8 = 0
    for n, offset, raw in iter_lines(path):
        try:
            yield Item(f"{path}:{n}", n, offset, raw, decode(raw))
        except Problem as p:
            if n == 1 or (n <= 3 and raw.strip() in (b"{", b"[")):
                why = _whole_json(path)
                if why:
                    raise DataError(f"{path}: {why}") from None
            if p.what.startswith("invalid UTF-8"):
                bad_utf8 += 1
                legacy.add(_legacy(raw) or "")
            yield Item(f"{path}:{n}", n, offset, raw, None, p)
    if bad_utf8:
        enc = "cp1252 (Windows-1252)" if legacy == {"cp1252"} else "Latin-1"
        hints.append(f"{path}: {bad_utf8} line(s) are not UTF-8 but read as {enc}; "
                     "save the file as UTF-8")


# ------------------------------------------------------------------------------ JSON array


def _utf8_text(path, hints: list[str]) -> str:
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        enc = _legacy(data) or "an unknown encoding"
        raise DataError(f"{path}:{line}: invalid UTF-8 (byte 0x{data[err.start]:02x}); the file "
                        f"reads as {enc}: save it as UTF-8") from None


def _json_array(path, hints: list[str]) -> Iterator[Item]:
    if Path(path).is_dir():
        raise DataError(f"{path}: is a directory, not a file")
    text = _utf8_text(path, hints)
    dec = json.JSONDecoder()
    i = len(text) - len(text.lstrip())
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    if text[i] != "[":  # a .json file written as JSON Lines is read as such
        yield from _jsonl(path, hints)
        return
    elements: list[tuple[int, int, object]] = []  # (start line, start char, value)
    i, line, counted = i + 1, 1, 0
    while True:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        if i < len(text) and text[i] == "]":
            break
        line += text.count("\n", counted, i)
        counted = i
        try:
            value, end = dec.raw_decode(text, i)
        except (ValueError, RecursionError) as err:
            what = err.msg if isinstance(err, json.JSONDecodeError) else "nested too deeply"
            at = getattr(err, "lineno", line)
            raise DataError(f"{path}:{at}: invalid JSON in the array: {what}") from None
        elements.append((line, i, value))
        i = end
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        if i < len(text) and text[i] == ",":
            i += 1
        elif i >= len(text) or text[i] != "]":
            at = line + text.count("\n", counted, min(i, len(text)))
            raise DataError(f"{path}:{at}: invalid JSON in the array: expected ',' or ']'")
    by_line = len({ln for ln, _, _ in elements}) == len(elements)
    for k, (ln, _, value) in enumerate(elements):
        where = f"{path}:{ln}" if by_line else f"{path}:[{k}]"
        raw = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
        if isinstance(value, dict):
            yield Item(where, k + 1, None, raw, value)
        else:
            yield Item(where, k + 1, None, raw, None,
                       Problem(None, f"expected a JSON object, got {kind(value)}"))


# ---------------------------------------------------------------------------------- tables


def _rows(where_of, header, rows, path, columns) -> Iterator[Item]:
    table = Table(header, columns, str(path))
    for k, (where, row) in enumerate(zip(where_of, rows)):
        try:
            obj, unused = table.obj(row)
        except Problem as p:
            yield Item(where, k + 1, None, b"", None, p)
            continue
        raw = json.dumps(obj, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass")
        yield Item(where, k + 1, None, raw, obj, None,
                   tuple((f"column {c!r}", "not used") for c in unused))


def _csv(path, hints, columns) -> Iterator[Item]:
    text = _utf8_text(path, hints)
    # newline="": lines end at \n, \r\n or \r only (as the csv module wants), never at U+2028
    reader = csv.reader(io.StringIO(text, newline=""),
                        delimiter=_TABLE_SUFFIXES[Path(path).suffix.lower()])
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: file is empty") from None
    except csv.Error as err:
        raise DataError(f"{path}:1: {err}") from None
    wheres, rows, start = [], [], reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise DataError(f"{path}:{start}: {err}") from None
        if any(cell.strip() for cell in row):
            if len(row) != len(header):
                raise DataError(f"{path}:{start}: {len(row)} cells but the header has "
                                f"{len(header)}; quote cells that contain the delimiter")
            wheres.append(f"{path}:{start}")
            rows.append(dict(zip(header, row)))
        start = reader.line_num + 1
    yield from _rows(wheres, header, rows, path, columns)


def _parquet(path, hints, columns) -> Iterator[Item]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read as Parquet ({err})") from None
    rows = table.to_pylist()
    yield from _rows((f"{path}:[{k}]" for k in range(len(rows))), table.column_names, rows,
                     path, columns)


def _dataset(path, hints, columns, ds) -> Iterator[Item]:
    yield from _rows((f"{path}:[{k}]" for k in range(len(ds))), ds.column_names, iter(ds),
                     path, columns)


def _saved_dataset(path, hints, columns) -> Iterator[Item]:
    try:
        import datasets
    except ImportError:
        raise DataError(f"{path}: a saved dataset folder needs the datasets library "
                        "(pip install datasets)") from None
    p = Path(path)
    if (p / "dataset_dict.json").is_file():
        splits = sorted(q.name for q in p.iterdir() if q.is_dir())
        raise DataError(f"{path}: is a DatasetDict with splits {', '.join(splits)}; give one "
                        f"split's folder, e.g. {p / (splits[0] if splits else 'train')}")
    try:
        ds = datasets.load_from_disk(str(p))
    except Exception as err:  # datasets raises many kinds; all mean "not a saved dataset"
        raise DataError(f"{path}: cannot read the saved dataset ({err})") from None
    yield from _dataset(path, hints, columns, ds)


def _hub(path, hints, columns) -> Iterator[Item]:
    # offline unless the user explicitly allowed the Hub, as for models (models.network_allowed)
    if not network_allowed():
        raise DataError(f"{path}: no such file; as a Hugging Face Hub dataset id it needs the "
                        "network, which Mindprint uses only when asked (HF_HUB_OFFLINE=0). Or "
                        "save it once with datasets' save_to_disk and pass that folder, or a file")
    try:
        import datasets
    except ImportError:
        raise DataError(f"{path}: no such file (a Hub dataset id needs the datasets "
                        "library)") from None
    try:
        ds = datasets.load_dataset(path, split="train")
    except Exception as err:  # network, auth, missing split: all are "cannot load"
        raise DataError(f"{path}: no such file, and loading it as a Hub dataset failed "
                        f"({type(err).__name__}: {err})") from None
    yield from _dataset(path, hints, columns, ds)


def is_saved_dataset(p: Path) -> bool:
    return p.is_dir() and any((p / f).is_file() for f in
                              ("dataset_info.json", "state.json", "dataset_dict.json"))


def mlx_folder(path) -> dict[str, Path] | None:
    """An mlx-lm data folder's files by split (train, valid, test), or None if not one."""
    p = Path(path)
    if not p.is_dir():
        return None
    found = {s: p / f"{s}.jsonl" for s in MLX_FILES if (p / f"{s}.jsonl").is_file()}
    return found if "train" in found else None


def data_folder(path) -> tuple[list[str], list[str]]:
    """(train files, eval files) of a data path: an mlx-lm folder gives its train.jsonl and, as
    eval, its valid.jsonl; anything else is its own train file."""
    found = mlx_folder(path)
    if found is None:
        return [str(path)], []
    return [str(found["train"])], [str(found["valid"])] if "valid" in found else []


def iter_items(path, *, columns: dict[str, str] | None = None,
               hints: list[str] | None = None) -> Iterator[Item]:
    """Every record-to-be of ``path`` in order; file-level trouble raises DataError, hints
    about the whole file (an encoding, say) are appended to ``hints``."""
    hints = hints if hints is not None else []
    p = Path(path)
    suffix = p.suffix.lower()
    if p.is_dir():
        if is_saved_dataset(p):
            yield from _saved_dataset(path, hints, columns)
            return
        if mlx_folder(p):
            raise DataError(f"{path}: is an mlx-lm data folder; give {p / 'train.jsonl'} (as "
                            "data.train the folder means train.jsonl, valid.jsonl as eval)")
        found = [f"{s}.jsonl" for s in MLX_FILES if (p / f"{s}.jsonl").is_file()]
        if found:
            raise DataError(f"{path}: an mlx-lm data folder needs a train.jsonl (found "
                            f"{', '.join(found)})")
        raise DataError(f"{path}: is a directory, not a file (nor a saved dataset or an mlx-lm "
                        "data folder)")
    if not p.exists() and is_hub_id(str(path)):
        yield from _hub(path, hints, columns)
        return
    if columns and suffix not in (*_TABLE_SUFFIXES, ".parquet"):
        # said, not dropped silently: a config's data.columns may well serve other, table files
        hints.append(f"{path}: column mapping ({', '.join(f'{k}={c}' for k, c in columns.items())})"
                     " not used: only tables (CSV/TSV, Parquet, datasets) have columns; a JSON "
                     "file's keys are the record keys")
    if suffix == ".json":
        yield from _json_array(path, hints)
    elif suffix in _TABLE_SUFFIXES:
        if not p.exists():
            raise DataError(f"{path}: no such file")
        yield from _csv(path, hints, columns)
    elif suffix == ".parquet":
        if not p.exists():
            raise DataError(f"{path}: no such file")
        yield from _parquet(path, hints, columns)
    else:
        yield from _jsonl(path, hints)
