"""Table columns → record keys, for CSV/TSV, Parquet and ``datasets`` tables.

A column named like a record key (``messages``, ``conversations``, ``prompt``, ``chosen``, …)
is that key. Otherwise the first column (case and surrounding spaces ignored) of each list
below fills the key; a column is used once:

| key                         | columns, first found wins                                          |
|-----------------------------|--------------------------------------------------------------------|
| instruction                 | instruction                                                        |
| input (with instruction)    | input, context                                                     |
| output (with instruction)   | output, response, answer, completion, assistant, gpt, reply        |
| prompt (no instruction)     | prompt, question, query, user, human, input                        |
| completion (no instruction) | completion, response, answer, output, assistant, gpt, reply        |
| text, chosen, rejected      | the same name                                                      |
| label                       | label, kto_tag                                                     |
| system                      | system, system_prompt                                              |
| topic                       | topic, category                                                    |

So question/answer, prompt/response, input/output, user/assistant tables are SFT data
(``completion`` format), instruction/input/output tables alpaca data, prompt/chosen/rejected
tables preference data, prompt/completion/label tables KTO data. ``answer`` is read as the
completion; for RL prompts with a reference answer map it explicitly (``answer=answer``).
``--columns KEY=COLUMN,...`` maps explicitly and wins over the table.

Cells: an empty cell (or a null) is an absent value; in text tables a ``label`` of
true/false/yes/no/1/0 is a boolean; a cell of a list-valued key (messages, conversations,
history, tools) must hold JSON; a prompt/completion/chosen/rejected cell is a message list only if
it parses as a JSON list of turns, else it is text. Columns that fill no key are
noted once per row (``column 'id': not used``), never silently ignored.
"""

from __future__ import annotations

import json

from mindprint.data.fields import Problem
from mindprint.data.formats import VOCABULARY
from mindprint.errors import DataError

ANSWERS = ("response", "answer", "assistant", "gpt", "reply")
SYNONYMS_INSTRUCTION = (("input", ("input", "context")),
                        ("output", ("output", *ANSWERS, "completion")))
SYNONYMS_PLAIN = (("prompt", ("prompt", "question", "query", "user", "human", "input")),
                  ("completion", ("completion", *ANSWERS, "output")))
SYNONYMS_ALWAYS = (("label", ("label", "kto_tag")), ("system", ("system", "system_prompt")),
                   ("topic", ("topic", "category")))
# keys whose value is never plain text: a text cell there must hold JSON
JSON_KEYS = {"messages", "conversations", "history", "tools", "preferred_output",
             "non_preferred_output"}
# keys that are text or a message list: a cell is a message list only if it parses as one
# (an answer may well start with "[" or "{" — code, a quoted list)
MAYBE_MESSAGES = {"prompt", "chosen", "rejected", "completion"}
TRUE, FALSE = {"true", "yes", "1", "1.0"}, {"false", "no", "0", "0.0"}


def parse_columns(spec: str | None) -> dict[str, str] | None:
    """``"prompt=Frage,completion=Antwort"`` → {"prompt": "Frage", "completion": "Antwort"}."""
    if not spec:
        return None
    out = {}
    for part in spec.split(","):
        key, sep, col = part.partition("=")
        key, col = key.strip(), col.strip()
        if not sep or not key or not col:
            raise DataError(f"--columns: {part!r} is not KEY=COLUMN (e.g. prompt=question)")
        if key not in VOCABULARY:
            raise DataError(f"--columns: {key!r} is not a record key; use one of "
                            f"{', '.join(sorted(VOCABULARY))}")
        out[key] = col
    return out


def _messages_or_text(cell: str):
    """A cell's message list ([{"role", "content"}, ...] as JSON), else the cell's text."""
    try:
        value = json.loads(cell)
    except json.JSONDecodeError:
        return cell
    is_turns = isinstance(value, list) and value and all(
        isinstance(m, dict) and ("role" in m or "from" in m) for m in value)
    return value if is_turns else cell


class Table:
    """The column → key map of one table, decided from its header once."""

    def __init__(self, header, explicit: dict[str, str] | None, path: str):
        names = [str(h) for h in header]
        norm = {n.strip().lower(): n for n in reversed(names)}  # first spelling wins
        self.map: dict[str, str] = {}  # column → key
        for key, col in (explicit or {}).items():
            if col not in names:
                raise DataError(f"{path}: column mapping {key}={col} (--columns / data.columns): "
                                f"no such column; the columns are {', '.join(names)}")
            self.map[col] = key
        taken = set(self.map.values())

        def take(key: str, candidates) -> None:
            if key in taken:
                return
            for c in candidates:
                col = norm.get(c)
                if col is not None and col not in self.map:
                    self.map[col], _ = key, taken.add(key)
                    return

        for n in names:  # a column named like a record key is that key
            key = n.strip().lower()
            if key in VOCABULARY and key not in taken and n not in self.map \
                    and key not in ("input", "output", "answer"):
                self.map[n], _ = key, taken.add(key)
        synonyms = SYNONYMS_INSTRUCTION if "instruction" in taken else SYNONYMS_PLAIN
        for key, candidates in (*synonyms, *SYNONYMS_ALWAYS):
            take(key, candidates)
        if "chosen" in taken:  # preference tables have no single completion
            self.map = {c: k for c, k in self.map.items() if k != "completion"}
        self.unused = [n for n in names if n not in self.map]
        if not self.map:
            raise DataError(f"{path}: no column names a record field (columns: {', '.join(names)}); "
                            "map them with --columns KEY=COLUMN, e.g. prompt=question,completion=reply")

    def obj(self, row: dict) -> tuple[dict, list[str]]:
        """One row as a record object, and the columns with a value that fill no key."""
        obj = {}
        for col, key in self.map.items():
            value = row.get(col)
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            if isinstance(value, str) and key == "label":
                low = value.strip().lower()
                value = True if low in TRUE else False if low in FALSE else value
            elif isinstance(value, str) and key in JSON_KEYS:
                try:
                    value = json.loads(value)
                except json.JSONDecodeError as err:
                    raise Problem(key, f"column {col!r} must hold JSON here: {err.msg}") from None
            elif isinstance(value, str) and key in MAYBE_MESSAGES and value.lstrip()[:1] == "[":
                value = _messages_or_text(value)
            obj[key] = value
        return obj, [c for c in self.unused if row.get(c) not in (None, "")]
