"""Turn building, shared by every chat-like source: messages → chat records.

Rules, in order (each drop is counted with the place of the message it concerns):

1. **Roles.** A message is the person's (``assistant``) when its speaker — or one of its aliases,
   such as an e-mail address — equals a ``--me`` name, case-insensitively; everybody else's
   messages are ``user`` turns. :func:`check_me` first resolves what the user typed: a name that
   equals a speaker's full name (or alias) case-insensitively is kept; else its words are looked
   for among each speaker name's words, accent-insensitively (NFKD, combining marks removed,
   casefold): ``lucia`` finds "Lucía Gómez", ``priya nat`` no one, ``natarajan`` "Priya
   Natarajan". One speaker found: that speaker's full name is used; several: an error lists them.
2. **Sessions.** A conversation is cut where two consecutive messages are more than
   ``session_gap`` seconds apart (default six hours: a night's sleep or a working day splits a
   chat, while a slow back-and-forth over an afternoon stays one exchange); merging, turns and
   context never reach across a cut, and an answer that opens a session answers nothing. Sources
   without times have no cuts; e-mail threads (``last_only``) are not cut, as replies take days.
3. **Merge.** Consecutive messages of one speaker less than ``merge_window`` seconds apart
   become one message (lines joined with a newline), as chat people send one thought in several
   bubbles. Messages without times (transcripts) merge whenever consecutive.
4. **Turns.** Consecutive user messages form one user turn. When a conversation has more than
   one other speaker, each of their messages is prefixed with its name ("Anna: …") so the model
   sees who said what. Two answers of the person in a row (further apart than the window) stay
   apart: the second one answers nothing and is dropped ("answer without a question").
5. **Records.** Each answer of the person that follows a user turn becomes one record: up to
   ``context`` earlier turns, the user turn, the answer. Earlier answers of the person in the
   context get ``"weight": 0`` (context only, as in the OpenAI format), so every answer is
   trained exactly once, in its own record. A context that was cut short starts at a user turn
   (an answer whose question was cut off is left out); one that reaches back to the
   conversation's start keeps the person's opening message. E-mail conversations
   (``last_only``) give a record for their last message only.
6. **Filters.** Answers under ``min_words`` words are dropped; then exact duplicates, then
   duplicates after normalisation (case and whitespace), counted apart.

The PII scrub (:mod:`.pii`) runs on every turn before records are compared, so duplicates that
differ only in a phone number are caught too.
"""

from __future__ import annotations

import re
import unicodedata
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
SESSION_GAP = 6 * 3600   # seconds of silence that end a conversation (see the docstring)


@dataclass
class TurnOptions:
    me: tuple[str, ...]
    merge_window: float = MERGE_WINDOW
    context: int = CONTEXT
    min_words: int = MIN_WORDS
    session_gap: float = SESSION_GAP


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


def fold(text: str) -> str:
    """Accent- and case-insensitive form: NFKD, combining marks removed, casefolded."""
    return "".join(c for c in unicodedata.normalize("NFKD", text)
                   if not unicodedata.combining(c)).casefold().strip()


def _words_of(name: str) -> list[str]:
    return [w for w in re.split(r"[\s\-_.,()]+", fold(name)) if w]


def _loose(given: str, speaker: str) -> bool:
    """``given``'s words are a run of ``speaker``'s words (accent- and case-insensitive)."""
    g, s = _words_of(given), _words_of(speaker)
    return bool(g) and any(s[i:i + len(g)] == g for i in range(len(s) - len(g) + 1))


def check_me(path: str, msgs: Iterable[Msg], me: tuple[str, ...]) -> tuple[str, ...]:
    """Resolve ``--me`` against the speakers of ``msgs`` (see rule 1 of the module docstring)
    and return the names to match exactly; a name matching nobody is kept (it may be the
    person's name in another source) as long as one name matches somebody. Errors list the
    speakers (busiest first) to pick from."""
    counts: Counter = Counter()
    names: dict[str, str] = {}           # casefolded name or alias → the speaker's display name
    aliases: dict[str, set[str]] = {}    # speaker → its aliases ("Olsen, Ingrid" and "Ingrid
    for m in msgs:                       # Olsen" with one address are one person)
        counts[m.speaker] += 1
        aliases.setdefault(m.speaker, set()).update(a.casefold() for a in m.aliases if a)
        for n in m.names():
            if n:
                names.setdefault(n.strip().casefold(), m.speaker)
    if not counts:
        raise DataError(f"{path}: no messages found")
    found = ", ".join(f"{name!r} ({n} message{'s' * (n != 1)})" for name, n in counts.most_common())
    if not me:
        raise DataError(f"{path}: say who the person is with --me NAME; speakers found: {found}")
    out: list[str] = []
    matched = False
    for given in me:
        if given.strip().casefold() in names:
            out.append(given)
            matched = True
            continue
        hits = [s for s in counts if _loose(given, s)]
        if len(hits) > 1 and not set.intersection(*(aliases[h] for h in hits)):
            raise DataError(f"{path}: --me {given!r} matches several speakers: "
                            f"{', '.join(map(repr, hits))}; pass the full name")
        out += hits or [given]
        matched = matched or bool(hits)
    if not matched:
        given = " or ".join(repr(m) for m in me)
        raise DataError(f"{path}: {given} matches none of the speakers; speakers found: {found}. "
                        "Pass --me NAME (repeat it for several names)")
    return tuple(dict.fromkeys(out))


def sessions(msgs: list[Msg], gap: float) -> list[list[Msg]]:
    """``msgs`` cut where two consecutive timed messages are more than ``gap`` seconds apart."""
    out: list[list[Msg]] = []
    for m in msgs:
        prev = out[-1][-1] if out else None
        if prev is None or (m.time is not None and prev.time is not None
                            and m.time - prev.time > gap):
            out.append([m])
        else:
            out[-1].append(m)
    return out


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


def _turns(msgs: list[Msg], group: bool, opts: TurnOptions,
           scrub: Callable[[str], str]) -> list[_Turn]:
    msgs = _merged(msgs, opts.merge_window)
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
        group = len({m.speaker for m in conv.messages if not is_me(m, opts.me)}) > 1
        parts = [conv.messages] if conv.last_only else sessions(conv.messages, opts.session_gap)
        for part in parts:
            for record in _records(_turns(part, group, opts, scrub), conv.last_only, opts, drops):
                exact, norm = record_key(record, "exact"), record_key(record, "normalized")
                if exact in seen_exact:
                    drops.add("duplicate", record.where)
                    continue
                if norm in seen_norm:
                    drops.add("duplicate after normalising case and spaces", record.where)
                    continue
                seen_exact.add(exact)
                seen_norm.add(norm)
                yield record


def _records(turns: list[_Turn], last_only: bool, opts: TurnOptions,
             drops: Drops) -> Iterator[ChatRecord]:
    answers = range(len(turns) - 1, len(turns)) if last_only else range(len(turns))
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
        # a context that was cut starts at a user turn (an answer whose question was cut off
        # is left out); one reaching the conversation's start keeps the person's opening words
        while start > 0 and turns[start].role == "assistant":
            start += 1
        # earlier answers are context only: each answer is trained once, in its own record
        msgs = tuple(Message(x.role, x.text, weight=0 if x.role == "assistant" else None)
                     for x in turns[start: i]) + (Message(t.role, t.text),)
        yield ChatRecord(msgs, where=t.where)
