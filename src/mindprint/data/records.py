"""Typed records, one per data format.

Every format is normalised to chat messages so that one renderer serves all methods:

* ``chat``       {"messages": [{"role", "content"}, ...]}            → ChatRecord
* ``alpaca``     {"instruction", "input"?, "output"}                 → ChatRecord (system prompt from config)
* ``preference`` {"prompt" | "messages", "chosen", "rejected"}       → PreferenceRecord
* ``kto``        {"prompt", "completion", "label": bool}             → KTORecord
* ``prompt``     {"prompt", "answer"?, "system"?}                    → PromptRecord

Any record may carry an optional string ``topic``. ``where`` is ``"file:line"`` for messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FORMATS = ("chat", "alpaca", "preference", "kto", "prompt")
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    role: str
    content: str

    def as_dict(self) -> dict:
        return {"role": self.role, "content": self.content}


Messages = tuple[Message, ...]


@dataclass(frozen=True)
class ChatRecord:
    """A conversation whose assistant turns are trained on (last turn is the assistant's)."""

    messages: Messages
    topic: str | None = None
    where: str = field(default="", compare=False)


@dataclass(frozen=True)
class PreferenceRecord:
    """``prompt`` ends with a user turn; ``chosen``/``rejected`` are assistant continuations."""

    prompt: Messages
    chosen: Messages
    rejected: Messages
    topic: str | None = None
    where: str = field(default="", compare=False)


@dataclass(frozen=True)
class KTORecord:
    """An unpaired completion labelled desirable (True) or undesirable (False)."""

    prompt: Messages
    completion: Messages
    label: bool
    topic: str | None = None
    where: str = field(default="", compare=False)


@dataclass(frozen=True)
class PromptRecord:
    """An RL / evaluation prompt; ``answer`` is an optional reference answer."""

    prompt: Messages
    answer: str | None = None
    topic: str | None = None
    where: str = field(default="", compare=False)


Record = ChatRecord | PreferenceRecord | KTORecord | PromptRecord

RECORD_TYPE = {
    "chat": ChatRecord,
    "alpaca": ChatRecord,
    "preference": PreferenceRecord,
    "kto": KTORecord,
    "prompt": PromptRecord,
}


def to_json(record: Record) -> dict:
    """The JSONL object that parses back to ``record`` (alpaca records come back as chat)."""
    msgs = lambda ms: [m.as_dict() for m in ms]  # noqa: E731
    if isinstance(record, ChatRecord):
        obj = {"messages": msgs(record.messages)}
    elif isinstance(record, PreferenceRecord):
        obj = {"prompt": msgs(record.prompt), "chosen": msgs(record.chosen),
               "rejected": msgs(record.rejected)}
    elif isinstance(record, KTORecord):
        obj = {"prompt": msgs(record.prompt), "completion": msgs(record.completion),
               "label": record.label}
    else:
        obj = {"prompt": msgs(record.prompt)}
        if record.answer is not None:
            obj["answer"] = record.answer
    if record.topic is not None:
        obj["topic"] = record.topic
    return obj
