"""JSON chat exports: Telegram Desktop, DiscordChatExporter, Facebook Messenger / Instagram, and
Slack export folders. The stdlib ``json`` reads them; each layout is a few keys, so no parser
library is needed. Places are ``file: message N`` (N from 1, in file order).

* Telegram ``result.json``: one chat (``{"name", "type", "messages"}``) or a full export
  (``{"chats": {"list": [...]}}``, one conversation per chat). ``text`` is a string or a list of
  strings and rich-text entities (``{"type": "bold", "text": …}``); ``from`` names the sender
  (``from_id`` is an alias for ``--me``); ``type: service`` messages are skipped and counted.
* Discord (DiscordChatExporter JSON): ``messages[].author.name`` / ``nickname`` (both match
  ``--me``), ``content``, ``timestamp``; non-Default/Reply types (joins, pins, calls) skipped.
* Messenger / Instagram: ``messages[].sender_name``, ``content``, ``timestamp_ms``, newest
  first in the file (sorted here). Their exporter writes UTF-8 bytes as Latin-1 escapes
  ("CafÃ©"); strings are re-encoded as Latin-1 and decoded as UTF-8 to undo that. A long thread
  is split into ``message_1.json`` (newest), ``message_2.json``, … in one thread folder: given
  any one part, every ``message_N.json`` beside it is read and the thread is one conversation in
  time order; given a folder (a thread's, or ``inbox/`` above many), each thread folder under it
  is one conversation (:func:`messenger_threads`).
* Slack export folder: ``users.json`` for names, one folder per channel with a JSON file per day;
  messages with a ``subtype`` (joins, leaves, bots, topic changes) are skipped and counted,
  ``<@U123>`` mentions become ``@name`` and ``<url|label>`` links their label.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

from mindprint.data.importers.common import Conversation, Imported, Msg, clean, need
from mindprint.data.stream import Drops
from mindprint.errors import DataError


def load_json(path) -> object:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: invalid JSON: {err.msg} (column {err.colno})") from None


def _iso(value) -> float | None:
    """An ISO 8601 time in seconds; anything else (missing, malformed) is "no time"."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _number(value) -> float | None:
    try:
        return float(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _messages(obj, path: str) -> list:
    need(isinstance(obj, dict) and isinstance(obj.get("messages"), list), path,
         "expected a JSON object with a 'messages' list")
    return obj["messages"]


# ------------------------------------------------------------------------------------ Telegram

def _tg_text(value, where: str) -> str:
    """A message's ``text``: a string, or a list of strings and entities ({"type", "text"})."""
    if value is None:
        return ""
    ok = isinstance(value, str) or isinstance(value, list) and all(
        isinstance(v, str) or isinstance(v, dict) and isinstance(v.get("text", ""), str)
        for v in value)
    need(ok, where, f"text: expected a string or a list of strings and entities, got "
                    f"{type(value).__name__}")
    if isinstance(value, str):
        return value
    return "".join(v if isinstance(v, str) else v.get("text", "") for v in value)


def _tg_chat(chat: dict, path: str, drops: Drops, offset: int) -> tuple[Conversation, int]:
    msgs = []
    for i, m in enumerate(_messages(chat, path), offset + 1):
        where = f"{path}: message {i}"
        need(isinstance(m, dict), where, "a message must be a JSON object")
        if m.get("type", "message") != "message":
            drops.add("service message", where)
            continue
        text = clean(_tg_text(m.get("text"), where))
        if not text:
            drops.add("media or empty message", where)
            continue
        when = _number(m.get("date_unixtime"))
        when = when if when is not None else _iso(m.get("date"))
        name = m.get("from") or "Deleted Account"
        msgs.append(Msg(str(name), text, when, where, (str(m.get("from_id", "")),)))
    return Conversation(msgs), offset + len(chat["messages"])


def parse_telegram(path: str, drops: Drops) -> Imported:
    obj = load_json(path)
    full = isinstance(obj, dict) and "chats" in obj          # a full export: several chats
    chats = obj["chats"].get("list") if full and isinstance(obj["chats"], dict) else \
        None if full else [obj]
    need(isinstance(chats, list), path, "chats.list: expected a list of chats")
    out, offset = Imported(path, "telegram"), 0
    for chat in chats:
        conv, offset = _tg_chat(chat, path, drops, offset)
        out.conversations.append(conv)
    return out


# ------------------------------------------------------------------------------------- Discord

_DISCORD_KEEP = {"Default", "Reply", "0", "19"}


def parse_discord(path: str, drops: Drops) -> Imported:
    msgs = []
    for i, m in enumerate(_messages(load_json(path), path), 1):
        where = f"{path}: message {i}"
        need(isinstance(m, dict) and isinstance(m.get("author"), dict), where,
             "a message needs an 'author' object")
        if str(m.get("type", "Default")) not in _DISCORD_KEEP:
            drops.add(f"system message ({m.get('type')})", where)
            continue
        text = clean(str(m.get("content") or ""))
        if not text:
            drops.add("attachment or empty message", where)
            continue
        a = m["author"]
        name = str(a.get("nickname") or a.get("name") or "unknown")
        aliases = tuple(str(a[k]) for k in ("name", "id") if a.get(k))
        msgs.append(Msg(name, text, _iso(m.get("timestamp")), where, aliases))
    return Imported(path, "discord", [Conversation(msgs)])


# ------------------------------------------------------------------------ Messenger / Instagram

_FB_SYSTEM = re.compile(r"(?:reacted .+ to your message|sent an attachment\.|unsent a message\.|"
                        r"missed (?:a|your) (?:video )?call|started (?:a|sharing) (?:video )?"
                        r"(?:call|chat)|named the group|changed the group photo|"
                        r"set the nickname|Liked a message|wasn't notified about this message)",
                        re.I)


def unmojibake(s: str) -> str:
    """Undo Meta's Latin-1 escaping of UTF-8; text that is not such mojibake stays as it is."""
    try:
        return s.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return s


_PART = re.compile(r"message_(\d+)\.json", re.I)


def is_part(p: Path) -> bool:
    return bool(_PART.fullmatch(p.name)) and p.is_file()


def _parts(files) -> list[Path]:
    return sorted(files, key=lambda q: int(_PART.fullmatch(q.name).group(1)))


def messenger_threads(path) -> list[list[Path]]:
    """The threads ``path`` stands for, each as its part files (message_1.json first): a folder
    gives every thread folder under it (at any depth), a ``message_N.json`` file every part beside
    it, any other file itself."""
    p = Path(path)
    if p.is_dir():
        by_folder: dict[Path, list[Path]] = {}
        for q in p.rglob("message_*.json"):
            if is_part(q):
                by_folder.setdefault(q.parent, []).append(q)
        need(bool(by_folder), path, "a folder, but no Messenger/Instagram message_N.json in it")
        return [_parts(files) for _, files in sorted(by_folder.items())]
    if _PART.fullmatch(p.name):
        return [_parts(q for q in p.parent.iterdir() if is_part(q))]
    return [[p]]


def _messenger_part(path: str, drops: Drops) -> list[Msg]:
    msgs = []
    for i, m in enumerate(_messages(load_json(path), path), 1):
        where = f"{path}: message {i}"
        need(isinstance(m, dict) and isinstance(m.get("sender_name"), str), where,
             "a message needs a 'sender_name' string")
        if m.get("is_unsent"):
            drops.add("unsent message", where)
            continue
        text = clean(unmojibake(str(m.get("content") or "")))
        if not text:
            drops.add("media or empty message", where)
            continue
        if m.get("type") not in (None, "Generic", "Share") or _FB_SYSTEM.search(text):
            drops.add("system message", where)
            continue
        ms = m.get("timestamp_ms")
        msgs.append(Msg(unmojibake(m["sender_name"]), text,
                        ms / 1000 if isinstance(ms, (int, float)) else None, where))
    return msgs


def thread_key(parts: list[Path]) -> Path:
    """What names a thread: its folder when it is in parts, else its one file."""
    first = parts[0]
    return (first.parent if _PART.fullmatch(first.name) else first).resolve()


def parse_messenger(path: str, drops: Drops, seen: set[Path] | None = None) -> Imported:
    """Every thread of ``path``; threads in ``seen`` (already imported from another source: two
    parts of one thread, a thread and its inbox folder) are skipped and said, then added."""
    out = Imported(path, "messenger")
    seen = set() if seen is None else seen
    for parts in messenger_threads(path):
        if thread_key(parts) in seen:
            note = f"{path}: thread already imported from an earlier source (skipped)"
            out.notes[note] = out.notes.get(note, 0) + 1
            continue
        seen.add(thread_key(parts))
        msgs = []
        # oldest part first and each part reversed (files are newest first), so the stable sort
        # keeps messages of one millisecond, and messages without a time, in the order written
        for part in reversed(parts):
            msgs += reversed(_messenger_part(str(part), drops))
        msgs.sort(key=lambda x: x.time if x.time is not None else 0.0)
        out.conversations.append(Conversation(msgs))
        if len(parts) > 1:
            out.notes[f"{parts[0].parent}: {len(parts)} parts joined into one conversation "
                      "(messages)"] = len(msgs)
    return out


# --------------------------------------------------------------------------------------- Slack

_MENTION = re.compile(r"<@(\w+)(?:\|[^>]*)?>")
_LINK = re.compile(r"<([^>|]+)(?:\|([^>]+))?>")
_SLACK_KEEP = {"thread_broadcast", "me_message", "file_share"}


def _slack_users(root: Path) -> dict[str, tuple[str, tuple[str, ...]]]:
    """user id → (display name, other names --me may match: handle, display name, id)."""
    users = load_json(root / "users.json") if (root / "users.json").exists() else []
    need(isinstance(users, list), f"{root / 'users.json'}", "expected a list of users")
    out = {}
    for u in users:
        if isinstance(u, dict) and isinstance(u.get("id"), str):
            prof = u.get("profile") if isinstance(u.get("profile"), dict) else {}
            name = (prof.get("real_name") or u.get("real_name") or prof.get("display_name")
                    or u.get("name") or u["id"])
            out[u["id"]] = (str(name), tuple(str(x) for x in (u.get("name"),
                                                              prof.get("display_name"), u["id"])
                                             if x))
    return out


def parse_slack(path: str, drops: Drops) -> Imported:
    root = Path(path)
    users = _slack_users(root)
    names = {uid: name for uid, (name, _) in users.items()}
    out = Imported(path, "slack")
    channels = sorted(d for d in root.iterdir() if d.is_dir())
    need(bool(channels), path, "no channel folders found in this Slack export")
    for channel in channels:
        msgs = []
        for day in sorted(channel.glob("*.json")):
            rows = load_json(day)
            need(isinstance(rows, list), str(day), "expected a list of messages")
            for i, m in enumerate(rows, 1):
                where = f"{day}: message {i}"
                need(isinstance(m, dict), where, "a message must be a JSON object")
                sub = m.get("subtype")
                if not (sub is None or str(sub) in _SLACK_KEEP) or m.get("type", "message") != "message":
                    drops.add(f"system message ({sub or m.get('type')})", where)
                    continue
                text = _MENTION.sub(lambda x: "@" + names.get(x.group(1), x.group(1)),
                                    str(m.get("text") or ""))
                text = clean(_LINK.sub(lambda x: x.group(2) or x.group(1), text))
                text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
                if not text:
                    drops.add("file or empty message", where)
                    continue
                uid = str(m.get("user") or "")
                prof = m.get("user_profile") if isinstance(m.get("user_profile"), dict) else {}
                name, aliases = users.get(uid, (None, ()))
                name = name or prof.get("real_name") or prof.get("name") or uid or "?"
                aliases += tuple(x for x in (uid, prof.get("name"), prof.get("display_name")) if x)
                msgs.append(Msg(str(name), text, _number(m.get("ts")), where,
                                tuple(map(str, aliases))))
        out.conversations.append(Conversation(msgs))
    return out
