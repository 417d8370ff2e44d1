"""Checks of single JSON values, shared by every format's reader (:mod:`mindprint.data.formats`).

A problem is raised as :class:`Problem` (a ValueError) naming the field as a path such as
``messages[2].role``; the loader prefixes ``file:line``. Things a format can read but not use
(unknown message keys, unused columns) are not errors: they go to :class:`Notes`, which the
loader counts per kind and reports once, so nothing a user wrote is dropped without a word.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from mindprint.data.records import ROLES, Message, Messages

# message keys a chat template may read; anything else in a message is noted as unused
MESSAGE_KEYS = {"role", "content", "weight", "tool_calls", "tool_call_id", "name"}


class Problem(ValueError):
    """One thing wrong with one record. ``field`` is a path like ``messages[2].role``, or None."""

    def __init__(self, field: str | None, what: str):
        super().__init__(f"{field}: {what}" if field else what)
        self.field = field
        self.what = what


@dataclass
class Ctx:
    """What a reader needs besides the object: the configured system prompt, the record's place,
    and a list collecting notes (field, what) about values it read but cannot use."""

    system_prompt: str | None = None
    where: str = ""
    notes: list[tuple[str, str]] = field(default_factory=list)

    def note(self, field: str, what: str) -> None:
        self.notes.append((field, what))


def kind(value) -> str:
    """The JSON name of a value's type: users wrote JSON, not Python."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def show(value, limit: int = 40) -> str:
    """A short JSON rendering of a bad value, safe to print (lone surrogates escaped)."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):  # a value from a table (bytes, a timestamp) is not JSON
        text = repr(value)
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def string(value, field: str, *, empty_ok: bool = False) -> str:
    if not isinstance(value, str):
        raise Problem(field, f"must be a string, got {kind(value)}")
    if not empty_ok and not value.strip():
        raise Problem(field, "must not be empty")
    try:
        value.encode("utf-8")  # "\ud800" is valid JSON but no tokenizer can encode it
    except UnicodeEncodeError:
        raise Problem(field, "contains an unpaired surrogate escape (\\ud800-\\udfff)") from None
    return value


def required(obj: dict, key: str):
    if key not in obj:
        raise Problem(key, "missing")
    return obj[key]


def optional(obj: dict, key: str, *, empty_ok: bool = False) -> str | None:
    # null means absent: exporters often write "input": null for "no input".
    value = obj.get(key)
    return None if value is None else string(value, key, empty_ok=empty_ok)


def label(value, field: str = "label") -> bool:
    """A KTO label: true/false, or 1/0 as spreadsheets and pandas export them."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    raise Problem(field, f"must be true or false (or 1 or 0), got {show(value)}")


def _content(item: dict, at: str, role: str, has_calls: bool) -> str:
    """A message's text. OpenAI-style content parts are joined if all are text; a tool-calling
    assistant turn may have no text."""
    value = item.get("content")
    if value is None and has_calls:
        return ""
    if "content" not in item:
        raise Problem(f"{at}.content", "missing")
    if isinstance(value, list):
        texts = []
        for j, part in enumerate(value):
            if not (isinstance(part, dict) and part.get("type") == "text"):
                raise Problem(f"{at}.content[{j}]", "only text parts ({\"type\": \"text\", "
                                                   "\"text\": ...}) can be trained on")
            texts.append(string(part.get("text"), f"{at}.content[{j}].text", empty_ok=True))
        value = "".join(texts)
    return string(value, f"{at}.content", empty_ok=has_calls)


def _weight(item: dict, at: str, role: str) -> int | None:
    if "weight" not in item or item["weight"] is None:
        return None
    w = item["weight"]
    if role != "assistant":
        raise Problem(f"{at}.weight", f"only assistant turns carry a weight (this is {role})")
    if isinstance(w, bool) or not isinstance(w, int | float) or w not in (0, 1):
        raise Problem(f"{at}.weight", f"must be 0 (context only) or 1 (trained), got {show(w)}")
    return int(w)


def _tool_calls(item: dict, at: str, role: str) -> tuple | None:
    calls = item.get("tool_calls")
    if calls is None:
        return None
    if role != "assistant":
        raise Problem(f"{at}.tool_calls", f"only assistant turns make tool calls (this is {role})")
    if not isinstance(calls, list) or not calls:
        raise Problem(f"{at}.tool_calls", f"must be a non-empty list of calls, got {show(calls)}")
    for j, call in enumerate(calls):
        fn = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise Problem(f"{at}.tool_calls[{j}]", "must be an object with a function name "
                                                   '({"type": "function", "function": {"name", '
                                                   '"arguments"}})')
    return tuple(calls)


def message(item, at: str, index: int, ctx: Ctx) -> Message:
    if not isinstance(item, dict):
        raise Problem(at, f"must be an object with role and content, got {kind(item)}")
    if "role" not in item:
        raise Problem(f"{at}.role", "missing")
    role = item["role"]
    if not isinstance(role, str) or role not in ROLES:
        raise Problem(f"{at}.role", f"unknown role {show(role)}; expected one of {', '.join(ROLES)}")
    if role == "system" and index > 0:
        raise Problem(f"{at}.role", "a system message may only come first")
    calls = _tool_calls(item, at, role)
    extra = {}
    for key in ("tool_call_id", "name"):
        if item.get(key) is not None:
            extra[key] = string(item[key], f"{at}.{key}")
    for key in sorted(item.keys() - MESSAGE_KEYS):
        ctx.note(f"{at.split('[')[0]}[].{key}", "not a message field; not used")
    return Message(role, _content(item, at, role, calls is not None), _weight(item, at, role),
                   calls, **extra)


def messages(value, field: str, ctx: Ctx) -> Messages:
    if not isinstance(value, list):
        raise Problem(field, f"must be a list of messages, got {kind(value)}")
    if not value:
        raise Problem(field, "must not be empty")
    out = tuple(message(item, f"{field}[{i}]", i, ctx) for i, item in enumerate(value))
    for i, m in enumerate(out):
        # a tool result answers a call: without one before it, templates render nonsense
        if m.role == "tool" and not (i and (out[i - 1].tool_calls or out[i - 1].role == "tool")):
            raise Problem(f"{field}[{i}].role", "a tool message must follow an assistant "
                                                "message with tool_calls (or another tool message)")
    return out


def prompt(value, field: str, ctx: Ctx) -> Messages:
    """A string (one user turn) or messages ending with the user's turn."""
    if isinstance(value, str):
        return (Message("user", string(value, field)),)
    if not isinstance(value, list):
        raise Problem(field, f"must be a string or a list of messages, got {kind(value)}")
    msgs = messages(value, field, ctx)
    if msgs[-1].role not in ("user", "tool"):
        raise Problem(f"{field}[{len(msgs) - 1}].role",
                      f'a prompt must end with a user turn, got {show(msgs[-1].role)}')
    return msgs


def completion(value, field: str, ctx: Ctx) -> Messages:
    """A string (one assistant turn) or a list of assistant messages."""
    if isinstance(value, str):
        return (Message("assistant", string(value, field)),)
    if not isinstance(value, list):
        raise Problem(field, f"must be a string or a list of assistant messages, got {kind(value)}")
    msgs = messages(value, field, ctx)
    for i, m in enumerate(msgs):
        if m.role not in ("assistant", "tool"):
            raise Problem(f"{field}[{i}].role", f'must be "assistant", got {show(m.role)}')
    if msgs[-1].role != "assistant":
        raise Problem(f"{field}[{len(msgs) - 1}].role", 'the last turn must be "assistant"')
    return msgs


def chat_checks(msgs: Messages, field: str) -> Messages:
    """What SFT needs of a conversation: a user turn, the assistant last, something to learn."""
    if msgs[-1].role != "assistant":
        raise Problem(f"{field}[{len(msgs) - 1}].role",
                      f'the last turn must be "assistant" (it is trained on), got {show(msgs[-1].role)}')
    if not any(m.role == "user" for m in msgs):
        raise Problem(field, "needs at least one user turn")
    if not any(m.trained for m in msgs):
        raise Problem(field, "every assistant turn has weight 0: nothing to learn")
    return msgs


def tools(value, field: str = "tools") -> tuple | None:
    """A record's tool list: JSON schemas (objects), or a JSON string of them (LLaMA-Factory)."""
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise Problem(field, f"a string here must hold a JSON list of tools: {err.msg}") from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise Problem(field, f"must be a list of tool objects, got {kind(value)}")
    return tuple(value) or None
