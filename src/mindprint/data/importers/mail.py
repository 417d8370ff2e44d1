"""E-mail: mbox files and single ``.eml`` messages, read with the stdlib ``mailbox`` and
``email`` (policy ``default``: decoded headers, ``get_body`` picks text/plain before text/html).

For every message the person sent (``From`` name or address matches ``--me``) one conversation
is built: the thread up to it, found by ``In-Reply-To`` then ``References``, else the previous
message of the same subject (``Re:``/``AW:``/``Fwd:`` … ignored) by date; only the reply itself
is an answer (``last_only``). A reply whose parent is not in the import (a single ``.eml``, an
mbox of sent mail only) takes its question from the text it quotes (:func:`quoted`): the first
level of ``>`` quotes after the "On … wrote:" line, or the body below Outlook's "-----Original
Message-----" / "From: … Sent: …" header block, with the quoted message's own quotes and
signature removed as below; such records are counted as "question taken from the quoted text".
A reply that neither threads nor quotes anything is dropped and counted.

Bodies lose what the sender did not write, and keep what they did wherever it sits: above the
quote (top-posting), below it (bottom-posting) or between quoted lines (interleaved answers,
kept as paragraphs in their order). Removed: quoted lines (``>``) and the "On … wrote:" header
above them (English, German, French, Spanish, Dutch, Italian variants, also broken over two
lines); a header followed by *unmarked* text, Outlook's "-----Original Message-----" or
"From: … / Sent: …" blocks and forwarded-message headers, with everything below them (an
unmarked quote cannot be told from new text, and these clients top-post); the signature after a
``-- `` line, mobile footers ("Sent from my iPhone") and sign-off blocks ("Best,\\nAnna" in the
last lines). HTML-only parts are converted to text (``html.parser``), without ``<blockquote>``
and Gmail quote blocks.
"""

from __future__ import annotations

import email
import email.policy
import mailbox
import re
from email.utils import getaddresses, parsedate_to_datetime
from html import unescape
from html.parser import HTMLParser

from mindprint.data.importers.common import Conversation, Imported, Msg, clean
from mindprint.data.importers.turns import check_me, is_me
from mindprint.data.stream import Drops
from mindprint.errors import DataError

_WROTE = re.compile(r"^(?:On|Am|Le|El|Op|Il)\b.{0,200}?\b(?:wrote|schrieb|a écrit|escribió|"
                    r"schreef|ha scritto)\b.{0,160}:\s*$", re.I | re.S)
# "X wrote:" without a leading "On …" (Thunderbird, Apple Mail): a header only when a quote follows
_WROTE_LOOSE = re.compile(r"^.{1,200}\b(?:wrote|schrieb|a écrit|escribió|schreef|ha scritto)\s*:\s*$",
                          re.I)
_QUOTE_BLOCK = re.compile(r"^(?:-{2,}\s*(?:Original Message|Ursprüngliche Nachricht|"
                          r"Message d'origine|Mensaje original)\s*-{2,}|_{10,})$", re.I)
_FORWARD = re.compile(r"^(?:-{2,}\s*(?:Forwarded message|Weitergeleitete Nachricht|"
                      r"Message transféré|Mensaje reenviado)\s*-{2,}|Begin forwarded message:)$", re.I)
_FOOTER = re.compile(r"^(?:Sent from my .*|Von meinem .* gesendet.*|Gesendet von meinem .*|"
                     r"Get Outlook for .*|Envoyé de mon .*|Enviado desde mi .*)$", re.I)
_OUTLOOK = re.compile(r"^(?:From|Von|De)\s*:\s*.+$", re.I)
_OUTLOOK_NEXT = re.compile(r"^(?:Sent|Date|Gesendet|Envoyé|Enviado)\s*:", re.I)
_SIGNOFF = re.compile(r"^(?:best|best regards|best wishes|kind regards|regards|warm regards|"
                      r"cheers|thanks|thank you|many thanks|all the best|yours|warmly|cordially|"
                      r"sincerely|take care|viele grüße|liebe grüße|beste grüße|"
                      r"mit freundlichen grüßen|grüße|gruß|lg|vg|saludos|un saludo|"
                      r"cordialement|bien à vous|amitiés|groeten|met vriendelijke groet)"
                      r"[\s,.!]*$", re.I)
_HEADER_FIELD = re.compile(r"^(?:From|Sent|Date|To|Cc|Subject|Von|Gesendet|An|Betreff|De|Envoyé|"
                           r"À|Objet|Para|Asunto|Enviado)\s*:", re.I)
_VERB = re.compile(r"\s*(?:<(?P<addr>[^>]*)>|\[mailto:(?P<addr2>[^\]]*)\])?\s*(?:wrote|schrieb|"
                   r"a écrit|escribió|schreef|ha scritto)\b", re.I)
_DATEISH = re.compile(r"\d{1,2}[:.]\d{2}(?:\s*(?:[AaPp]\.?[Mm]\.?|Uhr|h))?|\b\d{4}\b|,")
_SUBJECT_PREFIX = re.compile(r"^\s*(?:(?:re|aw|fw|fwd|wg|sv|vs|tr|rv)\s*(?:\[\d+\])?\s*:\s*)+", re.I)


class _Text(HTMLParser):
    """HTML → (text, quote depth) chunks: block tags break lines, scripts and styles are left
    out, ``<blockquote>`` raises the depth (its lines come out ``>``-quoted, as a plain-text
    client writes them, so the same rules find the reply and the question)."""

    BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "table", "ul", "ol"}
    HIDDEN = ("script", "style", "head")

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out: list[tuple[str, int]] = []
        self.skip = 0
        self.quote = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.HIDDEN:
            self.skip += 1
        elif tag == "blockquote":
            self.quote += 1
            self.out.append(("\n", self.quote))
        elif tag in self.BLOCK:
            self.out.append(("\n", self.quote))

    def handle_endtag(self, tag):
        if tag in self.HIDDEN:
            self.skip = max(0, self.skip - 1)
        elif tag == "blockquote":
            self.quote = max(0, self.quote - 1)
            self.out.append(("\n", self.quote))
        elif tag in self.BLOCK:
            self.out.append(("\n", self.quote))

    def handle_data(self, data):
        if not self.skip:
            self.out.append((data, self.quote))


def html_to_text(html: str) -> str:
    """The text of an HTML body; quoted (``<blockquote>``) lines start with ``>`` per level."""
    p = _Text()
    p.feed(html)
    p.close()
    lines: list[tuple[str, int]] = []
    cur, depth = "", None        # a line is as deep as its first words
    for chunk, d in p.out:
        for k, part in enumerate(unescape(chunk).split("\n")):
            if k:
                lines.append((cur, depth or 0))
                cur, depth = "", None
            if part.strip() and depth is None:
                depth = d
            cur += part
    lines.append((cur, depth or 0))
    text = "\n".join(">" * d + " " + s.strip() if d and s.strip() else s.strip()
                     for s, d in lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _cut(line: str) -> bool:
    """Nothing at or below ``line`` is the sender's: a signature, a quoted or forwarded block,
    a mobile footer."""
    s = line.strip()
    return line.rstrip() in ("--", "-- ") or any(r.match(s) for r in (_QUOTE_BLOCK, _FORWARD,
                                                                       _FOOTER))


def _wrote_lines(lines: list[str], i: int) -> int:
    """How many lines (0, 1 or 2) an "On … wrote:" header starting at ``lines[i]`` spans: one
    ("On …, Ann <a@b.c> wrote:", or "Ann wrote:" above a ``>`` quote), or two when a client
    wrapped it and the second line is only its tail ("<a@b.c>\\nwrote:")."""
    s = lines[i].strip()
    nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
    if _WROTE.match(s):
        return 1
    after = next((ln.strip() for ln in lines[i + 1:] if ln.strip()), "")
    if _WROTE_LOOSE.match(s) and after.startswith(">"):
        return 1
    tail = s and nxt.endswith(":") and len(nxt) <= 80 and not _WROTE.match(nxt)
    return 2 if tail and _VERB.search(nxt) and _WROTE.match(f"{s} {nxt}") else 0


def own_words(body: str) -> str:
    """The part of a body its sender wrote: quotes, quote headers, forwarded blocks and the
    signature removed, the sender's text kept above, below and between quotes (see the module
    docstring)."""
    lines = body.split("\n")
    kept: list[str] = []
    i = 0
    while i < len(lines):
        line, s = lines[i], lines[i].strip()
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if _cut(line):
            break
        if _OUTLOOK.match(s) and _OUTLOOK_NEXT.match(nxt):
            break
        if n := _wrote_lines(lines, i):          # "On Mon, … Anna <a@b.c>\nwrote:" too
            after = next((ln.strip() for ln in lines[i + n:] if ln.strip()), "")
            if not after.startswith(">"):
                break          # the quoted message follows unmarked: nothing below is theirs
            i += n
            kept.append("")    # what follows the quote is a paragraph of its own
            continue
        if s.startswith(">"):
            kept.append("")
        else:
            kept.append(line)
        i += 1
    # quotes leave blank lines behind: one blank line between paragraphs, none at the ends
    kept = "\n".join(kept).strip("\n").split("\n")
    kept = [ln for j, ln in enumerate(kept) if ln.strip() or (j and kept[j - 1].strip())]
    while kept and not kept[-1].strip():
        kept.pop()
    tail = len(kept)
    for j in range(max(0, len(kept) - 6), len(kept)):    # a sign-off in the last lines
        if _SIGNOFF.match(kept[j].strip()) and len(kept) - j <= 4:
            tail = j
            break
    return clean("\n".join(kept[:tail]))


def _dequote(lines: list[str]) -> str:
    """One level of ``>`` quoting removed; lines outside the quote are not the quoted text."""
    return "\n".join(re.sub(r"^>\s?", "", ln.strip()) for ln in lines if ln.strip().startswith(">"))


def _attributed(head: str) -> str:
    """Who an "On <date> <name> <addr> wrote:" line names ("Am … schrieb <name>:" too)."""
    verb = _VERB.search(head)
    if verb is None:
        return ""
    after = re.sub(r"<[^>]*>|\[mailto:[^\]]*\]", "", head[verb.end():]).strip(" :\"'")
    before = _DATEISH.split(re.sub(r"^\S+", "", head[:verb.start()]))[-1].strip(" \"'")
    return after or before or verb.group("addr") or verb.group("addr2") or ""


def quoted(body: str) -> tuple[str, str]:
    """(sender, own words) of the message a reply quotes, or ("", "") when it quotes none."""
    lines = body.split("\n")
    for i, line in enumerate(lines):
        s, nxt = line.strip(), lines[i + 1].strip() if i + 1 < len(lines) else ""
        if s.startswith(">"):
            continue
        if _FORWARD.match(s):      # what the sender forwards is not what they answer
            return "", own_words(_dequote(lines[:i]))
        if n := _wrote_lines(lines, i):
            head = f"{s} {nxt}" if n == 2 else s
            rest = lines[i + n:]
            marked = any(ln.strip().startswith(">") for ln in rest)
            return _attributed(head), own_words(_dequote(rest) if marked else "\n".join(rest))
        block = _QUOTE_BLOCK.match(s)
        if block or (_OUTLOOK.match(s) and _OUTLOOK_NEXT.match(nxt)):
            j, who = i + (1 if block else 0), ""
            while j < len(lines) and _HEADER_FIELD.match(lines[j].strip()):
                if re.match(r"^(?:From|Von|De)\s*:", lines[j].strip(), re.I):
                    who = re.sub(r"\s*(?:<[^>]*>|\[mailto:[^\]]*\])\s*$", "",
                                 lines[j].split(":", 1)[1]).strip(" \"'")
                j += 1
            return who, own_words("\n".join(lines[j:]))
    return "", own_words(_dequote(lines))


def _body(msg) -> str:
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, UnicodeError):          # an unknown charset: decode leniently
        content = part.get_payload(decode=True).decode("utf-8", "replace")
    return html_to_text(content) if part.get_content_subtype() == "html" else content


def _date(msg) -> float | None:
    try:
        return parsedate_to_datetime(str(msg["Date"])).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def _read(path: str, kind: str) -> list:
    if kind == "eml":
        with open(path, "rb") as f:
            return [email.message_from_binary_file(f, policy=email.policy.default)]
    box = mailbox.mbox(path, factory=lambda f: email.message_from_binary_file(
        f, policy=email.policy.default), create=False)
    return list(box)


def parse(sources: list[tuple[str, str]], drops: Drops, me: tuple[str, ...]) -> Imported:
    """All messages of ``sources`` ((path, "mbox" | "eml") pairs) form one pool, so a reply in
    one .eml file finds the message it answers in another."""
    pool, paths = [], [path for path, _ in sources]
    for path, kind in sources:
        try:
            msgs = _read(path, kind)
        except (OSError, mailbox.Error) as err:
            raise DataError(f"{path}: cannot read as {kind} ({err})") from None
        for i, msg in enumerate(msgs, 1):
            where = f"{path}: message {i}" if kind == "mbox" else path
            (name, addr), = getaddresses([str(msg["From"] or "")]) or [("", "")]
            body = clean(_body(msg))
            text = own_words(body)
            pool.append({"body": body, "id": str(msg["Message-ID"] or "").strip(), "where": where,
                         "msg": Msg(name or addr or "(unknown sender)", text, _date(msg), where,
                                    (addr,) if addr else ()),
                         "parent": str(msg["In-Reply-To"] or "").strip(),
                         "refs": str(msg["References"] or "").split(),
                         "subject": _SUBJECT_PREFIX.sub("", str(msg["Subject"] or "")).strip()})
    by_id = {p["id"]: p for p in pool if p["id"]}
    ordered = sorted(pool, key=lambda p: p["msg"].time or 0.0)
    me = check_me(", ".join(paths), [p["msg"] for p in pool], me)
    out = Imported(", ".join(paths), "e-mail", me=me)
    for p in pool:
        if not is_me(p["msg"], me):
            continue
        if not p["msg"].text:
            drops.add("e-mail with no words of its own", p["where"])
            continue
        chain, cur, seen = [p["msg"]], p, {id(p)}
        while (parent := _parent(cur, by_id, ordered)) is not None and id(parent) not in seen:
            seen.add(id(parent))
            if parent["msg"].text:
                chain.insert(0, parent["msg"])
            cur = parent
        if len(chain) == 1:
            who, asked = quoted(p["body"])
            if not asked:
                drops.add("e-mail that answers no message in the import", p["where"])
                continue
            chain.insert(0, Msg(who or "(quoted sender)", asked, None, p["where"]))
            key = "question taken from the quoted text"
            out.notes[key] = out.notes.get(key, 0) + 1
        out.conversations.append(Conversation(chain, last_only=True))
    return out


def _parent(p: dict, by_id: dict, ordered: list):
    for ref in [p["parent"], *reversed(p["refs"])]:
        if ref in by_id and by_id[ref] is not p:
            return by_id[ref]
    if p["parent"] or p["refs"]:
        return None          # it answers a message that is not in the import
    if not p["subject"] or p["msg"].time is None:
        return None
    earlier = [q for q in ordered if q["subject"] == p["subject"] and q is not p
               and q["msg"].time is not None and q["msg"].time < p["msg"].time
               and q["msg"].speaker != p["msg"].speaker]
    return earlier[-1] if earlier else None
