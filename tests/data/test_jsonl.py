"""JSONL loading: one test per rule, each with the exact ``file:line: field: what`` it must print."""

from __future__ import annotations

import json

import pytest

from mindprint.data.jsonl import LoadResult, detect_format, load_jsonl, load_many, parse_record
from mindprint.data.records import ChatRecord, KTORecord, Message, PreferenceRecord, PromptRecord
from mindprint.data.validate import cmd_validate, format_report, validate_file
from mindprint.errors import DataError

U, A, S = "user", "assistant", "system"
CHAT = {"messages": [{"role": U, "content": "hi"}, {"role": A, "content": "hello"}]}
ALPACA = {"instruction": "Add.", "input": "1 2", "output": "3"}
PREF = {"prompt": "Q?", "chosen": "good", "rejected": "bad"}
KTO = {"prompt": "Q?", "completion": "A.", "label": True}
PROMPT = {"prompt": "Q?"}
# what an error adds from one bad line in five (issue 19)
HIGH = " ({}: that many usually means another format or a broken export; check that before raising data.max_error_rate)"


def write(tmp_path, *lines, name="d.jsonl"):
    """Write dicts as JSON lines and strings verbatim, one per line."""
    path = tmp_path / name
    path.write_text("".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines))
    return path


def problems(path, fmt=None, **kw):
    with pytest.raises(DataError) as info:
        load_jsonl(path, fmt, **kw)
    return info.value.problems


def one_problem(tmp_path, obj, fmt):
    """The single problem of a one-line file of ``fmt``, without its ``file:1: `` prefix."""
    path = write(tmp_path, obj if isinstance(obj, str) else json.dumps(obj))
    [problem] = problems(path, fmt)
    assert problem.startswith(f"{path}:1: ")
    return problem.removeprefix(f"{path}:1: ")


def msgs(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


# ---------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    "obj, fmt",
    [
        (CHAT, "chat"),
        (ALPACA, "alpaca"),
        (PREF, "preference"),
        (KTO, "kto"),
        (PROMPT, "prompt"),
        # conversational preference data carries its prompt as "messages": still preference
        ({"messages": msgs((U, "q")), "chosen": "a", "rejected": "b"}, "preference"),
        ({"instruction": "x"}, None),
        ({"text": "x"}, "text"),  # TRL language-modelling data since issue 19
        ({}, None),
    ],
)
def test_detect_format(obj, fmt):
    assert detect_format(obj) == fmt


def test_format_is_detected_from_the_file(tmp_path):
    for obj, fmt in [(CHAT, "chat"), (ALPACA, "alpaca"), (PREF, "preference"), (KTO, "kto"), (PROMPT, "prompt")]:
        assert load_jsonl(write(tmp_path, obj, obj)).format == fmt


def test_an_undetectable_file_names_the_keys_it_wanted(tmp_path):
    path = write(tmp_path, {"body": "hi"})
    [p] = problems(path)
    assert p.startswith(f"{path}:1: cannot tell the format: expected messages (chat),")


def test_a_line_of_another_format_is_named(tmp_path):
    path = write(tmp_path, CHAT, CHAT, ALPACA)
    assert problems(path) == [
        f"{path}:3: messages: missing (this line looks like alpaca data; the file is chat data)"
    ]


def test_a_broken_first_line_does_not_decide_the_format(tmp_path):
    # Line 1 lost "rejected", so alone it looks like a prompt record; the file is preference data.
    path = write(tmp_path, {"prompt": "q", "chosen": "a"}, PREF)
    assert problems(path) == [
        f"{path}:1: rejected: missing (this line looks like prompt data; the file is preference data)"
    ]


def test_explicit_format_ignores_other_keys(tmp_path):
    # Prompts for RL taken from a preference file: the user says --format prompt.
    result = load_jsonl(write(tmp_path, PREF), "prompt")
    assert result.records == [PromptRecord((Message(U, "Q?"),))]


def test_unknown_format_name(tmp_path):
    with pytest.raises(DataError, match="unknown format 'sft'; expected one of chat, alpaca"):
        load_jsonl(write(tmp_path, CHAT), "sft")


def test_expect_rejects_a_file_of_another_format(tmp_path):
    path = write(tmp_path, PREF)
    with pytest.raises(DataError) as info:
        load_jsonl(path, expect=("chat", "alpaca"))
    assert str(info.value) == f"{path}: is 'preference' data but this needs chat or alpaca"
    assert load_jsonl(path, expect=("preference",)).format == "preference"


# --------------------------------------------------------------------------------- chat


def test_chat_record(tmp_path):
    obj = {"messages": msgs((S, "be brief"), (U, "hi"), (A, "hello"), (U, "and?"), (A, "bye")), "topic": "t"}
    path = write(tmp_path, obj)
    [rec] = load_jsonl(path).records
    assert rec == ChatRecord(
        (Message(S, "be brief"), Message(U, "hi"), Message(A, "hello"), Message(U, "and?"), Message(A, "bye")),
        topic="t",
    )
    assert rec.where == f"{path}:1"


def test_chat_ignores_system_prompt(tmp_path):
    [rec] = load_jsonl(write(tmp_path, CHAT), system_prompt="sys").records
    assert [m.role for m in rec.messages] == [U, A]


@pytest.mark.parametrize(
    "obj, expected",
    [
        ({"topic": "x"}, "messages: missing"),
        ({"messages": "hi"}, "messages: must be a list of messages, got string"),
        ({"messages": []}, "messages: must not be empty"),
        ({"messages": ["hi"]}, "messages[0]: must be an object with role and content, got string"),
        ({"messages": msgs((U, "a"), (A, "b"), ("bot", "c"))},
         'messages[2].role: unknown role "bot"; expected one of system, user, assistant, tool'),
        ({"messages": msgs((U, "a"), ("User", "b"))},
         'messages[1].role: unknown role "User"; expected one of system, user, assistant, tool'),
        ({"messages": [{"role": 1, "content": "a"}]},
         "messages[0].role: unknown role 1; expected one of system, user, assistant, tool"),
        ({"messages": [{"content": "a"}]}, "messages[0].role: missing"),
        ({"messages": [{"role": U}]}, "messages[0].content: missing"),
        ({"messages": [{"role": U, "content": 5}]}, "messages[0].content: must be a string, got number"),
        ({"messages": [{"role": U, "content": None}]}, "messages[0].content: must be a string, got null"),
        ({"messages": msgs((U, "a"), (A, " \n\t"))}, "messages[1].content: must not be empty"),
        ({"messages": msgs((U, "a"), (S, "s"), (A, "b"))},
         "messages[1].role: a system message may only come first"),
        ({"messages": msgs((S, "s"), (A, "b"))}, "messages: needs at least one user turn"),
        ({"messages": msgs((U, "a"), (A, "b"), (U, "c"))},
         'messages[2].role: the last turn must be "assistant" (it is trained on), got "user"'),
        ({**CHAT, "topic": ""}, "topic: must not be empty"),
        ({**CHAT, "topic": 3}, "topic: must be a string, got number"),
    ],
)
def test_chat_problems(tmp_path, obj, expected):
    assert one_problem(tmp_path, obj, "chat") == expected


def test_unpaired_surrogate_escape_is_a_problem(tmp_path):
    # "\ud800" is legal JSON but not encodable text; a tokenizer would crash on it much later.
    line = '{"messages": [{"role": "user", "content": "\\ud800"}, {"role": "assistant", "content": "b"}]}'
    assert one_problem(tmp_path, line, "chat") == (
        "messages[0].content: contains an unpaired surrogate escape (\\ud800-\\udfff)"
    )


def test_extra_keys_are_carried_and_unknown_message_keys_are_counted(tmp_path):
    # "id" is the user's own key (the data tools carry it along); a message key no template
    # reads is not dropped silently but counted once per kind (issue 19)
    obj = {**CHAT, "id": 7, "messages": [{**m, "refusal": None} for m in CHAT["messages"]]}
    path = write(tmp_path, obj, obj)
    result = load_jsonl(path)
    assert result.records == load_jsonl(write(tmp_path, CHAT, CHAT, name="b")).records
    assert result.warnings == [f"{path}:1: messages[].refusal: not a message field; not used (2 records)"]


# ------------------------------------------------------------------------------- alpaca


@pytest.mark.parametrize(
    "obj, system_prompt, expected",
    [
        # user = instruction + "\n\n" + input when there is an input
        (ALPACA, None, [(U, "Add.\n\n1 2"), (A, "3")]),
        ({"instruction": "Hi.", "output": "Yo"}, None, [(U, "Hi."), (A, "Yo")]),
        ({"instruction": "Hi.", "input": "", "output": "Yo"}, None, [(U, "Hi."), (A, "Yo")]),
        ({"instruction": "Hi.", "input": None, "output": "Yo"}, None, [(U, "Hi."), (A, "Yo")]),
        ({"instruction": "Hi.", "output": "Yo"}, "Be kind.", [(S, "Be kind."), (U, "Hi."), (A, "Yo")]),
    ],
)
def test_alpaca_becomes_chat(tmp_path, obj, system_prompt, expected):
    result = load_jsonl(write(tmp_path, obj), system_prompt=system_prompt)
    assert result.format == "alpaca"
    assert result.records == [ChatRecord(tuple(Message(r, c) for r, c in expected))]


@pytest.mark.parametrize(
    "obj, expected",
    [
        ({"output": "x"}, "instruction: missing"),
        ({"instruction": "x"}, "output: missing"),
        ({"instruction": " ", "output": "x"}, "instruction: must not be empty"),
        ({"instruction": "x", "output": ""}, "output: must not be empty"),
        ({"instruction": "x", "input": 2, "output": "y"}, "input: must be a string, got number"),
        ({"instruction": ["x"], "output": "y"}, "instruction: must be a string, got array"),
    ],
)
def test_alpaca_problems(tmp_path, obj, expected):
    assert one_problem(tmp_path, obj, "alpaca") == expected


# --------------------------------------------------------------------------- preference


def test_preference_strings_become_turns(tmp_path):
    [rec] = load_jsonl(write(tmp_path, {**PREF, "topic": "t"})).records
    assert rec == PreferenceRecord((Message(U, "Q?"),), (Message(A, "good"),), (Message(A, "bad"),), topic="t")


def test_preference_message_lists(tmp_path):
    obj = {
        "messages": msgs((S, "s"), (U, "q1"), (A, "a1"), (U, "q2")),
        "chosen": msgs((A, "good")),
        "rejected": msgs((A, "bad"), (A, "worse")),
    }
    [rec] = load_jsonl(write(tmp_path, obj)).records
    assert rec.prompt == (Message(S, "s"), Message(U, "q1"), Message(A, "a1"), Message(U, "q2"))
    assert rec.chosen == (Message(A, "good"),)
    assert rec.rejected == (Message(A, "bad"), Message(A, "worse"))
    # the same prompt under "prompt" gives the same record
    as_prompt = {"prompt" if k == "messages" else k: v for k, v in obj.items()}
    [rec2] = load_jsonl(write(tmp_path, as_prompt, name="b")).records
    assert rec2 == rec


@pytest.mark.parametrize(
    "obj, expected",
    [
        ({"chosen": "a", "rejected": "b"}, "prompt: missing"),
        ({**PREF, "messages": msgs((U, "q"))}, "give prompt or messages, not both"),
        ({**PREF, "prompt": 3}, "prompt: must be a string or a list of messages, got number"),
        ({**PREF, "prompt": ""}, "prompt: must not be empty"),
        ({**PREF, "prompt": msgs((U, "q"), (A, "a"))},
         'prompt[1].role: a prompt must end with a user turn, got "assistant"'),
        ({"messages": msgs((U, "q"), (A, "a")), "chosen": "x", "rejected": "y"},
         'messages[1].role: a prompt must end with a user turn, got "assistant"'),
        ({**PREF, "chosen": ""}, "chosen: must not be empty"),
        ({**PREF, "chosen": []}, "chosen: must not be empty"),
        ({**PREF, "rejected": {"text": "b"}},
         "rejected: must be a string or a list of assistant messages, got object"),
        ({**PREF, "chosen": msgs((U, "a"))}, 'chosen[0].role: must be "assistant", got "user"'),
        ({**PREF, "rejected": "good"}, "chosen equals rejected"),
        ({**PREF, "rejected": "good \n"}, "chosen equals rejected"),
        ({**PREF, "chosen": msgs((A, "x")), "rejected": "x"}, "chosen equals rejected"),
    ],
)
def test_preference_problems(tmp_path, obj, expected):
    assert one_problem(tmp_path, obj, "preference") == expected


# ---------------------------------------------------------------------------------- kto


@pytest.mark.parametrize("label", [True, False])
def test_kto_record(tmp_path, label):
    obj = {"prompt": msgs((U, "q")), "completion": msgs((A, "a")), "label": label}
    [rec] = load_jsonl(write(tmp_path, obj)).records
    assert rec == KTORecord((Message(U, "q"),), (Message(A, "a"),), label)


@pytest.mark.parametrize(
    "obj, expected",
    [
        # 1/0 are accepted since issue 19 (spreadsheet and pandas exports); other values not
        ({**KTO, "label": 2}, "label: must be true or false (or 1 or 0), got 2"),
        ({**KTO, "label": 0.5}, "label: must be true or false (or 1 or 0), got 0.5"),
        ({**KTO, "label": "true"}, 'label: must be true or false (or 1 or 0), got "true"'),
        ({**KTO, "label": None}, "label: must be true or false (or 1 or 0), got null"),
        # an explicit format still names the format the line resembles
        ({"prompt": "q", "label": True},
         "completion: missing (this line looks like prompt data; the file is kto data)"),
        ({**KTO, "completion": msgs((S, "a"))}, 'completion[0].role: must be "assistant", got "system"'),
        ({**KTO, "prompt": msgs((A, "a"))}, 'prompt[0].role: a prompt must end with a user turn, got "assistant"'),
    ],
)
def test_kto_problems(tmp_path, obj, expected):
    assert one_problem(tmp_path, obj, "kto") == expected


# ------------------------------------------------------------------------------- prompt


@pytest.mark.parametrize(
    "obj, system_prompt, prompt, answer",
    [
        (PROMPT, None, [(U, "Q?")], None),
        ({"prompt": "Q?", "answer": "42"}, None, [(U, "Q?")], "42"),
        ({"prompt": "Q?", "system": "Be terse."}, None, [(S, "Be terse."), (U, "Q?")], None),
        (PROMPT, "Cfg.", [(S, "Cfg."), (U, "Q?")], None),
        # the record's own system message wins over the configured one
        ({"prompt": "Q?", "system": "Own."}, "Cfg.", [(S, "Own."), (U, "Q?")], None),
        ({"prompt": msgs((S, "Own."), (U, "Q?"))}, "Cfg.", [(S, "Own."), (U, "Q?")], None),
        ({"prompt": msgs((U, "a"), (A, "b"), (U, "c"))}, None, [(U, "a"), (A, "b"), (U, "c")], None),
    ],
)
def test_prompt_record(tmp_path, obj, system_prompt, prompt, answer):
    [rec] = load_jsonl(write(tmp_path, obj), system_prompt=system_prompt).records
    assert rec == PromptRecord(tuple(Message(r, c) for r, c in prompt), answer)


@pytest.mark.parametrize(
    "obj, expected",
    [
        ({"prompt": None}, "prompt: must be a string or a list of messages, got null"),
        ({"prompt": "q", "answer": 42}, "answer: must be a string, got number"),
        ({"prompt": "q", "answer": ""}, "answer: must not be empty"),
        ({"prompt": "q", "system": ""}, "system: must not be empty"),
        ({"prompt": msgs((S, "s"), (U, "q")), "system": "t"},
         "system: the prompt already starts with a system message"),
        ({"prompt": msgs((U, "q"), (A, "a"))}, 'prompt[1].role: a prompt must end with a user turn, got "assistant"'),
    ],
)
def test_prompt_problems(tmp_path, obj, expected):
    assert one_problem(tmp_path, obj, "prompt") == expected


def test_parse_record_directly():
    rec = parse_record(PREF, "preference", "x:1")
    assert rec.where == "x:1" and rec.chosen == (Message(A, "good"),)
    with pytest.raises(ValueError, match="chosen equals rejected"):
        parse_record({**PREF, "rejected": "good"}, "preference", "x:1")
    with pytest.raises(ValueError, match="unknown format"):
        parse_record(PREF, "dpo", "x:1")


# ---------------------------------------------------------------------------- the file


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: no such file$"):
        load_jsonl(tmp_path / "nope.jsonl")


def test_directory(tmp_path):
    with pytest.raises(DataError, match="is a directory, not a file"):
        load_jsonl(tmp_path)


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", b"\xef\xbb\xbf", b"\r\n\t\r\n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        load_jsonl(path)
    assert str(info.value) == f"{path}: file is empty"


def test_utf16_file_is_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(json.dumps(CHAT).encode("utf-16"))
    with pytest.raises(DataError, match="file is UTF-16; save it as UTF-8"):
        load_jsonl(path)


def test_bom_crlf_and_blank_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    body = "\r\n".join([json.dumps(CHAT), "", "   ", json.dumps(CHAT)]) + "\r\n\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    result = load_jsonl(path)
    assert result.n_lines == 2 and [r.where for r in result.records] == [f"{path}:1", f"{path}:4"]


def test_line_numbers_count_blank_lines(tmp_path):
    path = write(tmp_path, "", CHAT, "", "", {"messages": 1})
    assert problems(path) == [f"{path}:5: messages: must be a list of messages, got number"]


def test_unicode_line_separators_stay_inside_a_record(tmp_path):
    # U+2028 and U+0085 are line breaks to str.splitlines but not to JSONL.
    obj = {"messages": msgs((U, "a\u2028b\x85c"), (A, "d"))}
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(obj, ensure_ascii=False) + "\n", encoding="utf-8")
    [rec] = load_jsonl(path).records
    assert rec.messages[0].content == "a\u2028b\x85c"


def test_invalid_utf8_names_line_and_offset_and_other_lines_are_checked(tmp_path):
    path = tmp_path / "d.jsonl"
    good = json.dumps(CHAT).encode()
    path.write_bytes(b"\n".join([good, b'{"messages": "\xff"}', good, b'{"x": 1}']))
    # b'{"messages": "' is 14 bytes, so the bad byte sits at offset 14 of line 2
    assert problems(path) == [
        f"{path}:2: invalid UTF-8: byte 0xff at offset 14",
        f"{path}:4: messages: missing",
        # the file-level hint comes last, once (issue 19)
        f"{path}: 1 line(s) are not UTF-8 but read as cp1252 (Windows-1252); save the file as UTF-8",
    ]


@pytest.mark.parametrize(
    "line, expected",
    [
        ('{"messages": [}', "invalid JSON: Expecting value (column 15)"),
        ('{"messages": ', "invalid JSON: Expecting value (column 14)"),
        ("{'messages': 1}", "invalid JSON: Expecting property name enclosed in double quotes (column 2)"),
        ('{"a": 1} x', "invalid JSON: Extra data (column 10)"),
        ("[1, 2]", "expected a JSON object, got array"),
        ('"text"', "expected a JSON object, got string"),
        ("null", "expected a JSON object, got null"),
        ("3", "expected a JSON object, got number"),
    ],
)
def test_line_level_problems(tmp_path, line, expected):
    path = write(tmp_path, CHAT, line)
    assert problems(path) == [f"{path}:2: {expected}"]


def test_every_bad_line_is_reported_in_order(tmp_path):
    path = write(tmp_path, "{", CHAT, {"messages": []}, "[]", CHAT)
    with pytest.raises(DataError) as info:
        load_jsonl(path)
    # from one bad line in five, the error names data.max_error_rate (issue 19)
    assert str(info.value).startswith(f"{path}: 3 of 5 lines are invalid (60%: that many usually means another format or a broken "
                                    "export; check that before raising data.max_error_rate)")
    assert [p.split(": ")[0] for p in info.value.problems] == [f"{path}:1", f"{path}:3", f"{path}:4"]


# ----------------------------------------------------------------------- max_error_rate


def test_max_error_rate(tmp_path):
    # 1 bad line of 4 non-blank lines (blank lines do not count): rate 1/4 = 0.25
    path = write(tmp_path, CHAT, "", CHAT, "oops", CHAT)
    with pytest.raises(DataError) as info:
        load_jsonl(path)  # default 0: any bad line fails
    assert str(info.value).startswith(f"{path}: 1 of 4 lines are invalid (25%: ")
    assert "data.max_error_rate" in str(info.value)
    with pytest.raises(DataError):
        load_jsonl(path, max_error_rate=0.2)
    result = load_jsonl(path, max_error_rate=0.25)  # the limit itself is allowed
    assert len(result.records) == 3 and result.n_lines == 4
    assert result.problems == [f"{path}:4: invalid JSON: Expecting value (column 1)"]


def test_a_file_with_no_valid_record_always_fails(tmp_path):
    path = write(tmp_path, "oops")
    with pytest.raises(DataError, match="1 of 1 lines are invalid"):
        load_jsonl(path, max_error_rate=1.0)


def test_max_error_rate_out_of_range(tmp_path):
    with pytest.raises(ValueError):
        load_jsonl(write(tmp_path, CHAT), max_error_rate=1.5)


# ---------------------------------------------------------------------------- load_many


def test_load_many_concatenates_chat_and_alpaca(tmp_path):
    a = write(tmp_path, CHAT, name="a.jsonl")
    b = write(tmp_path, ALPACA, ALPACA, name="b.jsonl")
    result = load_many([a, b], expect=("chat", "alpaca"))
    assert isinstance(result, LoadResult)
    assert result.format == "chat" and result.n_lines == 3
    assert [r.where for r in result.records] == [f"{a}:1", f"{b}:1", f"{b}:2"]


def test_load_many_refuses_mixed_record_types(tmp_path):
    a = write(tmp_path, CHAT, name="a.jsonl")
    b = write(tmp_path, PREF, name="b.jsonl")
    with pytest.raises(DataError) as info:
        load_many([a, b])
    assert str(info.value) == f"{b}: is 'preference' data but {a} is 'chat' data"


def test_load_many_needs_a_file():
    with pytest.raises(DataError, match="no data files given"):
        load_many([])


# ----------------------------------------------------------------------------- validate


def test_validate_counts_topics_in_first_seen_order(tmp_path):
    path = write(tmp_path, {**CHAT, "topic": "knots"}, {**CHAT, "topic": "cycles"}, {**CHAT, "topic": "knots"}, CHAT)
    report = validate_file(path)
    assert (report.format, report.total, report.valid, report.invalid) == ("chat", 4, 4, 0)
    assert report.topics == {"knots": 2, "cycles": 1} and report.no_topic == 1
    assert format_report(report) == f"ok: 4 records (chat) in {path}; topics: knots 2, cycles 1, no topic 1"


def test_validate_without_topics(tmp_path):
    path = write(tmp_path, KTO)
    assert format_report(validate_file(path)) == f"ok: 1 records (kto) in {path}"


def test_validate_reports_every_problem(tmp_path):
    path = write(tmp_path, CHAT, "{", {"messages": []})
    report = validate_file(path)
    assert not report.ok and (report.valid, report.invalid) == (1, 2)
    assert format_report(report).splitlines() == [
        f"{path}:2: invalid JSON: Expecting property name enclosed in double quotes (column 2)",
        f"{path}:3: messages: must not be empty",
        f"{path}: 2 of 3 lines are invalid" + HIGH.format("67%"),
    ]


def test_cmd_validate_exit_codes(tmp_path, capsys):
    good = write(tmp_path, CHAT, name="good.jsonl")
    bad = write(tmp_path, CHAT, {"messages": 1}, name="bad.jsonl")
    assert cmd_validate([str(good)], None) == 0
    assert capsys.readouterr().out == f"ok: 1 records (chat) in {good}\n"
    assert cmd_validate([str(good), str(bad)], None) == 2
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == [f"{bad}:2: messages: must be a list of messages, got number", f"{bad}: 1 of 2 lines are invalid" + HIGH.format("50%")]
    assert cmd_validate([str(tmp_path / "none.jsonl")], None) == 2
    assert capsys.readouterr().out == f"{tmp_path / 'none.jsonl'}: no such file\n"
    assert cmd_validate([str(good)], "preference") == 2
    assert capsys.readouterr().out.splitlines()[0] == (
        f'{good}:1: messages[1].role: a prompt must end with a user turn, got "assistant" '
        "(this line looks like chat data; the file is preference data)"
    )
