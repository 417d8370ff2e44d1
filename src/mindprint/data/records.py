"""Typed records: every source format (see :mod:`mindprint.data.formats`) becomes one of these.

* ChatRecord        a conversation; its assistant turns are trained on (unless ``weight`` 0)
* TextRecord        plain text trained on every token (continued pre-training, no chat template)
* PreferenceRecord  a prompt and a chosen/rejected pair of assistant continuations
* KTORecord         a prompt and one completion labelled desirable or not
* PromptRecord      an RL / evaluation prompt with an optional reference answer

Any record may carry an optional string ``topic``. ``where`` is ``"file:line"`` (or
``"file:[index]"`` for rows of an array, table or dataset) for messages.

A :class:`Message` may carry, besides role and content, the OpenAI / tool-calling fields:
``weight`` (0 = context only, 1 = trained; assistant turns only), ``tool_calls`` (assistant),
``tool_call_id`` and ``name`` (``tool`` turns). They travel to the chat template as given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Message:
    role: str
    content: str
    weight: int | None = None            # None: the default (assistant turns are trained)
    tool_calls: tuple | None = None      # tuple of JSON objects, as the template expects them
    tool_call_id: str | None = None
    name: str | None = None

    @property
    def trained(self) -> bool:
        return self.role == "assistant" and self.weight != 0

    def as_dict(self) -> dict:
        """The message as a chat template sees it (``weight`` is ours, not the template's)."""
        d = {"role": self.role, "content": self.content}
        if self.tool_calls is not None:
            d["tool_calls"] = [dict(c) for c in self.tool_calls]
        if self.tool_call_id is not None:
            d["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            d["name"] = self.name
        return d

    def as_json(self) -> dict:
        """The message as a data file writes it (with ``weight``)."""
        d = self.as_dict()
        if self.weight is not None:
            d["weight"] = self.weight
        return d


Messages = tuple[Message, ...]


@dataclass(frozen=True)
class ChatRecord:
    """A conversation ending with an assistant turn; its assistant turns of non-zero weight are
    trained on. ``tools`` is the record's tool list (JSON schemas) for the chat template."""

    messages: Messages
    topic: str | None = None
    where: str = field(default="", compare=False)
    tools: tuple | None = None


@dataclass(frozen=True)
class TextRecord:
    """Plain text: every token (and the EOS after it) is trained on; no chat template."""

    text: str
    topic: str | None = None
    where: str = field(default="", compare=False)


@dataclass(frozen=True)
class PreferenceRecord:
    """``prompt`` ends with a user (or tool) turn; ``chosen``/``rejected`` are assistant
    continuations (which may call tools). ``tools``: as :class:`ChatRecord`'s, for the prompt and
    both continuations alike."""

    prompt: Messages
    chosen: Messages
    rejected: Messages
    topic: str | None = None
    where: str = field(default="", compare=False)
    tools: tuple | None = None


@dataclass(frozen=True)
class KTORecord:
    """An unpaired completion labelled desirable (True) or undesirable (False); ``tools`` as
    :class:`PreferenceRecord`'s."""

    prompt: Messages
    completion: Messages
    label: bool
    topic: str | None = None
    where: str = field(default="", compare=False)
    tools: tuple | None = None


@dataclass(frozen=True)
class PromptRecord:
    """An RL / evaluation prompt; ``answer`` is an optional reference answer."""

    prompt: Messages
    answer: str | None = None
    topic: str | None = None
    where: str = field(default="", compare=False)


Record = ChatRecord | TextRecord | PreferenceRecord | KTORecord | PromptRecord

# SFT trains on both: files of the two kinds may be mixed in one run
SFT_RECORDS = (ChatRecord, TextRecord)


def to_json(record: Record) -> dict:
    """The JSONL object that parses back to ``record`` (foreign formats come back canonical)."""
    msgs = lambda ms: [m.as_json() for m in ms]  # noqa: E731
    if isinstance(record, ChatRecord):
        obj = {"messages": msgs(record.messages)}
        if record.tools is not None:
            obj["tools"] = [dict(t) for t in record.tools]
    elif isinstance(record, TextRecord):
        obj = {"text": record.text}
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
    if isinstance(record, PreferenceRecord | KTORecord) and record.tools is not None:
        obj["tools"] = [dict(t) for t in record.tools]
    if record.topic is not None:
        obj["topic"] = record.topic
    return obj
