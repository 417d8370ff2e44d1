"""E-mail replies keep the person's own words wherever they sit — above the quote, below it
(bottom-posting), between quoted lines (interleaved) — and lose quotes, quote headers, forwarded
blocks and signatures. Fixture: tests/data/fixtures/importers/replies_varied.mbox (a luthier
answering in English and Spanish: Gmail's wrapped header, "X wrote:", interleaved answers, an
iPhone reply above an older quote, Outlook's Original Message, a forward below a reply)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mindprint.data.importers import mail
from mindprint.data.importers.run import import_sources

MBOX = Path(__file__).parent / "fixtures" / "importers" / "replies_varied.mbox"


def test_every_reply_style_keeps_the_words_and_finds_the_question(tmp_path):
    out, logs = tmp_path / "out.jsonl", []
    res = import_sources([str(MBOX)], out, me=("tomas",), log=logs.append)
    rows = [json.loads(line)["messages"] for line in out.read_text().splitlines()]
    got = [(r[-2]["content"], r[-1]["content"]) for r in rows]
    assert got == [
        # bottom-posted under Gmail's header wrapped over two lines, greeting above the quote
        ("Hallo Tomás,\n\nmy daughter's violin has a crack along the top, about four centimetres,"
         "\nnext to the f-hole. Is that worth repairing, or should we buy a new one?\nIt was her "
         "grandfather's.",
         "Hello Ilse,\n\nWorth repairing, without a doubt. A crack beside the f-hole is the most\n"
         "common one I see; the top comes off, I glue and cleat it from inside, and\nnobody will "
         "see it from the front.\n\nBring it on a weekday morning and I'll tell you the price on "
         "the spot."),
        # interleaved under "Priya Nair wrote:"; the sign-off goes
        ("Hi Tomás,\n\nThree things before our tour:\nHow long does a rehair take?\nDo you use "
         "Mongolian or Siberian hair?\nAnd can you look at my cello's buzzing C string while I "
         "wait?\n\nPriya",
         "About an hour, two if the plug in the tip is cracked.\n\nMongolian, white, for "
         "everything except double bass.\n\nYes. Nine times in ten it is a loose fine tuner or "
         "the purfling\nlifting near the lower bout; both are quick."),
        # lone reply below a Spanish header; the quote's own older quote is not the question
        ("¿Podrías dar el taller de mantenimiento para los alumnos de primero\nel 9 de abril? "
         "Serían unos veinte alumnos.",
         "Sí, el 9 me va bien. Con veinte alumnos necesito dos mesas largas y\nque cada uno "
         "traiga su propio instrumento, no los del aula."),
        # Outlook: the answer above, the question in the Original Message block
        ("Can I pick it up on Friday afternoon?",
         "The violin is ready. The glue needed the full two days, and I put a new\nsoundpost in "
         "while the top was off; the old one was too short."),
        # quote on top, answer below, then a forward: the forward is neither question nor answer
        ("Lovely, and what do I owe you?",
         "Forty-five for the rehair; the cello took two minutes, that one is free.\nI'm "
         "forwarding you the supplier's note about the hair below.")]
    assert "question taken from the quoted text: 3" in logs and not res.drops.counts


@pytest.mark.parametrize("body,mine", [
    # bottom-posted, with a signature
    ("On Mon, 2 Jun 2025 at 08:00, Kai <kai@x.example> wrote:\n> Lunch on Friday?\n\nFriday "
     "works, the usual place.\n\n-- \nNoor", "Friday works, the usual place."),
    # text above and below the quote
    ("Short answer: yes.\n\nAm 02.06.2025 um 08:00 schrieb Kai <kai@x.example>:\n> Geht das?\n"
     ">\n> Gruß\n\nLong answer: only after six.", "Short answer: yes.\n\nLong answer: only after "
     "six."),
    # interleaved without any header, quotes with and without a space after ">"
    (">Where?\nThe north gate.\n> When?\n>\n> And who?\nNine, and everyone.\n\nCheers,\nNoor",
     "The north gate.\n\nNine, and everyone."),
    # "X wrote:" with a quote below is a header; the same words without a quote are text
    ("Kai Olsen wrote:\n> ok?\nOk.", "Ok."),
    ("My grandmother wrote:\nthe recipe on a napkin.", "My grandmother wrote:\nthe recipe on a "
     "napkin."),
    # a header followed by an unmarked quote: below it nothing is theirs
    ("Yes please.\n\nOn 2 Jun 2025, Kai wrote:\nDo you want the spare key?", "Yes please."),
    # a forward below a reply is cut with its header
    ("See below.\n\n---------- Forwarded message ---------\nFrom: A <a@x.example>\nDate: today\n"
     "\nold text", "See below."),
    ("Für dich.\n\n-------- Weitergeleitete Nachricht --------\nBetreff: x\n\nalt", "Für dich."),
])
def test_own_words_layouts(body, mine):
    assert mail.own_words(body) == mine


# ------------------------------------------------------------------------ property: interleaving

_WORDS = st.sampled_from("the violin bridge soundpost varnish maple spruce glue cleat bow hair "
                         "rosin peg string tuner purfling tomorrow morning price ready cracked "
                         "seven euros yes no maybe quite small large".split())
_LINE = st.lists(_WORDS, min_size=2, max_size=9).map(lambda ws: " ".join(ws).capitalize() + ".")
_PARA = st.lists(_LINE, min_size=1, max_size=3).map("\n".join)
# quoted lines may say anything, even "wrote:" or "-- "
_QLINE = st.one_of(_LINE, st.just("-- "), st.just("On Tue, Kai wrote:"), st.just(""),
                   st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30))
_QUOTE = st.tuples(st.booleans(), st.lists(_QLINE, min_size=1, max_size=4)).map(
    lambda hq: ("On Tue, 3 Jun 2025 at 09:12, Kai Olsen <kai@x.example> wrote:\n" if hq[0] else "")
    + "\n".join(">" + (" " if i % 2 == 0 else "") + q for i, q in enumerate(hq[1])))


@settings(max_examples=150, deadline=None)
@given(own=st.lists(_PARA, min_size=1, max_size=4), quotes=st.lists(_QUOTE, min_size=1,
                                                                      max_size=5),
       quote_first=st.booleans())
def test_own_paragraphs_survive_any_interleaving(own, quotes, quote_first):
    parts, q, o = [], list(quotes), list(own)
    turn = quote_first
    while q or o:
        if (turn and q) or not o:
            parts.append(q.pop(0))
        else:
            parts.append(o.pop(0))
        turn = not turn
    body = "\n\n".join(parts)
    assert mail.own_words(body) == "\n\n".join(own)


def test_html_only_lone_reply_takes_its_question_from_the_blockquote(tmp_path):
    """An HTML-only reply whose original is not in the import: the Gmail quote block is the
    question (it used to be thrown away with the quote, and the reply dropped)."""
    eml = tmp_path / "reply.eml"
    eml.write_text(
        "From: Lena Vogt <lena@vogt.example>\nTo: tim@brandt.example\nSubject: Re: Heute?\n"
        "Date: Mon, 5 Feb 2024 18:20:00 +0100\nIn-Reply-To: <q1@brandt.example>\n"
        "MIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n\n"
        "<div dir=\"ltr\">Passt, ich komme um acht.<br>Bring den Würfelbecher mit!</div>"
        "<div class=\"gmail_quote\"><div dir=\"ltr\" class=\"gmail_attr\">Am Mo., 5. Feb. 2024 "
        "um 17:02 Uhr schrieb Tim Brandt &lt;tim@brandt.example&gt;:<br></div>"
        "<blockquote class=\"gmail_quote\">Kommst du heute Abend zum Spieleabend?"
        "<blockquote>alte Nachricht</blockquote></blockquote></div>\n", encoding="utf-8")
    out, logs = tmp_path / "out.jsonl", []
    import_sources([str(eml)], out, me=("Lena",), log=logs.append)
    [row] = [json.loads(line)["messages"] for line in out.read_text().splitlines()]
    assert [(m["role"], m["content"]) for m in row] == [
        ("user", "Kommst du heute Abend zum Spieleabend?"),
        ("assistant", "Passt, ich komme um acht.\nBring den Würfelbecher mit!")]
    assert "question taken from the quoted text: 1" in logs
