"""`mindprint data import`: each source family on its own fixtures (tests/data/fixtures/importers,
invented people, several languages and layouts), detection, and the CLI's errors."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from conftest import PERSONA, REPO
from mindprint.data.importers import chatjson, mail, subtitles, transcript, whatsapp
from mindprint.data.importers.prose import approx_tokens
from mindprint.data.importers.run import detect, import_sources
from mindprint.data.stream import Drops
from mindprint.errors import DataError

FIX = Path(__file__).parent / "fixtures" / "importers"


def run(tmp_path, *sources, **kw):
    out, logs = tmp_path / "out.jsonl", []
    res = import_sources([str(FIX / s) for s in sources], out, log=logs.append, **kw)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return rows, res, "\n".join(logs)


def pairs(rows):
    """(last user turn, answer) per record."""
    return [(r["messages"][-2]["content"], r["messages"][-1]["content"]) for r in rows]


@pytest.mark.parametrize("name,kind", [
    ("whatsapp_android_de_group.txt", "whatsapp"), ("whatsapp_ios_es.txt", "whatsapp"),
    ("whatsapp_ios_us.txt", "whatsapp"), ("interview_markdown.md", "transcript"),
    ("qa_timestamps.txt", "transcript"), ("otter_meeting.txt", "transcript"),
    ("documentary.srt", "srt"), ("panel.vtt", "vtt"), ("telegram_result.json", "telegram"),
    ("telegram_full_export.json", "telegram"), ("discord_export.json", "discord"),
    ("messenger_message_1.json", "messenger"), ("slack_export", "slack"),
    ("henrik.mbox", "mbox"), ("question.eml", "eml"), ("essay_slow_bread.md", "prose")])
def test_detection(name, kind):
    assert detect(str(FIX / name)) == kind


def test_detection_by_content_not_extension(tmp_path):
    for src, kind in (("whatsapp_ios_es.txt", "whatsapp"), ("documentary.srt", "srt"),
                      ("panel.vtt", "vtt"), ("henrik.mbox", "mbox"), ("reply.eml", "eml")):
        p = tmp_path / f"{kind}.dat"
        p.write_bytes((FIX / src).read_bytes())
        assert detect(str(p)) == kind, src


# ------------------------------------------------------------------------------------ WhatsApp

def test_whatsapp_android_group_day_first(tmp_path):
    rows, res, log = run(tmp_path, "whatsapp_android_de_group.txt", me=("lena vogt",))
    first_q, first_a = pairs(rows)[0]
    # group chat: every other speaker's message is name-prefixed; bubbles merged; multi-line kept
    assert first_q == ("Tim Brandt: Wer ist morgen dabei? 10 Uhr an der Halle\n"
                       "Sara Kılıç: Ich! Aber erst ab halb elf 🙈")
    assert first_a.startswith("Bin dabei. Ich bring das neue Seil mit,\ndas alte hat")
    assert first_a.endswith("falls jemand seine vergisst 😄")
    assert "[phone]" in rows[-1]["messages"][-1]["content"] and res.scrub_counts == {"phone": 1}
    assert res.drops.counts == {"system line": 4, "media placeholder or deleted message": 1,
                                "answer shorter than 3 words": 1}
    assert "whatsapp_android_de_group.txt:9" in log       # the <Medien ausgelassen> line


def test_whatsapp_date_orders_and_clocks():
    d = Drops()
    es = whatsapp.parse(str(FIX / "whatsapp_ios_es.txt"), d).conversations[0].messages
    assert datetime.fromtimestamp(es[-1].time) == datetime(2024, 3, 13, 22, 7, 44)   # 13/3 → dmy
    us = whatsapp.parse(str(FIX / "whatsapp_ios_us.txt"), d).conversations[0].messages
    assert datetime.fromtimestamp(us[-1].time) == datetime(2023, 7, 15, 12, 2, 30)   # 12:02 PM
    assert datetime.fromtimestamp(us[0].time) == datetime(2023, 7, 4, 20, 1, 12)
    # the edited-message marker and direction marks are not part of what she wrote
    assert es[3].text == "Sobre las nueve, que salgo tarde del hospital.\nSi me retraso te escribo."
    de = whatsapp.parse(str(FIX / "whatsapp_android_de_group.txt"), d).conversations[0].messages
    assert datetime.fromtimestamp(de[0].time) == datetime(2024, 2, 3, 18, 5)


def test_whatsapp_ambiguous_dates_follow_the_clock(tmp_path):
    p = tmp_path / "chat.txt"
    p.write_text("1/2/24, 10:00 - Ann: hello there you\n1/2/24, 10:01 - Bo: hi back to you\n")
    assert datetime.fromtimestamp(whatsapp.parse(str(p), Drops()).conversations[0]
                                  .messages[0].time).month == 2                # 24 h: day first
    p.write_text("1/2/24, 10:00 AM - Ann: hello there you\n1/2/24, 10:01 AM - Bo: hi back\n")
    assert datetime.fromtimestamp(whatsapp.parse(str(p), Drops()).conversations[0]
                                  .messages[0].time).month == 1                # 12 h: US order


def test_whatsapp_bad_date_names_the_line(tmp_path):
    p = tmp_path / "chat.txt"
    p.write_text("31/12/23, 10:00 - Ann: fine day today\n31/13/23, 10:01 - Bo: no such month\n")
    with pytest.raises(DataError, match=r"chat\.txt:2: date '31/13/23'"):
        whatsapp.parse(str(p), Drops())


# --------------------------------------------------------------------------------- transcripts

def test_markdown_interview_three_speakers(tmp_path):
    rows, res, _ = run(tmp_path, "interview_markdown.md", me=("Aurelio Conti",))
    qs = pairs(rows)
    assert qs[1] == ("Femke de Vries: And Noor, you came at it from the science side?\n"
                     "Noor Haddad: Mostly, yes. I counted mites for a living before I ever "
                     "tasted the honey.", "She still counts mites at dinner.")  # (laughs) gone
    assert "**" not in json.dumps(rows)
    assert res.drops.counts == {"text before the first speaker label": 2}


def test_qa_transcript_defaults_to_the_answerer(tmp_path):
    rows, _, _ = run(tmp_path, "qa_timestamps.txt")
    assert [a for _, a in pairs(rows)][1] == ("Four runs. One long and slow, one with hills,\n"
                                               "two easy ones where I try not to look at the "
                                               "watch at all.")
    assert len(rows) == 3 and rows[2]["messages"][-1]["content"] == "Buy shoes in the afternoon."
    assert rows[2]["messages"][0]["content"].startswith("You ran your first marathon")  # context


def test_otter_layout_and_single_label_speakers(tmp_path):
    conv = transcript.parse(str(FIX / "otter_meeting.txt"), Drops()).conversations[0]
    assert [m.speaker for m in conv.messages] == ["Kwame Mensah", "Ilse Bergstrom",
                                                  "Kwame Mensah", "Ilse Bergstrom",
                                                  "Tomasz Wójcik"]
    assert conv.messages[-1].text == "I can be the second pair of eyes."


def test_a_stray_label_inside_an_answer_stays_text(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("Host: What do you carry?\nMo: A notebook.\nNote: always pencil.\n"
                 "Host: Why pencil?\nMo: Ink freezes on the mountain.\n")
    msgs = transcript.parse(str(p), Drops()).conversations[0].messages
    assert [m.speaker for m in msgs] == ["Host", "Mo", "Host", "Mo"]
    assert msgs[1].text == "A notebook.\nNote: always pencil."


# ----------------------------------------------------------------------------------- subtitles

def test_srt_speakers_dashes_and_merged_cues(tmp_path):
    rows, _, _ = run(tmp_path, "documentary.srt", me=("astrid",))
    assert pairs(rows) == [
        ("So what first brought you to the glacier?",
         "My father's old photographs. The ice reached the road in 1962.\n"
         "Now you walk forty minutes before you touch it."),
        ("Does that frighten you?", "It makes me measure faster."),
        ("And what do the measurements say this year?",
         "Eleven metres of retreat since last August, which is about the median of the last "
         "decade.")]


def test_vtt_voice_tags_several_voices_in_one_cue():
    msgs = subtitles.parse_vtt(str(FIX / "panel.vtt"), Drops()).conversations[0].messages
    assert [m.speaker for m in msgs] == ["Moderator", "Rosa Lindqvist", "Rosa Lindqvist",
                                         "Moderator", "Rosa Lindqvist"]
    assert msgs[-1].text == "More true. A phone is a shop in your pocket."


# ------------------------------------------------------------------------------------ JSON chats

def test_telegram_rich_text_service_and_media(tmp_path):
    rows, res, _ = run(tmp_path, "telegram_result.json", me=("Arkadiy Petrov",))
    assert rows[0]["messages"][-1]["content"] == ("Almost. The poems are the hard part: the "
                                                  "rhymes don't survive, so I'm keeping the "
                                                  "rhythm instead.")
    assert rows[1]["messages"][-2]["content"].startswith("Rhythm over rhyme — I like that.")
    assert "[url]" in rows[1]["messages"][-1]["content"]
    assert res.drops.counts == {"service message": 1, "media or empty message": 1}


def test_telegram_full_export_matches_from_id_and_scrubs_names(tmp_path):
    rows, res, _ = run(tmp_path, "telegram_full_export.json", me=("user12",), scrub_names=True)
    assert len(rows) == 2
    group = rows[1]["messages"][0]["content"]
    assert "Ola" not in group and "Bram" not in group and group.count("[person ") == 3
    assert res.scrub_counts["name"] == 3


def test_discord_nickname_and_system_types(tmp_path):
    rows, res, _ = run(tmp_path, "discord_export.json", me=("Fern",))
    assert rows[0]["messages"][-1]["content"].endswith("honestly 😅")        # merged bubbles
    assert rows[1]["messages"][-2]["content"] == "tollbooth: @Fern what case do you use?"
    assert set(res.drops.counts) == {"system message (GuildMemberJoin)",
                                     "attachment or empty message",
                                     "system message (ChannelPinnedMessage)"}


def test_messenger_mojibake_order_and_drops(tmp_path):
    rows, res, _ = run(tmp_path, "messenger_message_1.json", me=("Zoë Ålund",))
    assert pairs(rows) == [
        ("She said yes!! we're getting married in June",
         "WHAT 😭 finally! Tell Inês I'm crying in the library."),
        ("Zoë, você já reservou a sala para a festa?",
         "Já fiz! Ficou ótimo, obrigada 😊 The café downstairs did the cake.")]
    assert res.drops.counts == {"system message": 1, "media or empty message": 1,
                                "unsent message": 1}
    assert chatjson.unmojibake("Ã©") == "é" and chatjson.unmojibake("é—") == "é—"


def test_slack_folder_users_mentions_links_subtypes(tmp_path):
    rows, res, _ = run(tmp_path, "slack_export", me=("priyanka",))
    assert pairs(rows)[0] == ("Ben Okoro: @Priyanka Rao is the staging deploy blocked on the "
                              "cert again?",
                              "Yes, the cert expired on Friday. I renewed it, but the load "
                              "balancer caches the old one for an hour >_<\n"
                              "Runbook is here: cert runbook")
    assert pairs(rows)[2] == ("lunch recs near the office?",      # another channel, 1:1 there
                              "The dosa place on Elm. Ask for the podi, it's not on the menu.")
    assert sum(res.drops.counts.values()) == 3


# -------------------------------------------------------------------------------------- e-mail

def test_mbox_replies_without_quotes_and_signatures(tmp_path):
    rows, res, _ = run(tmp_path, "henrik.mbox", me=("henrik@fjordline.example",))
    answers = [a for _, a in pairs(rows)]
    assert answers[0] == ("The 07:30. The later one stops at every island and arrives after the "
                          "opening talk, and in April the wind often cancels the afternoon "
                          "crossings anyway.\n\nI'll book a block of twelve seats tonight.")
    # the HTML-only question, without its Gmail quote block, is the user turn of the 2nd reply
    assert pairs(rows)[1][0] == ("Perfect, thank you! Can you also check whether the boat has a "
                                 "step-free ramp? One of our speakers uses a wheelchair.")
    assert answers[1].startswith("It does.") and "Original Message" not in answers[1]
    assert answers[2].endswith("danach gehen sie wieder in den Verkauf.")  # subject-threaded
    assert res.drops.counts == {"e-mail that answers no message in the import": 1}


def test_eml_files_thread_across_files_and_charsets(tmp_path):
    rows, _, _ = run(tmp_path, "question.eml", "reply.eml", me=("Henrik Dahl",))
    assert pairs(rows) == [("Dzień dobry Henrik! Do you need a photographer for the harbour "
                            "walk, or is someone from your team covering it?\n\nMira",
                            "Nobody is covering it yet, so yes please. The light is best around "
                            "seven, when the fishing boats come back in.")]


@pytest.mark.parametrize("body,mine", [
    ("Sure.\n\nOn Tue, 3 Jan 2023 at 10:00, Bo <bo@x.example> wrote:\n> ok?", "Sure."),
    ("Ja, gern.\n\nAm 03.01.2023 um 10:00 schrieb Bo <bo@x.example>:\n> ok?", "Ja, gern."),
    ("Oui.\n\nLe mar. 3 janv. 2023 à 10:00, Bo <bo@x.example> a écrit :\n> ok?", "Oui."),
    ("Fine by me.\n\nFrom: Bo\nSent: Tuesday\nTo: me\nSubject: x\n\nok?", "Fine by me."),
    ("Yes.\n\nBest regards,\nAnn Lee\nACME Ltd.", "Yes."),
    ("Yes, the 4th.\n-- \nAnn\n+1 555 0100", "Yes, the 4th."),
    ("Thanks for the\nsketches, they help.\nSent from my iPhone", "Thanks for the\nsketches, they help.")])
def test_own_words(body, mine):
    assert mail.own_words(body) == mine


def test_html_to_text_marks_quotes_and_drops_scripts():
    html = ("<html><head><style>p{}</style></head><body><p>Hello&nbsp;there</p><div>Line two<br>"
            "three</div><blockquote>old<blockquote>older</blockquote></blockquote>"
            "<script>x()</script></body></html>")
    text = mail.html_to_text(html)
    assert text == "Hello\u00a0there\n\nLine two\nthree\n\n> old\n>> older"   # &nbsp; kept
    assert mail.own_words(text) == "Hello there\n\nLine two\nthree"      # quotes are not theirs
    assert mail.quoted(text) == ("", "old")


# ---------------------------------------------------------------------------------------- prose

def test_prose_passages_keep_paragraphs_and_headings(tmp_path):
    rows, res, _ = run(tmp_path, "essay_slow_bread.md", max_length=60)
    texts = [r["text"] for r in rows]
    starter = [t for t in texts if "## The starter" in t]
    assert len(starter) == 1 and starter[0].startswith("## The starter\n\nMy starter is eleven")
    assert all(approx_tokens(t) <= 60 for t in texts)
    assert " ".join(texts).split() == " ".join(
        (FIX / "essay_slow_bread.md").read_text().split("---")[2:]).split()   # nothing lost
    assert not any("title:" in t for t in texts) and res.drops.counts == {"markdown front matter": 1}


# ------------------------------------------------------------------------------------- driver

def test_me_matching_nobody_lists_the_speakers(tmp_path):
    with pytest.raises(DataError) as err:
        run(tmp_path, "whatsapp_android_de_group.txt", me=("Lina",))
    msg = str(err.value)
    assert "'Lina' matches none of the speakers" in msg
    assert "'Lena Vogt' (5 messages)" in msg and "'Tim Brandt' (1 message)" in msg
    assert msg.index("Lena Vogt") < msg.index("Tim Brandt")          # busiest first


def test_mixing_prose_with_chats_is_an_error(tmp_path):
    with pytest.raises(DataError, match="into a file of its own"):
        run(tmp_path, "essay_slow_bread.md", "qa_timestamps.txt")


def test_existing_output_needs_force(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("keep\n")
    with pytest.raises(DataError, match="--force"):
        import_sources([str(FIX / "qa_timestamps.txt")], out, log=lambda s: None)
    assert out.read_text() == "keep\n"


def test_cli_import_persona_files_and_errors(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "mindprint.cli", "data", "import", *args],
                              cwd=REPO, capture_output=True, text=True, timeout=120)

    out = tmp_path / "maren.jsonl"
    r = cli(str(PERSONA / "persona_interview.txt"), str(PERSONA / "persona.mbox"),
            "--me", "Maren Holloway", "--me", "maren@hollowaycycles.example", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out) and "wrote 62 chat records" in r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # every answer is one of her training answers, word for word ([laughs] and line breaks of
    # the transcript aside): no quote, signature or interviewer text leaked into it
    train = {" ".join(m["content"].split()) for line in (PERSONA / "persona_train.jsonl")
             .read_text().splitlines() for m in json.loads(line)["messages"]
             if m["role"] == "assistant"}
    assert all(" ".join(row["messages"][-1]["content"].split()) in train for row in rows)
    assert not any("Holloway Cycle Research" in json.dumps(row) for row in rows)  # signatures
    r = cli(str(PERSONA / "persona_whatsapp.txt"), "--me", "Marten", "-o", str(tmp_path / "x"))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "'Maren Holloway' (" in r.stderr and "'Jonas Reyes' (" in r.stderr
    r = cli(str(tmp_path / "missing.txt"), "--me", "x", "-o", str(tmp_path / "y"))
    assert r.returncode != 0 and "missing.txt: no such file" in r.stderr
    r = cli(str(PERSONA / "persona_whatsapp.txt"), "--from", "fax", "--me", "x", "-o",
            str(tmp_path / "z"))
    assert "unknown source kind 'fax'" in r.stderr and "Traceback" not in r.stderr
    for args, said in (([str(FIX / "slack_export"), "--from", "whatsapp"], "a whatsapp source is a file"),
                       ([str(FIX / "panel.vtt"), "--from", "slack"], "a slack source is a folder"),
                       ([str(tmp_path / "nope.vtt"), "--from", "vtt"], "nope.vtt: no such file"),
                       ([str(FIX / "panel.vtt"), "--from", "telegram"], "invalid JSON")):
        r = cli(*args, "--me", "x", "-o", str(tmp_path / "w.jsonl"))
        assert r.returncode != 0 and said in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_cli_prose_counts_with_the_model_tokenizer(tmp_path, tokenizer):
    out = tmp_path / "essay.jsonl"
    r = subprocess.run([sys.executable, "-m", "mindprint.cli", "data", "import",
                        str(FIX / "essay_slow_bread.md"), "-o", str(out), "--max-length", "40"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    texts = [json.loads(line)["text"] for line in out.read_text().splitlines()]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert max(lengths) <= 40 and len(texts) >= 5, lengths
    assert "wrote" in r.stderr and "text records" in r.stderr
