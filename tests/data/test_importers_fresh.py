"""What a new user hits on fresh exports: first-name ``--me``, iOS system lines that carry a
sender, context answers trained once (weight 0), sessions, Telegram single-chat exports, and
e-mail replies whose original is only in their quote. Fixtures: tests/data/fixtures/importers/
(whatsapp_ios_priya.txt, whatsapp_android_es_family.txt, telegram_single_chat.json,
lone_reply.eml, sent_only.mbox)."""

from __future__ import annotations

import json

import pytest

from conftest import REPO
from mindprint.cli import main
from mindprint.data.importers import whatsapp
from mindprint.data.importers.common import Conversation, Msg
from mindprint.data.importers.run import detect, import_sources
from mindprint.data.importers.turns import TurnOptions, build_records, check_me, fold
from mindprint.data.stream import Drops
from mindprint.data.tools import file_stats
from mindprint.errors import DataError

FIX = REPO / "tests" / "data" / "fixtures" / "importers"


def run(tmp_path, *names, **kw):
    logs: list[str] = []
    res = import_sources([str(FIX / n) for n in names], tmp_path / "out.jsonl", log=logs.append,
                         **kw)
    rows = [json.loads(line) for line in res.output.read_text().splitlines()]
    return rows, res, "\n".join(logs)


def answers(rows):
    return [r["messages"][-1]["content"] for r in rows]


# ----------------------------------------------------------------------------------- 1. --me

def test_me_first_name_and_accents_pick_the_one_speaker(tmp_path):
    rows, _, _ = run(tmp_path, "whatsapp_ios_priya.txt", me=("priya",))
    assert rows and all("Jonah" not in a for a in answers(rows))
    assert any(a.startswith("Barely. It smelled") for a in answers(rows))
    rows, _, _ = run(tmp_path, "whatsapp_android_es_family.txt", me=("lucia",), force=True)
    assert answers(rows)[0] == "Yo la hago, tengo la receta de mamá guardada en el cuaderno azul"
    assert all(m["role"] == "user" for r in rows for m in r["messages"]
               if m["content"].startswith(("Martín", "Ana")))
    # a surname and a case-different full name work too
    rows2, _, _ = run(tmp_path, "whatsapp_ios_priya.txt", me=("NATARAJAN",), force=True)
    rows3, _, _ = run(tmp_path, "whatsapp_ios_priya.txt", me=("priya natarajan",), force=True)
    assert answers(rows2) == answers(rows3) != []


def test_me_matching_several_speakers_lists_them(tmp_path):
    with pytest.raises(DataError) as err:
        run(tmp_path, "whatsapp_android_es_family.txt", me=("gomez",))
    msg = str(err.value)
    assert "matches several speakers" in msg and "full name" in msg
    assert all(n in msg for n in ("'Lucía Gómez'", "'Martín Gómez'", "'Ana Gómez'"))


def test_me_no_match_still_lists_speakers_and_partial_words_do_not_match(tmp_path):
    with pytest.raises(DataError) as err:
        run(tmp_path, "whatsapp_ios_priya.txt", me=("pri",))
    assert "matches none" in str(err.value) and "'Priya Natarajan'" in str(err.value)


def test_check_me_rules():
    msgs = [Msg("Zoë Brontë-Hall", "a", None, "f:1"), Msg("Søren Kierkegaard", "b", None, "f:2"),
            Msg("Olsen, Ingrid", "c", None, "f:3", ("ingrid@x.no",)),
            Msg("Ingrid Olsen", "d", None, "f:4", ("ingrid@x.no",))]
    assert check_me("f", msgs, ("zoe",)) == ("Zoë Brontë-Hall",)
    assert check_me("f", msgs, ("bronte",)) == ("Zoë Brontë-Hall",)
    assert check_me("f", msgs, ("INGRID@X.NO",)) == ("INGRID@X.NO",)       # exact alias kept
    # one address behind two spellings of a name is one person, not an ambiguity
    assert set(check_me("f", msgs, ("ingrid",))) == {"Olsen, Ingrid", "Ingrid Olsen"}
    # an exact full name wins over word matches
    assert check_me("f", msgs + [Msg("Zoe", "e", None, "f:5")], ("zoe",)) == ("zoe",)
    assert fold("Søren") == "søren" and fold("Gómez") == "gomez"


# --------------------------------------------------------------------- 2. WhatsApp iOS system

def test_whatsapp_ios_system_lines_with_a_sender_are_dropped(tmp_path):
    rows, res, log = run(tmp_path, "whatsapp_ios_priya.txt", me=("Priya Natarajan",))
    text = "\n".join(m["content"] for r in rows for m in r["messages"])
    for system in ("end-to-end", "Missed voice call", "security code", "disappearing"):
        assert system not in text
    assert res.drops.counts["system line"] == 5
    assert res.drops.counts["media placeholder or deleted message"] == 2
    # the edited suffix goes, the message stays; an ordinary "I added salt" is no system line
    assert "Bring the good butter, the salted one from the farmers market" in answers(rows)
    assert "<This message was edited>" not in text and "\u200e" not in text
    assert any("I added salt to the levain" in a for a in answers(rows))
    assert "system line: 5" in log


@pytest.mark.parametrize("text, system", [
    ("Messages and calls are end-to-end encrypted. Only people in this chat can read, listen "
     "to, or share them. Learn more.", True),
    ("Missed group video call", True),
    ("Priya changed the subject from “Bread” to “Bread club”", True),
    ("Tim hat den Betreff zu „Grillen am See“ geändert", True),
    ("Your security code with Jonah Weiss changed. Tap to learn more.", True),
    ("Disappearing messages were turned off. Tap to change.", True),
    ("I think she changed the subject to avoid the question", False),
    ("Ella cambió el asunto de la reunión sin avisar", False),
    ("we missed the video call because the wifi died", False),
])
def test_system_texts_are_whole_texts_not_words(text, system):
    assert bool(whatsapp.SYSTEM_TEXT.match(text)) is system


def test_whatsapp_android_spanish_system_lines(tmp_path):
    _, res, _ = run(tmp_path, "whatsapp_android_es_family.txt", me=("Lucía Gómez",))
    # encryption, created, "te añadió", "añadió a", subject change, missed call, "salió"
    assert res.drops.counts["system line"] == 7


# ------------------------------------------------------------------ 3. context trained once

def test_context_answers_have_weight_zero_and_start_at_a_user_turn():
    c = Conversation([Msg(s, t, m * 60.0, f"f:{m}") for s, t, m in ([
        ("Me", "so I finally repainted the hallway", 0), ("Ann", "what colour did you pick?", 1),
        ("Me", "a dusty green, almost grey", 2), ("Ann", "and the doors?", 3),
        ("Me", "left them white for contrast", 4), ("Ann", "send pictures!", 5),
        ("Me", "tomorrow when the light is better", 6)])])
    recs = list(build_records([c], TurnOptions(me=("Me",), context=2), Drops()))
    assert [sum(m.trained for m in r.messages) for r in recs] == [1, 1, 1]
    # the first record reaches the chat's start: the opening message stays, as context
    assert [(m.role, m.weight) for m in recs[0].messages] == [
        ("assistant", 0), ("user", None), ("assistant", None)]
    # later ones were cut: they start at a user turn, not at an answer without its question
    assert all(r.messages[0].role == "user" for r in recs[1:])
    last = recs[-1].messages
    assert [(m.role, m.weight) for m in last] == [("user", None), ("assistant", 0),
                                                  ("user", None), ("assistant", None)]


def test_trained_tokens_are_the_answers_once(tmp_path, tokenizer):
    rows, res, _ = run(tmp_path, "whatsapp_ios_priya.txt", me=("priya",),
                       options=TurnOptions(me=("priya",), context=4))
    assert any(len(r["messages"]) > 2 for r in rows)          # context is there
    stats = file_stats(res.output, tokenizer, max_length=4096, log=lambda s: None)
    eot = len(tokenizer(tokenizer.eos_token, add_special_tokens=False)["input_ids"])
    expected = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) + eot
                   for a in answers(rows))
    assert stats.trained_tokens == expected
    # without weight 0 the context answers would be trained again
    unweighted = tmp_path / "unweighted.jsonl"
    unweighted.write_text("".join(json.dumps({"messages": [
        {k: v for k, v in m.items() if k != "weight"} for m in r["messages"]]}) + "\n"
        for r in rows))
    assert file_stats(unweighted, tokenizer, max_length=4096,
                      log=lambda s: None).trained_tokens > expected


# ------------------------------------------------------------------------------- 4. sessions

def test_next_day_reply_gets_no_context_from_yesterday(tmp_path):
    rows, _, _ = run(tmp_path, "whatsapp_ios_priya.txt", me=("priya",))
    day2 = [r for r in rows if r["messages"][-1]["content"].startswith(("One was", "Only if"))]
    assert len(day2) == 2
    assert all("sourdough" not in m["content"] and "butter, the salted" not in m["content"]
               for r in day2 for m in r["messages"])
    # with a gap longer than the night, yesterday is context again
    rows, _, _ = run(tmp_path, "whatsapp_ios_priya.txt", force=True, me=("priya",),
                     options=TurnOptions(me=("priya",), session_gap=48 * 3600))
    day2 = [r for r in rows if r["messages"][-1]["content"].startswith("One was")]
    assert any("butter, the salted" in m["content"] for m in day2[0]["messages"])


def test_cli_session_gap(tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    src = str(FIX / "whatsapp_ios_priya.txt")
    assert main(["data", "import", src, "--me", "priya", "--session-gap", "172800",
                 "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    day2 = [r for r in rows if r["messages"][-1]["content"].startswith("One was")]
    assert len(day2[0]["messages"]) > 2            # yesterday is context with a two-day gap
    assert main(["data", "import", src, "--me", "priya", "--session-gap", "0",
                 "-o", str(tmp_path / "p.jsonl")]) != 0
    assert "--session-gap must be more than 0" in capsys.readouterr().err


def test_sessions_cut_merging_and_questions():
    t = 3600.0
    c = Conversation([Msg("Ann", "are you coming to the match?", 0, "f:1"),
                      Msg("Me", "yes, I bought the tickets already", 60, "f:2"),
                      Msg("Ann", "great, see you there", 120, "f:3"),
                      # seven hours later: a new conversation that the person opens
                      Msg("Me", "what a game that was tonight", 7 * t, "f:4"),
                      Msg("Ann", "unbelievable ending", 7 * t + 60, "f:5"),
                      Msg("Me", "I still cannot believe the penalty", 7 * t + 90, "f:6")])
    drops = Drops()
    recs = list(build_records([c], TurnOptions(me=("Me",), session_gap=6 * t,
                                               merge_window=10 * t), drops))
    contents = [[m.content for m in r.messages] for r in recs]
    assert contents == [["are you coming to the match?", "yes, I bought the tickets already"],
                        ["what a game that was tonight", "unbelievable ending",
                         "I still cannot believe the penalty"]]
    assert drops.counts == {"answer without a question": 1}
    # untimed sources have no gaps
    u = Conversation([Msg(m.speaker, m.text, None, m.where) for m in c.messages])
    recs = list(build_records([u], TurnOptions(me=("Me",), session_gap=1), Drops()))
    assert len(recs[-1].messages) > 2


# ------------------------------------------------------------------ 5. Telegram single chat

def test_telegram_single_chat_export_is_detected_and_read(tmp_path):
    assert detect(str(FIX / "telegram_single_chat.json")) == "telegram"
    assert detect(str(FIX / "telegram_full_export.json")) == "telegram"
    rows, res, _ = run(tmp_path, "telegram_single_chat.json", me=("ingrid",))
    assert res.kinds == {str(FIX / "telegram_single_chat.json"): "telegram"}
    assert answers(rows)[0] == ("Section 3 promises too much. I'd cut the three-year timeline "
                                "and say what we can do in one.")
    assert res.drops.counts["service message"] == 2
    assert res.drops.counts["media or empty message"] == 1


# ------------------------------------------------------------------- 6. lone e-mail replies

def test_lone_replies_take_the_question_from_their_quote(tmp_path):
    rows, res, log = run(tmp_path, "lone_reply.eml", "sent_only.mbox", me=("ingrid",))
    pairs = {r["messages"][-1]["content"].split("\n")[-1]: r["messages"][0]["content"]
             for r in rows}
    q = pairs["a second driver for the way back."]
    assert q.startswith("Ingrid, which week works for the trip")
    assert "plateau trip again" not in q and ">" not in q and "wrote:" not in q
    assert "Field Course Coordinator" not in q                  # the quoted signature
    q = pairs["field days."]
    assert q.startswith("Hi Ingrid,\n\nCould you send me the Q2 equipment numbers")
    assert "Sent:" not in q and "Thanks" not in q
    assert pairs["I will reprint them this afternoon."] == ("are the labels on the March "
                                                            "samples right? Some say 2023.")
    assert "question taken from the quoted text: 3" in log
    assert "question taken from the quoted text" not in res.drops.counts
    # a mail that neither threads nor quotes anything is still a counted drop
    assert res.drops.counts == {"e-mail that answers no message in the import": 1}
