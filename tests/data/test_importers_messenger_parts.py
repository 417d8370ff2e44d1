"""Messenger / Instagram threads split into message_1.json (newest), message_2.json, …: one
conversation in time order, whichever part or folder is given, and each thread imported once.

Fixture: tests/data/fixtures/importers/instagram_inbox/inbox/ — a three-part thread (Karolina and
Teodor, pottery class; a question at the end of part 2 answered at the top of part 1; two messages
of one millisecond; Meta's Latin-1 mojibake) and a one-part thread (Maja, the kiln)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mindprint.data.importers import chatjson
from mindprint.data.importers.run import detect, import_sources
from mindprint.data.stream import Drops
from mindprint.errors import DataError

INBOX = Path(__file__).parent / "fixtures" / "importers" / "instagram_inbox" / "inbox"
THREAD = INBOX / "teodorlindqvist_1120"
ME = ("Karolina Wiśniewska",)


def _import(tmp_path, *sources, **kw):
    out, logs = tmp_path / "out.jsonl", []
    res = import_sources([str(s) for s in sources], out, me=kw.pop("me", ME), log=logs.append,
                         **kw)
    return [json.loads(line)["messages"] for line in out.read_text().splitlines()], res, logs


def _answers(rows):
    return [r[-1]["content"] for r in rows]


def test_any_part_reads_the_whole_thread_in_time_order():
    times = []
    for part in ("message_1.json", "message_2.json", "message_3.json"):
        imp = chatjson.parse_messenger(str(THREAD / part), Drops())
        [conv] = imp.conversations
        times.append([m.time for m in conv.messages])
        assert conv.messages[0].text.startswith("hej! are you still doing the pottery class")
        assert conv.messages[-1].text.startswith("Your Polish is already better")
    assert times[0] == times[1] == times[2] == sorted(times[0])
    # the one-millisecond pair keeps the order it was written in (the file lists newest first)
    texts = [m.text for m in conv.messages]
    assert texts.index("18:00, but come at quarter to. Wiesław locks the door at six on the dot, "
                       "no mercy.") + 1 == texts.index(
        "And he will make you wedge clay for twenty minutes first. Don't complain, it's a test.")


def test_a_question_and_its_answer_across_parts(tmp_path):
    rows, res, logs = _import(tmp_path, THREAD / "message_1.json")
    # the question is the last message of message_2.json, the answer the first of message_1.json
    wedging = next(r for r in rows if r[-1]["content"].startswith("You count the turns."))
    assert wedging[-2]["content"] == "how do you not get bored wedging clay"
    assert any("3 parts joined into one conversation" in line for line in logs)
    assert _answers(rows) == [
        "Still doing it, yes. Third term now, and my bowls finally stopped looking like ashtrays.",
        "There is one wheel free. Bring an old shirt, the clay goes everywhere, and I mean "
        "everywhere.",
        "My dad's painting overalls. They were already ruined, so the clay can't make them worse.",
        "18:00, but come at quarter to. Wiesław locks the door at six on the dot, no mercy.\n"
        "And he will make you wedge clay for twenty minutes first. Don't complain, it's a test.",
        "You count the turns. Forty, then you cut it with the wire and look for air bubbles. "
        "It's oddly calming, like kneading bread.",
        "Your Polish is already better than my Swedish. Next week we try centring — that's where "
        "everyone cries a little."]
    # every skipped message is counted with its part file
    assert res.drops.counts == {"media or empty message": 1, "system message": 2,
                                "unsent message": 1}
    assert f"{THREAD / 'message_3.json'}: message 2" in res.drops.examples["media or empty message"]


def test_parts_given_twice_and_the_folder_import_each_thread_once(tmp_path):
    once, _, _ = _import(tmp_path, THREAD / "message_3.json")
    twice, _, logs = _import(tmp_path, THREAD / "message_3.json", THREAD / "message_1.json",
                             force=True)
    assert twice == once
    assert any("message_1.json: thread already imported from an earlier source" in line
               for line in logs)
    # the inbox folder: both threads, the three-part one once even when a part is also given
    rows, res, _ = _import(tmp_path, INBOX.parent, THREAD / "message_2.json", force=True)
    assert detect(str(INBOX.parent)) == "messenger" and detect(str(THREAD)) == "messenger"
    assert len(rows) == len(once) + 1
    assert rows[0][-1]["content"].startswith("I can, if they are bone dry by Friday night.")  # kiln…


def test_parts_are_ordered_by_number_not_by_name(tmp_path):
    """message_10.json sorts before message_2.json by name; the parts are read by number."""
    thread = tmp_path / "inbox" / "longthread_77"
    thread.mkdir(parents=True)
    t0 = 1_700_000_000_000
    for part in range(1, 12):    # part 1 newest: part k holds the minute 11 - k
        minute = 11 - part
        who, text = (("Ana Ruiz", f"pregunta número {minute}?") if minute % 2 == 0 else
                     ("Bo Chen", f"answer {minute}: it depends on the tide, as always"))
        (thread / f"message_{part}.json").write_text(json.dumps({
            "participants": [{"name": "Ana Ruiz"}, {"name": "Bo Chen"}],
            "messages": [{"sender_name": who, "timestamp_ms": t0 + minute * 60_000,
                          "content": text}]}))
    [parts] = chatjson.messenger_threads(thread / "message_5.json")
    assert [p.name for p in parts] == [f"message_{k}.json" for k in range(1, 12)]
    [conv] = chatjson.parse_messenger(str(thread), Drops()).conversations
    assert [m.text.split()[-1] if m.speaker == "Ana Ruiz" else m.text.split(":")[0]
            for m in conv.messages][:4] == ["0?", "answer 1", "2?", "answer 3"]


def test_folder_errors(tmp_path):
    empty = tmp_path / "inbox"
    empty.mkdir()
    (empty / "notes.json").write_text("{}")
    with pytest.raises(DataError, match="nor Messenger/Instagram thread"):
        detect(str(empty))
    # a broken part is an error naming that part, never a traceback
    broken = tmp_path / "t"
    shutil.copytree(THREAD, broken)
    (broken / "message_2.json").write_text('{"messages": [{"sender_name": "A"}, ')
    with pytest.raises(DataError, match=r"message_2.json:1: invalid JSON"):
        chatjson.parse_messenger(str(broken / "message_1.json"), Drops())
    (broken / "message_2.json").write_text('{"messages": [{"content": "no sender"}]}')
    with pytest.raises(DataError, match=r"message_2.json: message 1: a message needs a "
                                        "'sender_name'"):
        chatjson.parse_messenger(str(broken), Drops())
