"""Turn building, PII scrub and dedup (pure Python), plus round trips: a random conversation
written as a WhatsApp export or a transcript and imported again gives the same turns."""

from __future__ import annotations

import json
import string
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mindprint.data.importers import prose, whatsapp
from mindprint.data.importers.common import Conversation, Msg
from mindprint.data.importers.pii import Scrubber, iban_ok, luhn_ok
from mindprint.data.importers.run import import_sources
from mindprint.data.importers.turns import TurnOptions, build_records, check_me
from mindprint.data.stream import Drops
from mindprint.errors import DataError


def conv(*items, last_only=False):
    """items: (speaker, text, minute) → a conversation with times in minutes."""
    return Conversation([Msg(s, t, m * 60.0, f"f:{i}") for i, (s, t, m) in enumerate(items, 1)],
                        last_only)


def records(*convs, **kw):
    drops = Drops()
    opts = TurnOptions(me=("Me",), **kw)
    out = [[(m.role, m.content) for m in r.messages] for r in build_records(list(convs), opts,
                                                                            drops)]
    return out, drops.counts


def test_bubbles_merge_within_the_window_and_not_beyond():
    c = conv(("Ann", "how was the trip?", 0), ("Me", "long but good", 1),
             ("Me", "the train broke down twice", 3), ("Me", "anyway I'm home now friends", 30))
    out, drops = records(c, merge_window=600)
    assert out == [[("user", "how was the trip?"),
                    ("assistant", "long but good\nthe train broke down twice")]]
    assert drops == {"answer without a question": 1}           # 27 min later: a new thought
    out, _ = records(c, merge_window=3600)
    assert out[0][1][1].endswith("\nanyway I'm home now friends")


def test_context_keeps_k_earlier_turns():
    items, t = [], 0
    for i in range(5):
        items += [("Ann", f"question number {i}", t), ("Me", f"answer number {i} here", t + 1)]
        t += 20
    out, _ = records(conv(*items), context=2)
    assert [len(r) for r in out] == [2, 4, 4, 4, 4]               # 2 turns before the question
    assert out[-1][:2] == [("user", "question number 3"), ("assistant", "answer number 3 here")]
    out, _ = records(conv(*items), context=0)
    assert all(len(r) == 2 for r in out)


def test_group_chats_prefix_names_one_to_one_chats_do_not():
    group = conv(("Ann", "pizza or sushi?", 0), ("Bo", "sushi!!", 1), ("Me", "sushi, obviously, always", 2))
    out, _ = records(group)
    assert out[0][0] == ("user", "Ann: pizza or sushi?\nBo: sushi!!")
    out, _ = records(conv(("Ann", "pizza or sushi?", 0), ("Me", "sushi, obviously, always", 2)))
    assert out[0][0] == ("user", "pizza or sushi?")


def test_min_words_and_duplicates_are_dropped_and_counted():
    a = conv(("Ann", "coffee later?", 0), ("Me", "ok", 1), ("Ann", "coffee later?", 20),
             ("Me", "yes at four then", 21))
    b = conv(("Ann", "coffee later?", 0), ("Me", "yes at four then", 1))
    c = conv(("Ann", "Coffee  later?", 0), ("Me", "Yes at four THEN", 1))
    out, drops = records(a, b, c, context=0)
    assert out == [[("user", "coffee later?"), ("assistant", "yes at four then")]]
    assert drops == {"answer shorter than 3 words": 1, "duplicate": 1,
                     "duplicate after normalising case and spaces": 1}


def test_last_only_conversations_answer_once():
    c = conv(("Me", "first mail of mine here", 0), ("Ann", "a reply to it", 5),
             ("Me", "my answer to the reply", 9), last_only=True)
    out, _ = records(c)
    assert len(out) == 1 and out[0][-1] == ("assistant", "my answer to the reply")
    assert out[0][0] == ("assistant", "first mail of mine here")           # kept as context


def test_me_matches_aliases_case_insensitively_and_errors_list_speakers():
    msgs = [Msg("Fern", "x", None, "f:1", ("brightfern", "42")), Msg("Quill", "y", None, "f:2"),
            Msg("Quill", "z", None, "f:3")]
    check_me("f", msgs, ("BRIGHTFERN",))
    with pytest.raises(DataError, match=r"speakers found: 'Quill' \(2 messages\), 'Fern' \(1 message\)"):
        check_me("f", msgs, ("nobody",))
    with pytest.raises(DataError, match=r"say who the person is with --me NAME; speakers found: 'Quill'"):
        check_me("f", msgs, ())


# ----------------------------------------------------------------------------------------- PII

@pytest.mark.parametrize("text,kind", [
    ("mail me: jo.doe+news@mail.example.co.uk", "email"),
    ("see https://example.org/a/b?c=1 for it", "url"), ("go to www.example.com today", "url"),
    ("IBAN DE89 3704 0044 0532 0130 00 please", "iban"), ("GB82WEST12345698765432", "iban"),
    ("card 4111-1111-1111-1111 exp 12/26", "card"), ("5500 0055 5555 5559", "card"),
    ("call +44 20 7946 0958 tonight", "phone"), ("ring (415) 555-2671 at noon", "phone")])
def test_scrub_finds_each_kind(text, kind):
    s = Scrubber()
    out = s(text)
    assert s.counts == {kind: 1} and f"[{kind}]" in out, out


@pytest.mark.parametrize("text", [
    "the meeting is on 12/31/2023 at 10:15", "it cost 1234567 euros", "ISBN 978-3-16-148410-0",
    "card 4111 1111 1111 1112 fails Luhn", "DE89 3704 0044 0532 0130 01 fails mod 97",
    "version 1.2.3.4 of the app", "flight LH 4402 at 7:45"])
def test_scrub_leaves_lookalikes_alone(text):
    s = Scrubber()
    assert s(text) == text and not s.counts


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert not luhn_ok("0000000000000000")                   # all one digit: not a card
    assert iban_ok("DE89370400440532013000") and not iban_ok("DE89370400440532013001")


def test_national_numbers_need_their_region():
    assert Scrubber(region="DE")("ruf an: 030 12345678") == "ruf an: [phone]"
    assert Scrubber(region="US")("ruf an: 030 12345678") == "ruf an: 030 12345678"


def test_names_scrub_is_consistent_and_off_switch_works():
    s = Scrubber(names=["Anna Berg", "Tom Ruiz", "Q"])
    assert s("Anna Berg said Anna and Tom agreed; Annabel did not.") == \
        "[person 1] said [person 1] and [person 2] agreed; Annabel did not."
    assert Scrubber(enabled=False)("me@x.example") == "me@x.example"


# -------------------------------------------------------------------------------- round trips

_WORD = st.text(string.ascii_letters + "éüß😀", min_size=1, max_size=8)
_TEXT = st.lists(_WORD, min_size=3, max_size=9).map(" ".join)


@st.composite
def chats(draw):
    """Alternating turns of Ann and Me (Ann first), each turn 1-3 bubbles, some multi-line."""
    n = draw(st.integers(1, 6))
    turns = []
    for i in range(2 * n):
        bubbles = draw(st.lists(st.tuples(_TEXT, st.booleans()), min_size=1, max_size=3))
        turns.append(("Ann" if i % 2 == 0 else "Me",
                      [t.replace(" ", "\n", 1) if multi else t for t, multi in bubbles]))
    return turns


def _stamp(dt: datetime, layout: str) -> str:
    if layout == "android-us":
        return f"{dt.month}/{dt.day}/{dt:%y}, {dt:%I:%M}\u202f{dt:%p} - "
    if layout == "android-eu":
        return f"{dt:%d.%m.%y}, {dt:%H:%M} - "
    return f"[{dt.day}/{dt.month}/{dt:%Y}, {dt:%H:%M:%S}] "


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chat=chats(), layout=st.sampled_from(["android-us", "android-eu", "ios"]),
       start=st.datetimes(datetime(2015, 1, 1), datetime(2030, 1, 1)))
def test_whatsapp_round_trip(tmp_path, chat, layout, start):
    lines, t = [], start.replace(second=0, microsecond=0)
    for speaker, bubbles in chat:
        t += timedelta(hours=1)
        for j, b in enumerate(bubbles):
            lines.append(f"{_stamp(t + timedelta(minutes=j), layout)}{speaker}: {b}")
    src = tmp_path / "chat.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    import_sources([str(src)], out, me=("me",), force=True, log=lambda s: None,
                   options=TurnOptions(me=("me",), context=100, min_words=1), scrub=False)
    last = json.loads(out.read_text().splitlines()[-1])["messages"]
    assert [(m["role"], m["content"]) for m in last] == [
        ("user" if s == "Ann" else "assistant", "\n".join(b)) for s, b in chat]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chat=chats(), stamp=st.booleans())
def test_transcript_round_trip(tmp_path, chat, stamp):
    lines = []
    for i, (speaker, bubbles) in enumerate(chat):
        ts = f"[00:{i // 60:02d}:{i % 60:02d}] " if stamp else ""
        lines.append(f"{ts}{speaker}: " + "\n".join(bubbles))
    src = tmp_path / "talk.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    import_sources([str(src)], out, me=("Me",), kind="transcript", force=True, log=lambda s: None,
                   options=TurnOptions(me=("Me",), context=100, min_words=1), scrub=False)
    last = json.loads(out.read_text().splitlines()[-1])["messages"]
    assert [m["content"] for m in last] == ["\n".join(b) for _, b in chat]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.text(max_size=60), max_size=12))
def test_whatsapp_garbage_is_an_error_or_a_parse_never_a_crash(tmp_path, lines):
    src = tmp_path / "junk.txt"
    src.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    try:
        whatsapp.parse(str(src), Drops())
    except DataError:
        pass


@given(paragraphs=st.lists(st.lists(_WORD, min_size=1, max_size=40).map(" ".join), min_size=1,
                           max_size=8), budget=st.integers(16, 80))
def test_prose_split_is_lossless_and_within_budget(paragraphs, budget):
    text = "\n\n".join(paragraphs)
    passages = prose.split_passages(text, budget)
    assert " ".join(passages).split() == text.split()
    assert all(prose.approx_tokens(p) <= budget for p in passages)


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) |
                     st.dictionaries(st.sampled_from(["messages", "chats", "list", "text", "from",
                                                      "type", "author", "name", "content",
                                                      "sender_name", "timestamp_ms", "date",
                                                      "date_unixtime", "timestamp", "nickname",
                                                      "is_unsent", "from_id"]), inner,
                                     max_size=5), max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_JSON, kind=st.sampled_from(["telegram", "discord", "messenger"]))
def test_json_exports_malformed_give_an_error_never_a_traceback(tmp_path, value, kind):
    from mindprint.data.importers import chatjson

    src = tmp_path / "x.json"
    src.write_text(json.dumps(value))
    parse = {"telegram": chatjson.parse_telegram, "discord": chatjson.parse_discord,
             "messenger": chatjson.parse_messenger}[kind]
    try:
        parse(str(src), Drops())
    except DataError:
        pass


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(users=_JSON, day=st.lists(st.dictionaries(
    st.sampled_from(["type", "subtype", "user", "text", "ts", "user_profile"]), _JSON, max_size=6),
    max_size=4) | _JSON)
def test_slack_malformed_gives_an_error_never_a_traceback(tmp_path, users, day):
    from mindprint.data.importers import chatjson

    root = tmp_path / "export"
    (root / "general").mkdir(parents=True, exist_ok=True)
    (root / "users.json").write_text(json.dumps(users))
    (root / "general" / "2024-01-01.json").write_text(json.dumps(day))
    try:
        chatjson.parse_slack(str(root), Drops())
    except DataError:
        pass
