"""``mindprint data import``: detect each source's kind, parse it, build records, write JSONL.

Detection (``--from`` overrides it), first rule that holds:

* a folder with ``users.json`` or ``channels.json`` → ``slack``; a folder holding
  ``message_N.json`` files (at any depth) → ``messenger`` (a thread, or an inbox of threads)
* ``.srt`` → ``srt``; ``.vtt`` or a first line ``WEBVTT`` → ``vtt``; ``.mbox`` or a first line
  ``From …`` followed by mail headers → ``mbox``; ``.eml`` or mail headers on top → ``eml``
* ``.json``: ``chats`` (all-chats export), or ``messages`` of which one of the first 50 has
  ``type`` message/service and ``from``/``actor`` (one chat's "Export chat history") →
  ``telegram``; ``guild`` and ``channel`` → ``discord``; ``participants`` or messages with
  ``sender_name`` → ``messenger``
* text: WhatsApp headers on ≥ 30% of the first lines → ``whatsapp``; SubRip cues → ``srt``;
  speaker labels (see :mod:`.transcript`) → ``transcript``; anything else → ``prose``.

Chat-like sources give ``chat`` records, prose gives ``text`` records; one output holds one of
the two, so mixing them is an error (import them into two files and ``data mix`` them).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from mindprint.data.importers import KINDS, chatjson, mail, prose, subtitles, transcript, whatsapp
from mindprint.data.importers.common import Imported
from mindprint.data.importers.pii import Scrubber
from mindprint.data.importers.turns import TurnOptions, build_records, check_me, is_me
from mindprint.data.stream import Drops, atomic_output, check_output, normalize, write_record
from mindprint.errors import DataError

Log = Callable[[str], None]
MAIL = ("mbox", "eml")
FOLDERS = ("slack", "messenger")       # kinds that may be a folder (slack: must be one)
PARSERS = {
    "transcript": transcript.parse, "srt": subtitles.parse_srt, "vtt": subtitles.parse_vtt,
    "whatsapp": whatsapp.parse, "telegram": chatjson.parse_telegram,
    "discord": chatjson.parse_discord, "messenger": chatjson.parse_messenger,
    "slack": chatjson.parse_slack,
}
ALIASES = {"instagram": "messenger"}
assert set(KINDS) == {*PARSERS, *ALIASES, *MAIL, "prose"}, "importers.KINDS out of step"
QA_ANSWER = ("A", "Answer", "Antwort")     # who answers in a Q/A transcript when --me is not given
_EXT = {".srt": "srt", ".vtt": "vtt", ".mbox": "mbox", ".eml": "eml"}
_MAIL_HEADER = re.compile(r"^(?:From|To|Subject|Date|Message-ID|Received|Return-Path|"
                          r"MIME-Version|Content-Type):", re.I | re.M)
_SRT = re.compile(r"^\d+\s*\n\d{1,2}:\d{2}:\d{2}[,.]\d{1,3}\s*-->", re.M)


def _stderr(text: str) -> None:
    print(text, file=sys.stderr)


def _json_kind(path: Path) -> str:
    obj = chatjson.load_json(path)
    msgs = obj.get("messages") if isinstance(obj, dict) else None
    head = [m for m in msgs[:50] if isinstance(m, dict)] if isinstance(msgs, list) else []
    first = head[0] if head else {}
    telegram = any(m.get("type") in ("message", "service") and {"from", "actor"} & m.keys()
                   for m in head)
    if isinstance(obj, dict) and ("chats" in obj or telegram or "date_unixtime" in first):
        return "telegram"
    if isinstance(obj, dict) and {"guild", "channel"} <= obj.keys():
        return "discord"
    if isinstance(obj, dict) and ("participants" in obj or "sender_name" in first):
        return "messenger"
    raise DataError(f"{path}: a JSON file of no known chat export (Telegram result.json, "
                    "DiscordChatExporter, Messenger/Instagram); pass --from")


def detect(path: str) -> str:
    p = Path(path)
    if p.is_dir():
        if (p / "users.json").exists() or (p / "channels.json").exists():
            return "slack"
        if any(chatjson.is_part(q) for q in p.rglob("message_*.json")):
            return "messenger"
        raise DataError(f"{path}: a folder, but no Slack export (no users.json or channels.json) "
                        "nor Messenger/Instagram thread (no message_N.json)")
    if not p.exists():
        raise DataError(f"{path}: no such file")
    if p.suffix.lower() in _EXT:
        return _EXT[p.suffix.lower()]
    if p.suffix.lower() == ".json":
        return _json_kind(p)
    head = p.read_bytes()[:65536].decode("utf-8-sig", "replace").replace("\r\n", "\n")
    top = "\n".join(head.split("\n")[:30])
    if head.startswith("WEBVTT"):
        return "vtt"
    if head.startswith("From ") and len(_MAIL_HEADER.findall(top)) >= 2:
        return "mbox"
    if _MAIL_HEADER.match(head) and len(_MAIL_HEADER.findall(top)) >= 3:
        return "eml"
    if whatsapp.looks_like(head):
        return "whatsapp"
    if _SRT.search(head[:2000]):
        return "srt"
    return "transcript" if transcript.looks_like(head) else "prose"


@dataclass
class ImportResult:
    output: Path
    kinds: dict[str, str]
    written: int
    drops: Drops
    scrub_counts: dict = field(default_factory=dict)


def _effective_me(imp: Imported, me: tuple[str, ...]) -> tuple[str, ...]:
    if me:
        return me
    speakers = {m.speaker for c in imp.conversations for m in c.messages}
    return tuple(s for s in speakers if s in QA_ANSWER)


def import_sources(sources: list[str], out, *, me: tuple[str, ...] = (), kind: str | None = None,
                   options: TurnOptions | None = None, scrub: bool = True,
                   scrub_names: bool = False, phone_region: str = "US", max_length: int = 1024,
                   count: prose.Count = prose.approx_tokens, force: bool = False,
                   log: Log = _stderr) -> ImportResult:
    """Import ``sources`` into ``out`` (chat or text JSONL); see the module docstring."""
    if kind is not None and kind not in KINDS:
        raise DataError(f"unknown source kind {kind!r}; expected one of {', '.join(KINDS)}")
    out = check_output(out, force)
    opts = options or TurnOptions(me=me)
    if opts.session_gap <= 0:
        raise DataError(f"--session-gap must be more than 0 seconds, got {opts.session_gap:g}")
    kinds = {src: ALIASES.get(kind, kind) if kind else detect(src) for src in sources}
    for src, k in kinds.items():       # --from skips detection, not these checks
        if not Path(src).exists():
            raise DataError(f"{src}: no such file")
        if Path(src).is_dir() and k not in FOLDERS or not Path(src).is_dir() and k == "slack":
            raise DataError(f"{src}: a {k} source is a {'folder' if k == 'slack' else 'file'}")
    if "prose" in kinds.values() and len(set(kinds.values())) > 1:
        raise DataError("prose gives text records and chats give chat records: import "
                        f"{', '.join(s for s, k in kinds.items() if k == 'prose')} into a file of "
                        "its own")
    drops = Drops()
    parsed: list[tuple[Imported, tuple[str, ...]]] = []
    threads: set[Path] = set()     # Messenger threads read so far: each is imported once
    for src, k in kinds.items():
        if k in PARSERS:
            imp = chatjson.parse_messenger(src, drops, threads) if k == "messenger" else \
                PARSERS[k](src, drops)
            if not imp.conversations:      # every thread of it already read (notes say so)
                parsed.append((imp, ()))
                continue
            who = check_me(src, [m for c in imp.conversations for m in c.messages],
                           _effective_me(imp, me))
            parsed.append((imp, who))
        elif k == "prose":
            parsed.append((prose.parse(src, drops, max_length, count), ()))
    mails = [(s, k) for s, k in kinds.items() if k in MAIL]
    if mails:
        imp = mail.parse(mails, drops, me)
        parsed.append((imp, imp.me))
    others = [m.speaker for imp, who in parsed for c in imp.conversations for m in c.messages
              if not is_me(m, who)]
    scrubber = Scrubber(enabled=scrub, region=phone_region,
                        names=others if scrub_names else None)
    written = 0
    with atomic_output(out) as f:
        for imp, who in parsed:
            rows = _text_rows(imp, opts, drops, scrubber) if imp.kind == "prose" else (
                {"messages": [m.as_json() for m in r.messages]}
                for r in build_records(imp.conversations, _with_me(opts, who), drops, scrubber))
            for row in rows:
                write_record(f, row)
                written += 1
        if not written:
            raise DataError(f"{', '.join(sources)}: nothing to write; every message was dropped "
                            f"({'; '.join(f'{r}: {n}' for r, n in drops.counts.items()) or 'none found'})")
    for src, k in kinds.items():
        log(f"{src}: {k}")
    for line in drops.lines("passage" if "prose" in kinds.values() else "message"):
        log(line)
    for imp, _ in parsed:
        for note, n in imp.notes.items():
            log(f"{note}: {n}")
    log(scrubber.summary())
    what = "text" if "prose" in kinds.values() else "chat"
    log(f"wrote {written} {what} records to {out}")
    return ImportResult(out, kinds, written, drops, dict(scrubber.counts))


def _with_me(opts: TurnOptions, who: tuple[str, ...]) -> TurnOptions:
    return replace(opts, me=who)


def _text_rows(imp: Imported, opts: TurnOptions, drops: Drops, scrub: Scrubber):
    seen_exact, seen_norm = set(), set()
    for text, where in imp.passages:
        text = scrub(text)
        if len(text.split()) < opts.min_words:
            drops.add(f"passage shorter than {opts.min_words} words", where)
        elif text in seen_exact:
            drops.add("duplicate", where)
        elif normalize(text) in seen_norm:
            drops.add("duplicate after normalising case and spaces", where)
        else:
            seen_exact.add(text)
            seen_norm.add(normalize(text))
            yield {"text": text}
