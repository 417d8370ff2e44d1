"""Every source format Mindprint reads, one small reader each, mapped onto the records of
:mod:`mindprint.data.records`. A file's format is found by :data:`DETECT`, an ordered table of
(format, predicate on the keys of one object), most specific first.

| format                | keys (one object)                                        | record      |
|-----------------------|----------------------------------------------------------|-------------|
| chat                  | messages (+ system, tools; OpenAI per-message weight)    | Chat        |
| alpaca                | instruction, input?, output (+ system, history)          | Chat        |
| completion            | prompt, completion (TRL / mlx-lm prompt-completion)      | Chat        |
| text                  | text (TRL language modelling, mlx-lm text)               | Text        |
| sharegpt              | conversations [{from, value}] (+ system, tools)          | Chat        |
| preference            | prompt/messages?, chosen, rejected (implicit prompt too) | Preference  |
| sharegpt_preference   | conversations + chosen/rejected message objects          | Preference  |
| alpaca_preference     | instruction, input?, chosen, rejected strings            | Preference  |
| openai_preference     | input {messages, tools?}, preferred_output, non_pref…    | Preference  |
| kto                   | prompt, completion, label (true/false or 1/0)            | KTO         |
| chat_kto              | messages + label or kto_tag: the last turn is judged     | KTO         |
| sharegpt_kto          | conversations + label or kto_tag                         | KTO         |

Every format with messages takes tool use as the chat format does: assistant ``tool_calls``,
``tool`` turns and a record-level ``tools`` list (OpenAI preference: ``input.tools``), rendered
through the chat template for the prompt and every completion alike; a template that cannot
render them is an error naming the record (:func:`mindprint.data.render.check_tool_support`).
| prompt                | prompt, answer?, system?                                 | Prompt      |

Decisions where the sources disagree or are silent:

* ``completion`` with string prompt/completion goes through the chat template as one user and
  one assistant turn (as mlx-lm's completions data does); assistant turns inside a message-list
  prompt are context (weight 0): only the completion is trained, as in TRL.
* ``alpaca`` ``history`` ([[q, a], ...]) becomes earlier turns whose answers ARE trained: in
  LLaMA-Factory's supervised processor (``data/processor/supervised.py``) every turn's response is
  labelled unless ``mask_history`` is set, and ``DataArguments`` defaults ``mask_history=False``
  and ``train_on_prompt=False`` (prompts never trained). The instruction and input are joined
  with a blank line, as Mindprint always did (LLaMA-Factory uses one newline).
* A record-level ``system`` key becomes the first system turn in every format that takes one
  (an error if the messages already start with one). ``data.system_prompt`` applies to alpaca,
  completion-with-string-prompt and prompt records only, as before.
* Keys of some format that the detected format does not read (``answer`` in a chat line, say)
  and unknown message keys are counted notes; other keys (``id``, ``source``) are the user's and
  travel along in the data tools.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace

from mindprint.data import fields as F
from mindprint.data.fields import Ctx, Problem
from mindprint.data.records import (
    ChatRecord,
    KTORecord,
    Message,
    Messages,
    PreferenceRecord,
    PromptRecord,
    Record,
    TextRecord,
)

Reader = Callable[[dict, Ctx], Record]


def _with_system(msgs: Messages, obj: dict, ctx: Ctx, *, use_config: bool,
                 noun: str = "prompt") -> Messages:
    """Prepend the record's ``system`` key, else (where the format takes it) data.system_prompt."""
    system = F.optional(obj, "system")
    if system is not None:
        if msgs and msgs[0].role == "system":
            raise Problem("system", f"the {noun} already starts with a system message")
        return (Message("system", system), *msgs)
    if use_config and ctx.system_prompt and msgs[0].role != "system":
        return (Message("system", ctx.system_prompt), *msgs)
    return msgs


def _prompt_of(obj: dict, ctx: Ctx) -> Messages:
    """Preference and KTO prompts come as "prompt" or, conversation style, as "messages"."""
    if "prompt" in obj and "messages" in obj:
        raise Problem(None, "give prompt or messages, not both")
    key = "messages" if "messages" in obj else "prompt"
    return _with_system(F.prompt(F.required(obj, key), key, ctx), obj, ctx, use_config=False)


def _pair(prompt: Messages, chosen: Messages, rejected: Messages,
          tools: tuple | None = None) -> PreferenceRecord:
    # Pairs equal up to surrounding whitespace carry no preference signal, only noise.
    if [(m.role, m.content.strip(), m.tool_calls) for m in chosen] == \
            [(m.role, m.content.strip(), m.tool_calls) for m in rejected]:
        raise Problem(None, "chosen equals rejected")
    return PreferenceRecord(prompt, chosen, rejected, tools=tools)


def _context(msgs: Messages) -> Messages:
    """Turns that are only context: assistant turns get weight 0."""
    return tuple(replace(m, weight=0) if m.role == "assistant" else m for m in msgs)


# ----------------------------------------------------------------------------- Mindprint's own


def chat(obj, ctx) -> ChatRecord:
    # A chat record states its own system message; the configured one is for alpaca/prompt data.
    msgs = _with_system(F.messages(F.required(obj, "messages"), "messages", ctx), obj, ctx,
                        use_config=False, noun="conversation")
    return ChatRecord(F.chat_checks(msgs, "messages"), tools=F.tools(obj.get("tools")))


def _history(obj: dict) -> Messages:
    value = obj.get("history")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise Problem("history", f"must be a list of [question, answer] pairs, got {F.kind(value)}")
    out: list[Message] = []
    for i, pair in enumerate(value):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise Problem(f"history[{i}]", f"must be a [question, answer] pair, got {F.show(pair)}")
        out += [Message("user", F.string(pair[0], f"history[{i}][0]")),
                Message("assistant", F.string(pair[1], f"history[{i}][1]"))]
    return tuple(out)


def _alpaca_prompt(obj: dict, ctx: Ctx) -> Messages:
    instruction = F.string(F.required(obj, "instruction"), "instruction")
    extra = F.optional(obj, "input", empty_ok=True)  # the original Alpaca data has "input": ""
    user = instruction + ("\n\n" + extra if extra and extra.strip() else "")
    msgs = (*_history(obj), Message("user", user))
    return _with_system(msgs, obj, ctx, use_config=True)


def alpaca(obj, ctx) -> ChatRecord:
    prompt = _alpaca_prompt(obj, ctx)
    output = F.string(F.required(obj, "output"), "output")
    return ChatRecord((*prompt, Message("assistant", output)))


def preference(obj, ctx) -> PreferenceRecord:
    if "prompt" not in obj and "messages" not in obj:
        return _implicit_preference(obj, ctx)
    prompt = _prompt_of(obj, ctx)
    return _pair(prompt, F.completion(F.required(obj, "chosen"), "chosen", ctx),
                 F.completion(F.required(obj, "rejected"), "rejected", ctx),
                 F.tools(obj.get("tools")))


def _implicit_preference(obj, ctx) -> PreferenceRecord:
    """TRL's implicit prompt: chosen and rejected are whole conversations; their shared leading
    turns are the prompt, the rest (assistant turns) the two continuations."""
    sides = {}
    for key in ("chosen", "rejected"):
        value = F.required(obj, key)
        if not isinstance(value, list):  # no conversation to take the prompt from
            raise Problem("prompt", "missing")
        sides[key] = F.messages(value, key, ctx)
    chosen, rejected = sides["chosen"], sides["rejected"]
    k = 0
    while k < min(len(chosen), len(rejected)) and chosen[k] == rejected[k]:
        k += 1
    if k == 0 or chosen[k - 1].role not in ("user", "tool"):
        raise Problem("chosen", f"chosen and rejected share {k} leading turn(s) that do not end "
                                "with a user turn; give the prompt explicitly")
    return _pair(_with_system(chosen[:k], obj, ctx, use_config=False),
                 F.completion([m.as_json() for m in chosen[k:]] or None, f"chosen[{k}:]", ctx),
                 F.completion([m.as_json() for m in rejected[k:]] or None, f"rejected[{k}:]", ctx),
                 F.tools(obj.get("tools")))


def kto(obj, ctx) -> KTORecord:
    prompt = _prompt_of(obj, ctx)
    completion = F.completion(F.required(obj, "completion"), "completion", ctx)
    return KTORecord(prompt, completion, F.label(F.required(obj, "label")),
                     tools=F.tools(obj.get("tools")))


def prompt_record(obj, ctx) -> PromptRecord:
    prompt = _with_system(F.prompt(F.required(obj, "prompt"), "prompt", ctx), obj, ctx,
                          use_config=True)
    return PromptRecord(prompt, F.optional(obj, "answer"))


# ----------------------------------------------------------------------------- TRL and mlx-lm


def text(obj, ctx) -> TextRecord:
    return TextRecord(F.string(F.required(obj, "text"), "text"))


def completion(obj, ctx) -> ChatRecord:
    value = F.required(obj, "prompt")
    prompt = F.prompt(value, "prompt", ctx)
    prompt = _with_system(_context(prompt), obj, ctx, use_config=True)
    done = F.completion(F.required(obj, "completion"), "completion", ctx)
    return ChatRecord(F.chat_checks((*prompt, *done), "completion"),
                      tools=F.tools(obj.get("tools")))


# --------------------------------------------------------------------------- ShareGPT family

# ShareGPT "from" tags (LLaMA-Factory's and the common user/assistant variants) → roles
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "observation": "tool", "tool": "tool",
                  "function_call": "assistant"}
TURN_KEYS = {"from", "value", "weight", "name", "tool_call_id"}


def _calls(value: str, at: str) -> list[dict]:
    """A function_call turn's value: JSON of one call or a list of calls ({name, arguments})."""
    try:
        calls = json.loads(value)
    except json.JSONDecodeError as err:
        raise Problem(f"{at}.value", f"a function_call must be JSON {{\"name\", \"arguments\"}}: "
                                     f"{err.msg}") from None
    calls = calls if isinstance(calls, list) else [calls]
    if not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in calls):
        raise Problem(f"{at}.value", "a function_call must be JSON {\"name\", \"arguments\"}")
    return [{"type": "function", "function": {"name": c["name"], "arguments": c.get("arguments", {})}}
            for c in calls]


def _sharegpt_turns(value, field: str, ctx: Ctx) -> Messages:
    if not isinstance(value, list) or not value:
        raise Problem(field, f"must be a non-empty list of {{from, value}} turns, got {F.show(value)}")
    dicts = []
    for i, turn in enumerate(value):
        at = f"{field}[{i}]"
        if not isinstance(turn, dict):
            raise Problem(at, f"must be an object with from and value, got {F.kind(turn)}")
        if "from" not in turn:
            raise Problem(f"{at}.from", "missing")
        tag = turn["from"]
        if not isinstance(tag, str) or tag not in SHAREGPT_ROLES:
            raise Problem(f"{at}.from", f"unknown tag {F.show(tag)}; expected one of "
                                        f"{', '.join(SHAREGPT_ROLES)}")
        if "value" not in turn:
            raise Problem(f"{at}.value", "missing")
        d = {"role": SHAREGPT_ROLES[tag], "content": turn["value"]}
        if tag == "function_call":
            d = {"role": "assistant", "content": None,
                 "tool_calls": _calls(F.string(turn["value"], f"{at}.value"), at)}
        d.update({k: turn[k] for k in ("weight", "name", "tool_call_id") if k in turn})
        for key in sorted(turn.keys() - TURN_KEYS):
            ctx.note(f"{field}[].{key}", "not a ShareGPT turn field; not used")
        dicts.append(d)
    try:
        return F.messages(dicts, field, ctx)
    except Problem as p:  # name the fields as the user wrote them
        name = (p.field or "").replace(".content", ".value").replace(".role", ".from")
        raise Problem(name or None, p.what) from None


def sharegpt(obj, ctx) -> ChatRecord:
    msgs = _with_system(_sharegpt_turns(F.required(obj, "conversations"), "conversations", ctx),
                        obj, ctx, use_config=False, noun="conversation")
    return ChatRecord(F.chat_checks(msgs, "conversations"), tools=F.tools(obj.get("tools")))


def _answer(value, field: str, ctx: Ctx) -> Messages:
    """A preference side as LLaMA-Factory writes it (one {from, value} object), as a string, or
    as a list of turns."""
    if isinstance(value, dict) and "from" in value:
        value = [value]
    if isinstance(value, list) and value and isinstance(value[0], dict) and "from" in value[0]:
        msgs = _sharegpt_turns(value, field, ctx)
        if msgs[-1].role != "assistant":
            raise Problem(f"{field}.from", 'must be "gpt" (an assistant answer)')
        return msgs
    return F.completion(value, field, ctx)


def sharegpt_preference(obj, ctx) -> PreferenceRecord:
    prompt = _sharegpt_turns(F.required(obj, "conversations"), "conversations", ctx)
    if prompt[-1].role not in ("user", "tool"):
        raise Problem(f"conversations[{len(prompt) - 1}].from", "the prompt must end with a "
                                                                "human turn")
    prompt = _with_system(prompt, obj, ctx, use_config=False)
    return _pair(prompt, _answer(F.required(obj, "chosen"), "chosen", ctx),
                 _answer(F.required(obj, "rejected"), "rejected", ctx), F.tools(obj.get("tools")))


def alpaca_preference(obj, ctx) -> PreferenceRecord:
    prompt = _context(_alpaca_prompt(obj, ctx))
    return _pair(prompt, F.completion(F.required(obj, "chosen"), "chosen", ctx),
                 F.completion(F.required(obj, "rejected"), "rejected", ctx))


def openai_preference(obj, ctx) -> PreferenceRecord:
    """OpenAI's preference fine-tuning: {"input": {"messages", "tools"?}, "preferred_output":
    [assistant], "non_preferred_output": [assistant]}."""
    inp = F.required(obj, "input")
    if not isinstance(inp, dict):
        raise Problem("input", f"must be an object with messages, got {F.kind(inp)}")
    for key in sorted(inp.keys() - {"messages", "tools", "parallel_tool_calls"}):
        ctx.note(f"input.{key}", "not used")
    if inp.get("parallel_tool_calls") is not None:   # a request option, not something trained
        ctx.note("input.parallel_tool_calls", "not used (a request option)")
    prompt = F.prompt(F.required(inp, "messages") if "messages" in inp else None,
                      "input.messages", ctx)
    return _pair(prompt,
                 F.completion(F.required(obj, "preferred_output"), "preferred_output", ctx),
                 F.completion(F.required(obj, "non_preferred_output"), "non_preferred_output", ctx),
                 F.tools(inp.get("tools"), "input.tools"))


def _tag(obj) -> bool:
    if "label" in obj and "kto_tag" in obj:
        raise Problem(None, "give label or kto_tag, not both")
    key = "label" if "label" in obj else "kto_tag"
    return F.label(obj[key], key)


def _judged(msgs: Messages, field: str) -> tuple[Messages, Messages]:
    """(prompt, completion): the last turn, an assistant's, is the one the label judges."""
    if msgs[-1].role != "assistant":
        raise Problem(f"{field}[{len(msgs) - 1}]", "the last turn must be the assistant's (it "
                                                   "is the completion the label judges)")
    if len(msgs) < 2 or msgs[-2].role not in ("user", "tool"):
        raise Problem(field, "the judged answer must follow a user turn")
    return msgs[:-1], msgs[-1:]


def chat_kto(obj, ctx) -> KTORecord:
    msgs = _with_system(F.messages(F.required(obj, "messages"), "messages", ctx), obj, ctx,
                        use_config=False)
    prompt, done = _judged(msgs, "messages")
    return KTORecord(prompt, done, _tag(obj), tools=F.tools(obj.get("tools")))


def sharegpt_kto(obj, ctx) -> KTORecord:
    msgs = _with_system(_sharegpt_turns(F.required(obj, "conversations"), "conversations", ctx),
                        obj, ctx, use_config=False)
    prompt, done = _judged(msgs, "conversations")
    return KTORecord(prompt, done, _tag(obj), tools=F.tools(obj.get("tools")))


# ---------------------------------------------------------------------------------- tables


def _has(*keys):
    return lambda o: all(k in o for k in keys)


def _tagged(o) -> bool:
    return "label" in o or "kto_tag" in o


# (format, predicate), most specific first: the first match names a line's format
DETECT: tuple[tuple[str, Callable[[dict], bool]], ...] = (
    ("openai_preference", lambda o: "preferred_output" in o or "non_preferred_output" in o),
    ("sharegpt_preference", _has("conversations", "chosen", "rejected")),
    ("alpaca_preference", _has("instruction", "chosen", "rejected")),
    ("preference", _has("chosen", "rejected")),
    ("sharegpt_kto", lambda o: "conversations" in o and _tagged(o)),
    ("chat_kto", lambda o: "messages" in o and _tagged(o) and "completion" not in o),
    ("kto", _has("completion", "label")),
    ("sharegpt", _has("conversations")),
    ("chat", _has("messages")),
    ("alpaca", _has("instruction", "output")),
    ("completion", _has("prompt", "completion")),
    ("prompt", _has("prompt")),
    ("text", _has("text")),
)

# format → (reader, record type, the keys its reader reads)
READERS: dict[str, tuple[Reader, type, frozenset]] = {
    name: (reader, rtype, frozenset(keys) | {"topic"})
    for name, reader, rtype, keys in (
        ("chat", chat, ChatRecord, ("messages", "system", "tools")),
        ("alpaca", alpaca, ChatRecord, ("instruction", "input", "output", "system", "history")),
        ("completion", completion, ChatRecord, ("prompt", "completion", "system", "tools")),
        ("text", text, TextRecord, ("text",)),
        ("sharegpt", sharegpt, ChatRecord, ("conversations", "system", "tools")),
        ("preference", preference, PreferenceRecord,
         ("prompt", "messages", "chosen", "rejected", "system", "tools")),
        ("sharegpt_preference", sharegpt_preference, PreferenceRecord,
         ("conversations", "chosen", "rejected", "system", "tools")),
        ("alpaca_preference", alpaca_preference, PreferenceRecord,
         ("instruction", "input", "chosen", "rejected", "system", "history")),
        ("openai_preference", openai_preference, PreferenceRecord,
         ("input", "preferred_output", "non_preferred_output")),
        ("kto", kto, KTORecord, ("prompt", "messages", "completion", "label", "system", "tools")),
        ("chat_kto", chat_kto, KTORecord, ("messages", "label", "kto_tag", "system", "tools")),
        ("sharegpt_kto", sharegpt_kto, KTORecord, ("conversations", "label", "kto_tag", "system",
                                                   "tools")),
        ("prompt", prompt_record, PromptRecord, ("prompt", "answer", "system")),
    )
}
FORMATS = tuple(READERS)
assert set(FORMATS) == {name for name, _ in DETECT}
# every key some format reads: a line's other keys are the user's own (ids, sources)
VOCABULARY = frozenset().union(*(keys for _, _, keys in READERS.values()))
ORDER = [name for name, _ in DETECT]
KEYS_HINT = ("expected messages (chat), conversations (sharegpt), instruction + output (alpaca), "
             "chosen + rejected (preference), completion + label (kto), prompt + completion, "
             "prompt, or text")


def record_type(fmt: str) -> type:
    return READERS[fmt][1]


def accepts(fmt: str, expect) -> bool:
    """Whether a ``fmt`` file can feed a caller expecting one of ``expect`` formats: the same
    record type is enough (a ShareGPT file feeds SFT like a chat file)."""
    return fmt in expect or any(record_type(fmt) is record_type(e) for e in expect)


def detect_format(obj: dict) -> str | None:
    """The first format of :data:`DETECT` whose keys ``obj`` has, or None."""
    return next((name for name, test in DETECT if test(obj)), None)


def parse_record(obj, fmt: str, where: str = "", *, system_prompt: str | None = None,
                 notes: list | None = None) -> Record:
    """Validate one JSON value as a ``fmt`` record; raise :class:`Problem` (a ValueError) if
    invalid. Notes about values read but not used go to ``notes`` as (field, what) pairs."""
    if fmt not in READERS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not isinstance(obj, dict):
        raise Problem(None, f"expected a JSON object, got {F.kind(obj)}")
    reader, _, keys = READERS[fmt]
    ctx = Ctx(system_prompt, where, notes if notes is not None else [])
    topic = F.optional(obj, "topic")
    record = reader(obj, ctx)
    for key in sorted((obj.keys() & VOCABULARY) - keys):
        ctx.note(key, f"not used by {fmt} data")
    return replace(record, topic=topic, where=where)
