"""``mindprint data convert``: turn a file of one format into another, streaming.

* alpaca, sharegpt, prompt-completion (any format read as chat records) → chat: Mindprint's own
  ``messages`` form (weights and tools kept).
* chat (or alpaca) → prompt: RL prompts; the conversation up to its last user turn is the prompt,
  the last assistant turn the reference ``answer``.
* chat (or alpaca) → preference: the person's answer is ``chosen``; ``rejected`` is what the base
  model says to the same prompt (greedy). That is the pair voice training wants: the voice
  against the generic assistant it replaces.
* chat (or alpaca) → kto: each conversation gives a desirable example; with ``generate=True`` the
  base model's answer adds an undesirable one, so KTO sees both classes.
* preference → kto: each pair gives a desirable and an undesirable example (TRL's "unpairing").

Tool use travels: ``tools`` and the tool turns before the answer stay with the prompt. Where the
target cannot hold it (RL prompts have no tool list) or the base model would have to answer
without it (generated answers), the record is dropped and counted, never converted without it.

Keys no format uses (``topic``, ``id`` …) are carried over to the converted record.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol
from pathlib import Path

from mindprint.data.formats import VOCABULARY, record_type
from mindprint.data.records import ChatRecord, KTORecord, Messages, PreferenceRecord
from mindprint.data.stream import Drops, Line, Source, atomic_output, check_output, write_record
from mindprint.errors import DataError

Log = Callable[[str], None]
TARGETS = ("chat", "prompt", "preference", "kto")
# Keys that belong to some format: everything else on a line is the user's and travels along.
FORMAT_KEYS = VOCABULARY - {"topic"}
# what each target can be made from, by record type (chat: chat, alpaca, sharegpt, completion …)
SOURCES = {"chat": (ChatRecord,), "prompt": (ChatRecord,), "preference": (ChatRecord,),
           "kto": (ChatRecord, PreferenceRecord)}
SOURCE_NAMES = {ChatRecord: "chat (or alpaca, sharegpt, completion)",
                PreferenceRecord: "preference (any preference format)", KTORecord: "kto"}


def _stderr(text: str) -> None:
    print(text, file=sys.stderr)


@dataclass
class ConvertResult:
    output: Path
    source_format: str
    read: int        # valid input records
    written: int     # output records


def split_chat(messages: Messages) -> tuple[Messages, str]:
    """(prompt, answer): the turns up to and including the last user (or tool) turn, and the
    final assistant turn. Assistant turns between them, if any, have no turn to answer and go."""
    last = max(i for i, m in enumerate(messages) if m.role in ("user", "tool"))
    return messages[: last + 1], messages[-1].content


def uses_tools(record) -> bool:
    msgs = record.messages if isinstance(record, ChatRecord) else record.prompt
    return bool(record.tools) or any(m.tool_calls or m.role == "tool" for m in msgs)


def _without_tools(source: Source, drops: Drops) -> Iterator[Line]:
    for line in source:
        if uses_tools(line.record):
            drops.add("uses tools (prompt records have no tool list)", line.where)
        else:
            yield line


def _tools(record) -> dict:
    return {"tools": [dict(t) for t in record.tools]} if record.tools else {}


def prompt_value(prompt: Messages):
    """A single user turn as a plain string (the common form); anything longer as messages."""
    if len(prompt) == 1:
        return prompt[0].content
    return [m.as_dict() for m in prompt]


def _extras(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in FORMAT_KEYS}


def _completion_value(msgs: Messages):
    return msgs[0].content if len(msgs) == 1 else [m.as_dict() for m in msgs]


# ------------------------------------------------------------------- conversions without a model


def to_chat(line: Line) -> Iterator[dict]:
    rec: ChatRecord = line.record
    tools = {"tools": [dict(t) for t in rec.tools]} if rec.tools else {}
    yield {"messages": [m.as_json() for m in rec.messages], **tools, **_extras(line.obj)}


def to_prompt(line: Line) -> Iterator[dict]:
    prompt, answer = split_chat(line.record.messages)
    if len(prompt) == 2 and prompt[0].role == "system":  # the prompt format's own system key
        out = {"system": prompt[0].content, "prompt": prompt[1].content}
    else:
        out = {"prompt": prompt_value(prompt)}
    yield {**out, "answer": answer, **_extras(line.obj)}


def unpair(line: Line) -> Iterator[dict]:
    rec: PreferenceRecord = line.record
    for completion, label in ((rec.chosen, True), (rec.rejected, False)):
        yield {"prompt": prompt_value(rec.prompt), "completion": _completion_value(completion),
               "label": label, **_tools(rec), **_extras(line.obj)}


# ---------------------------------------------------------------------- conversions with a model


class Answers(Protocol):
    """Who writes the other side of a pair: an answer to each chat prompt, a batch at a time.

    The data layer does not load models; the caller passes a factory of these (the API and the
    CLI pass the base model's greedy answers, :class:`mindprint.backends.torch.generate.
    BaseAnswers`; tests may pass any object of this shape)."""

    batch_size: int
    name: str                                   # said in the log line: whose answers these are

    def __call__(self, prompts: list[Messages]) -> list[str]: ...

    def close(self) -> None: ...                # progress shown while answering ends here


AnswersFactory = Callable[[int], Answers]       # given how many prompts will be asked


def _batches(lines: Iterator[Line], size: int) -> Iterator[list[Line]]:
    batch = []
    for line in lines:
        batch.append(line)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _with_generations(source: Source, answer: Answers, drops: Drops):
    """(line, prompt, the person's answer, the base model's answer or None when unusable; the
    reason then goes to ``drops``)."""
    for batch in _batches(iter(source), answer.batch_size):
        parts = [split_chat(line.record.messages) for line in batch]
        # the base model answers without a tool list (generate renders none): no fair rival
        asked = [i for i, line in enumerate(batch) if not uses_tools(line.record)]
        generated = dict(zip(asked, answer([parts[i][0] for i in asked]) if asked else []))
        for i, (line, (prompt, mine)) in enumerate(zip(batch, parts)):
            where, theirs = line.where, generated.get(i, "").strip()
            if i not in generated:
                drops.add("uses tools (the base model would answer without them)", where)
                theirs = None
            elif not theirs:
                drops.add("the base model's answer is empty", where)
                theirs = None
            elif theirs == mine.strip():  # no preference signal in a pair of equals
                drops.add("the base model's answer equals the person's", where)
                theirs = None
            yield line, prompt, mine, theirs


def to_preference(source: Source, answer: Answers, drops: Drops) -> Iterator[dict]:
    for line, prompt, mine, theirs in _with_generations(source, answer, drops):
        if theirs is not None:
            yield {"prompt": prompt_value(prompt), "chosen": mine, "rejected": theirs,
                   **_tools(line.record), **_extras(line.obj)}


def to_kto(source: Source, answer: Answers | None, drops: Drops) -> Iterator[dict]:
    if answer is None:  # desirable examples only
        for line in source:
            prompt, mine = split_chat(line.record.messages)
            yield {"prompt": prompt_value(prompt), "completion": mine, "label": True,
                   **_tools(line.record), **_extras(line.obj)}
        return
    for line, prompt, mine, theirs in _with_generations(source, answer, drops):
        p, extras = prompt_value(prompt), {**_tools(line.record), **_extras(line.obj)}
        yield {"prompt": p, "completion": mine, "label": True, **extras}
        if theirs is not None:
            yield {"prompt": p, "completion": theirs, "label": False, **extras}


# ------------------------------------------------------------------------------------- driver


def _count_lines(source: Source) -> int:
    return sum(1 for _ in source.items())


def convert(path, out, *, to: str, fmt: str | None = None, system_prompt: str | None = None,
            answers: AnswersFactory | None = None, generate: bool = False,
            force: bool = False, columns: dict[str, str] | None = None,
            log: Log = _stderr) -> ConvertResult:
    """Convert ``path`` to ``to`` format in ``out``. ``generate`` adds the other side's answers
    (from ``answers``) to KTO data; preference data always needs them (its rejected side)."""
    if to not in TARGETS:
        raise DataError(f"unknown target format {to!r}; expected one of {', '.join(TARGETS)}")
    out = check_output(out, force)
    drops = Drops()
    source = Source(path, fmt, drops, system_prompt=system_prompt, columns=columns)
    kind = record_type(source.format)
    if kind not in SOURCES[to] or source.format == to:
        names = " or ".join(SOURCE_NAMES[k] for k in SOURCES[to])
        if to == "chat":
            names = "alpaca, sharegpt or completion"
        raise DataError(f"{path}: cannot convert {source.format} data to {to}; {to} is made from "
                        f"{names} data")
    if generate and (to not in ("preference", "kto") or kind is PreferenceRecord):
        raise DataError("--generate adds base-model answers to chat → kto; it does not apply here")
    needs_model = to == "preference" or generate
    # unusable base-model answers cost a preference pair its line, a KTO line only its
    # undesirable example: counted apart from invalid lines so the summary says which
    unusable, noun = Drops(), "line" if to == "preference" else "undesirable example"
    answer = None
    if needs_model:
        if answers is None:
            raise DataError(f"converting to {to}{' with generated answers' if generate else ''} "
                            "needs a model to answer the prompts; none was given")
        answer = answers(_count_lines(source))
        log(f"generating {answer.name} (batches of {answer.batch_size})")
    if to == "preference":
        rows = to_preference(source, answer, unusable)
    elif to == "kto" and kind is not PreferenceRecord:
        rows = to_kto(source, answer, unusable)
    elif to == "prompt":      # RL prompts have no tool list: a tool-using record cannot be one
        rows = (row for line in _without_tools(source, drops) for row in to_prompt(line))
    else:
        one = {"chat": to_chat, "kto": unpair}[to]
        rows = (row for line in source for row in one(line))
    written = 0
    try:
        with atomic_output(out) as f:
            for row in rows:
                write_record(f, row)
                written += 1
            if not written:  # raised inside the block, so no empty file replaces anything
                raise DataError(f"{path}: nothing to write; every line was dropped")
    finally:
        if answer is not None:
            answer.close()
        for line in drops.lines() + unusable.lines(noun) + source.report():
            log(line)
    read = source.lines_read - drops.total
    log(f"converted {read} {source.format} records into {written} {to} records in {out}")
    return ConvertResult(out, source.format, read, written)
