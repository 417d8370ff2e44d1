"""Turn building, shared by every chat-like source: messages → chat records.

Rules, in order (each drop is counted with the place of the message it concerns):

1. **Roles.** A message is the person's (``assistant``) when its speaker — or one of its aliases,
   such as an e-mail address — equals a ``--me`` name, case-insensitively; everybody else's
   messages are ``user`` turns.
2. **Merge.** Consecutive messages of one speaker less than ``merge_window`` seconds apart
   become one message (lines joined with a newline), as chat people send one thought in several
   bubbles. Messages without times (transcripts) merge whenever consecutive.
3. **Turns.** Consecutive user messages form one user turn. When a conversation has more than
   one other speaker, each of their messages is prefixed with its name ("Anna: …") so the model
   sees who said what. Two answers of the person in a row (further apart than the window) stay
   apart: the second one answers nothing and is dropped ("answer without a question").
4. **Records.** Each answer of the person that follows a user turn becomes one record: up to
   ``context`` earlier turns, the user turn, the answer. E-mail conversations (``last_only``)
   give a record for their last message only.
5. **Filters.** Answers under ``min_words`` words are dropped; then exact duplicates, then
   duplicates after normalisation (case and whitespace), counted apart.

The PII scrub (:mod:`.pii`) runs on every turn before records are compared, so duplicates that
differ only in a phone number are caught too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from mindprint.data.importers.common import Conversation, Msg
from mindprint.data.records import ChatRecord, Message
from mindprint.data.stream import Drops, record_key
from mindprint.errors import DataError

MERGE_WINDOW = 600   # seconds: bubbles sent within ten minutes are one thought
CONTEXT = 4          # earlier turns kept before the question
MIN_WORDS = 3        # "ok", "haha", "sure!" teach no voice


@dataclass
class TurnOptions:
    me: tuple[str, ...]
    merge_window: float = MERGE_WINDOW
    context: int = CONTEXT
    min_words: int = MIN_WORDS


@dataclass
class _Turn:
    role: str
    speaker: str
    text: str
    where: str
    time: float | None


def is_me(msg: Msg, me: tuple[str, ...]) -> bool:
    wanted = {m.strip().casefold() for m in me}
    return any(n.strip().casefold() in wanted for n in msg.names() if n)


def check_me(path: str, msgs: Iterable[Msg], me: tuple[str, ...]) -> None:
    """``--me`` must match somebody: else list the speakers (busiest first) to pick from."""
    counts: Counter = Counter()
    for m in msgs:
        if is_me(m, me):
            return
        counts[m.speaker] += 1
    if not counts:
        raise DataError(f"{path}: no messages found")
    found = ", ".join(f"{name!r} ({n} message{'s' * (n != 1)})" for name, n in counts.most_common())
    if not me:
        raise DataError(f"{path}: say who the person is with --me NAME; speakers found: {found}")
    given = " or ".join(repr(m) for m in me)
    raise DataError(f"{path}: {given} matches none of the speakers; speakers found: {found}. "
                    "Pass --me NAME (repeat it for several names)")


def _merged(msgs: list[Msg], window: float) -> list[Msg]:
    out: list[Msg] = []
    for m in msgs:
        prev = out[-1] if out else None
        close = (prev is not None and m.time is not None and prev.time is not None
                 and 0 <= m.time - prev.time <= window)
        untimed = prev is not None and (m.time is None or prev.time is None)
        if prev is not None and prev.speaker == m.speaker and (close or untimed):
            out[-1] = Msg(prev.speaker, f"{prev.text}\n{m.text}", m.time, prev.where, prev.aliases)
        else:
            out.append(m)
    return out


def _turns(conv: Conversation, opts: TurnOptions, scrub: Callable[[str], str]) -> list[_Turn]:
    msgs = _merged(conv.messages, opts.merge_window)
    others = {m.speaker for m in msgs if not is_me(m, opts.me)}
    group = len(others) > 1
    turns: list[_Turn] = []
    for m in msgs:
        role = "assistant" if is_me(m, opts.me) else "user"
        text = f"{m.speaker}: {m.text}" if role == "user" and group else m.text
        text = scrub(text)
        if role == "user" and turns and turns[-1].role == "user":
            last = turns[-1]
            last.text, last.time = f"{last.text}\n{text}", m.time
        else:
            turns.append(_Turn(role, m.speaker, text, m.where, m.time))
    return turns


def _words(text: str) -> int:
    return len(text.split())


def build_records(conversations: list[Conversation], opts: TurnOptions, drops: Drops,
                  scrub: Callable[[str], str] = lambda s: s) -> Iterator[ChatRecord]:
    """Chat records from conversations, in order, deduplicated (see the module docstring)."""
    seen_exact: set[bytes] = set()
    seen_norm: set[bytes] = set()
    for conv in conversations:
        turns = _turns(conv, opts, scrub)
        answers = range(len(turns) - 1, len(turns)) if conv.last_only else range(len(turns))
        for i in answers:
            t = turns[i]
            if t.role != "assistant":
                continue
            if i == 0 or turns[i - 1].role != "user":
                drops.add("answer without a question", t.where)
                continue
            if _words(t.text) < opts.min_words:
                drops.add(f"answer shorter than {opts.min_words} words", t.where)
                continue
            start = max(0, i - 1 - max(opts.context, 0))
            msgs = tuple(Message(x.role, x.text) for x in turns[start: i + 1])
            record = ChatRecord(msgs, where=t.where)
            exact, norm = record_key(record, "exact"), record_key(record, "normalized")
            if exact in seen_exact:
                drops.add("duplicate", t.where)
                continue
            if norm in seen_norm:
                drops.add("duplicate after normalising case and spaces", t.where)
                continue
            seen_exact.add(exact)
            seen_norm.add(norm)
            yield record
