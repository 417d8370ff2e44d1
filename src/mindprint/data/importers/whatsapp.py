"""WhatsApp "Export chat" text files (without media), Android and iOS layouts.

* Android: ``12/31/23, 9:15 PM - Name: text`` (also ``31.12.23, 21:15 - …``, ``2023-12-31 …``)
* iOS: ``[31.12.23, 21:15:03] Name: text`` (also ``[12/31/23, 9:15:03 PM] …``)

The date order is not in the file, so it is inferred from all its dates: a first field above 12
means day-first, a second above 12 month-first, a four-digit first field year-first; when no date
decides it, 12-hour clocks (US phones) mean month-first, else day-first. Lines without a header
continue the message above (multi-line messages). System lines are dropped and counted: Android
writes them without "Name:"; iOS writes them *with* a sender (the chat's or group's name) and a
left-to-right mark (U+200E) before the text. So they are recognised by their text, whatever the
sender (:data:`SYSTEM_TEXT`: encryption notice, missed calls, subject/icon/description changes,
security codes, disappearing messages …, in English, German and Spanish); the membership lines
("X added Y", "X left", "created group", which an ordinary sentence can resemble) only when they
carry no sender or the mark. Media placeholders (``<Media omitted>``, ``image omitted``,
``<attached: …>``, deleted messages) are dropped and counted apart; the "<This message was
edited>" suffix is stripped and the message kept.

``chat-miner`` parses these too, but it depends on polars, pandas, matplotlib and wordcloud
(~60 MB) to return a DataFrame; its WhatsApp parser is a regex and dateutil, as here.
"""

from __future__ import annotations

import re
from datetime import datetime

from mindprint.data.importers.common import Conversation, Imported, Msg, clean, read_text
from mindprint.data.stream import Drops
from mindprint.errors import DataError

_DATE = r"\d{1,4}[./-]\d{1,2}[./-]\d{1,4}"
_TIME = r"\d{1,2}[:.]\d{2}(?:[:.]\d{2})?(?:\s?[AaPp]\.?\s?[Mm]\.?)?"
_ANDROID = re.compile(rf"^(?P<date>{_DATE}),?\s(?P<time>{_TIME})\s[-–]\s(?P<rest>.*)$")
_IOS = re.compile(rf"^\[(?P<date>{_DATE}),?\s(?P<time>{_TIME})\]\s(?P<rest>.*)$")
_SPACES = str.maketrans({"\u202f": " ", "\u00a0": " ", "\u200e": None, "\u200f": None})

MEDIA = re.compile(
    r"^(?:<(?:Media omitted|Medien ausgelassen|Multimedia omitido|Médias omis|Media weggelaten|"
    r"Mídia oculta|Media omessi)>|(?:image|video|audio|sticker|GIF|document|Contact card) omitted|"
    r"(?:Bild|Video|Audio|Sticker|GIF) weggelassen|(?:imagen|audio|video|sticker|GIF) omitid[oa]|<attached: [^>]*>|.*\(file attached\)|"
    r"This message was deleted\.?|You deleted this message\.?|Diese Nachricht wurde gelöscht\.?|"
    r"Se eliminó este mensaje\.?|Ce message a été supprimé\.?|null|<View once voice message omitted>)$",
    re.I)
SYSTEM = re.compile(
    r"(?:end-to-end encrypted|Ende-zu-Ende-verschlüsselt|cifrados de extremo a extremo|"
    r"chiffrés de bout en bout|\badded\b|\bremoved\b|\bleft$|\bjoined using\b|created group|"
    r"changed the (?:subject|group|this group)|changed this group's|changed their phone number|"
    r"security code (?:with .* )?changed|Missed (?:voice|video) call|hat .* hinzugefügt|"
    r"pinned a message|disappearing messages|is a contact\.?$)", re.I)
# whole-text patterns of WhatsApp's own notes; a person's sentence does not read like these
SYSTEM_TEXT = re.compile(
    r"^(?:Messages and calls are end-to-end encrypted\..*|Messages to this (?:group|chat) are now "
    r"secured with end-to-end encryption\..*|Nachrichten und Anrufe sind Ende-zu-Ende-"
    r"verschlüsselt\..*|Los mensajes y las llamadas están cifrados de extremo a extremo\..*|"
    r"Missed (?:group )?(?:voice|video) call(?:,.*)?|"
    r"Verpasster (?:Gruppen)?(?:Sprach|Video)anruf.*|"
    r"(?:Llamada de voz|Videollamada|Llamada) perdida.*|"
    r"(?:You|.{1,80}) changed the (?:subject|group name) (?:from [“\"].*[”\"] )?to [“\"].*[”\"]|"
    r"(?:You|.{1,80}) (?:changed|deleted) this group's icon|(?:You|.{1,80}) changed the group "
    r"description|(?:You|.{1,80}) changed this group's settings to .*|"
    r".{1,80} hat den Betreff (?:von „.*“ )?zu „.*“ geändert|.{1,80} hat (?:das Gruppenbild|"
    r"die Gruppenbeschreibung) geändert|.{1,80} cambió el asunto (?:de [“\"«].*[”\"»] )?a "
    r"[“\"«].*[”\"»]|.{1,80} cambió (?:el [íi]cono de este grupo|la descripción del grupo)|"
    r"Your security code with .{1,80} changed\..*|.{1,80}'s security code changed\..*|"
    r"Dein Sicherheitscode für .{1,80} hat sich geändert\..*|"
    r"Tu código de seguridad con .{1,80} cambió\..*|"
    r"(?:You|.{1,80}) turned (?:on|off) disappearing messages\..*|"
    r"Disappearing messages (?:were turned (?:on|off)|are on|are off)\b.*|"
    r".{1,80} hat selbstlöschende Nachrichten (?:aktiviert|deaktiviert)\..*|"
    r".{1,80} (?:activó|desactivó) los mensajes temporales\..*)$", re.I | re.S)
MEMBERSHIP = re.compile(
    r"^(?:(?:You|.{1,80}) (?:added|removed) .{1,200}|.{1,80} (?:left|joined using this group's "
    r"invite link)|(?:You|.{1,80}) created group .{1,200}|.{1,80} hat .{1,200} "
    r"(?:hinzugefügt|entfernt)|.{1,80} hat die Gruppe verlassen|.{1,80} hat die Gruppe .{1,200} "
    r"erstellt|.{1,80} (?:añadió|eliminó) a .{1,200}|.{1,80} salió del grupo|.{1,80} creó el grupo"
    r" .{1,200})\.?$", re.I)
EDITED = re.compile(r"\s*<(?:This message was edited|Diese Nachricht wurde bearbeitet|"
                    r"Se editó este mensaje|Message modifié)\.?>\s*$")


def header(line: str):
    line = line.translate(_SPACES)
    return _IOS.match(line) or _ANDROID.match(line)


def looks_like(text: str) -> bool:
    lines = [ln for ln in text.split("\n")[:200] if ln.strip()]
    hits = sum(1 for ln in lines if header(ln))
    return hits >= 2 and hits >= 0.3 * len(lines)


def _date_order(dates: list[str], twelve_hour: bool) -> str:
    fields = [re.split(r"[./-]", d) for d in dates]
    if any(len(f[0]) == 4 for f in fields):
        return "ymd"
    if any(int(f[0]) > 12 for f in fields):
        return "dmy"
    if any(int(f[1]) > 12 for f in fields):
        return "mdy"
    return "mdy" if twelve_hour else "dmy"


def _when(date: str, time: str, order: str) -> float:
    f = [int(x) for x in re.split(r"[./-]", date)]
    y, m, d = {"ymd": (f[0], f[1], f[2]), "dmy": (f[2], f[1], f[0]), "mdy": (f[2], f[0], f[1])}[order]
    y += 2000 if y < 100 else 0
    t = time.strip()
    pm = re.search(r"[Pp]\.?\s?[Mm]", t) is not None
    am = re.search(r"[Aa]\.?\s?[Mm]", t) is not None
    parts = [int(x) for x in re.findall(r"\d+", t)[:3]]
    hh, mm, ss = (parts + [0])[:3]
    if pm and hh < 12:
        hh += 12
    if am and hh == 12:
        hh = 0
    return datetime(y, m, d, hh, mm, ss).timestamp()


def parse(path: str, drops: Drops) -> Imported:
    lines = read_text(path).split("\n")
    heads = [(n, m) for n, line in enumerate(lines, 1) if (m := header(line))]
    if not heads:
        raise DataError(f"{path}: no WhatsApp message lines found (expected "
                        "'12/31/23, 9:15 PM - Name: text' or '[31.12.23, 21:15:03] Name: text')")
    twelve = any(re.search(r"[AaPp]\.?\s?[Mm]", m.group("time")) for _, m in heads)
    order = _date_order([m.group("date") for _, m in heads], twelve)
    raw: list[tuple[int, re.Match, list[str]]] = []
    for n, line in enumerate(lines, 1):
        m = header(line)
        if m:
            raw.append((n, m, [m.group("rest")]))
        elif raw:
            raw[-1][2].append(line)
        elif line.strip():
            drops.add("text before the first message", f"{path}:{n}")
    msgs = []
    for n, m, body in raw:
        where = f"{path}:{n}"
        try:
            when = _when(m.group("date"), m.group("time"), order)
        except ValueError:
            raise DataError(f"{where}: date {m.group('date')!r} is not a valid {order} date") from None
        rest = "\n".join(body)
        name, sep, text = rest.partition(": ")
        raw = lines[n - 1].lstrip()
        # iOS marks its own texts (system notes, media) with U+200E where the text starts; an
        # edited message carries one too, before its suffix, so only the start counts
        marked = raw.startswith("\u200e") or ": \u200e" in raw
        if not sep or len(name) > 60 or SYSTEM.search(name):
            drops.add("system line", where)
            continue
        text = clean(EDITED.sub("", clean(text)))
        if SYSTEM_TEXT.match(text) or (marked and MEMBERSHIP.match(text)):
            drops.add("system line", where)
            continue
        if MEDIA.match(text):
            drops.add("media placeholder or deleted message", where)
            continue
        if not text:
            drops.add("empty message", where)
            continue
        msgs.append(Msg(clean(name), text, when, where))
    return Imported(path, "whatsapp", [Conversation(msgs)])
