"""Property tests for JSONL loading.

* Random valid records of every format, written with random JSONL dressing (BOM, CRLF, blank
  lines, escaped or raw Unicode), load back to the records they describe, at the right lines.
* A random corruption of one line (truncation, a deleted key, a wrong type, an invalid UTF-8
  byte, an unknown role, a non-object) is refused with a DataError naming exactly that line.
* Arbitrary bytes and arbitrary JSON objects give a LoadResult or a DataError, nothing else.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mindprint.data.jsonl import load_jsonl
from mindprint.data.records import (
    ROLES,
    ChatRecord,
    KTORecord,
    Message,
    PreferenceRecord,
    PromptRecord,
)
from mindprint.data.validate import validate_file
from mindprint.errors import DataError

U, A, S = "user", "assistant", "system"
# Mindprint's own formats; the foreign ones (issue 19) have their tests in test_formats.py
FORMATS = ("chat", "alpaca", "preference", "kto", "prompt")
SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any Unicode (hypothesis leaves out lone surrogates), including \n, \r, U+2028 and U+0085.
text = st.text(min_size=1, max_size=12).filter(lambda s: s.strip())


def as_messages(pairs):
    return tuple(Message(r, c) for r, c in pairs)


def as_json(pairs):
    return [{"role": r, "content": c} for r, c in pairs]


@st.composite
def conversation(draw, last):
    """(role, content) pairs: maybe a system turn, then user/assistant turns ending in ``last``."""
    roles = draw(st.lists(st.sampled_from([U, A]), max_size=4)) + [last]
    if U not in roles:
        roles.insert(0, U)
    if draw(st.booleans()):
        roles = [S, *roles]
    return [(r, draw(text)) for r in roles]


@st.composite
def prompt_value(draw):
    """A prompt as a string or a message list ending with the user; returns (json, messages)."""
    if draw(st.booleans()):
        s = draw(text)
        return s, ((U, s),)
    pairs = draw(conversation(U))
    return as_json(pairs), tuple(pairs)


@st.composite
def completion_value(draw):
    if draw(st.booleans()):
        s = draw(text)
        return s, ((A, s),)
    pairs = [(A, c) for c in draw(st.lists(text, min_size=1, max_size=3))]
    return as_json(pairs), tuple(pairs)


@st.composite
def chat(draw):
    pairs = draw(conversation(A))
    return {"messages": as_json(pairs)}, ChatRecord(as_messages(pairs))


@st.composite
def alpaca(draw):
    instruction, output = draw(text), draw(text)
    obj = {"instruction": instruction, "output": output}
    extra = draw(st.none() | st.just("") | text)
    if extra is not None or draw(st.booleans()):
        obj["input"] = extra
    # user turn = instruction + "\n\n" + input, unless the input is absent or blank
    user = instruction + ("\n\n" + extra if extra and extra.strip() else "")
    return obj, ChatRecord(as_messages([(U, user), (A, output)]))


@st.composite
def preference(draw):
    (pj, pm), (cj, cm), (rj, rm) = draw(prompt_value()), draw(completion_value()), draw(completion_value())
    if [c.strip() for _, c in cm] == [c.strip() for _, c in rm]:
        rj, rm = "different " + cm[0][1], ((A, "different " + cm[0][1]),)
    key = "messages" if isinstance(pj, list) and draw(st.booleans()) else "prompt"
    obj = {key: pj, "chosen": cj, "rejected": rj}
    return obj, PreferenceRecord(as_messages(pm), as_messages(cm), as_messages(rm))


@st.composite
def kto(draw):
    (pj, pm), (cj, cm), label = draw(prompt_value()), draw(completion_value()), draw(st.booleans())
    return {"prompt": pj, "completion": cj, "label": label}, KTORecord(as_messages(pm), as_messages(cm), label)


@st.composite
def prompt(draw):
    pj, pm = draw(prompt_value())
    obj, answer = {"prompt": pj}, draw(st.none() | text)
    if answer is not None:
        obj["answer"] = answer
    if pm[0][0] != S and draw(st.booleans()):
        obj["system"] = draw(text)
        pm = ((S, obj["system"]), *pm)
    return obj, PromptRecord(as_messages(pm), answer)


RECORDS = {"chat": chat, "alpaca": alpaca, "preference": preference, "kto": kto, "prompt": prompt}


@st.composite
def record(draw, fmt):
    obj, rec = draw(RECORDS[fmt]())
    topic = draw(st.none() | text)
    if topic is not None:
        obj["topic"] = topic
        rec = replace(rec, topic=topic)
    if draw(st.booleans()):
        obj["id"] = draw(st.integers())  # unknown keys are ignored
    return obj, rec


@st.composite
def jsonl_file(draw, lines):
    """Encode lines (dicts or bytes) as one JSONL file; return (bytes, line number of each)."""
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    ascii_only = draw(st.booleans())
    out, numbers, n = [], [], 0
    for line in lines:
        for _ in range(draw(st.integers(0, 2))):
            out.append(draw(st.sampled_from([b"", b"  ", b"\t"])))
            n += 1
        out.append(line if isinstance(line, bytes) else json.dumps(line, ensure_ascii=ascii_only).encode())
        n += 1
        numbers.append(n)
    bom = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
    return bom + newline.join(out) + newline * draw(st.integers(0, 2)), numbers


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return tmp_path_factory.mktemp("props") / "data.jsonl"


@SETTINGS
@given(data=st.data(), fmt=st.sampled_from(FORMATS))
def test_valid_records_round_trip(path, data, fmt):
    pairs = data.draw(st.lists(record(fmt), min_size=1, max_size=5))
    content, numbers = data.draw(jsonl_file([obj for obj, _ in pairs]))
    path.write_bytes(content)
    result = load_jsonl(path)  # the format is detected
    assert result.format == fmt
    assert result.records == [rec for _, rec in pairs]
    assert [r.where for r in result.records] == [f"{path}:{n}" for n in numbers]
    assert result.problems == [] and result.n_lines == len(pairs)


# ------------------------------------------------------------------------------- corruptions

REQUIRED = {
    "chat": ["messages"],
    "alpaca": ["instruction", "output"],
    "preference": ["chosen", "rejected"],
    "kto": ["completion", "label"],
    "prompt": ["prompt"],
}
NOT_A_ROLE = st.sampled_from(["bot", "User", "tool", "", " user", None, 1, ["user"]])


def message_lists(obj):
    return [v for v in obj.values() if isinstance(v, list)]


@st.composite
def corrupt(draw, obj: dict, fmt: str) -> bytes:
    """One line that must be refused, made from the valid record ``obj`` of format ``fmt``."""
    obj = json.loads(json.dumps(obj))  # a private deep copy
    keys = REQUIRED[fmt] + [k for k in ("prompt", "messages") if k in obj and fmt in ("preference", "kto")]
    kinds = ["truncate", "delete", "type", "utf8", "non-object"]
    kinds += ["role", "content"] if message_lists(obj) else []
    kind = draw(st.sampled_from(kinds))
    line = json.dumps(obj, ensure_ascii=False).encode()
    if kind == "truncate":
        return line[: draw(st.integers(1, len(line) - 1))]
    if kind == "utf8":
        at = draw(st.integers(0, len(line)))
        return line[:at] + b"\xff" + line[at:]  # 0xff never occurs in UTF-8
    if kind == "non-object":
        return json.dumps(draw(st.sampled_from([[obj], "text", 3, None, True]))).encode()
    if kind == "delete":
        del obj[draw(st.sampled_from(keys))]
    elif kind == "type":
        key = draw(st.sampled_from(keys))
        # values no field accepts there: label takes booleans (and 1/0 since issue 19), the
        # others strings or lists
        wrong = [1.5, None, [], {}] + (["true", 2] if key == "label" else [0, 1, True])
        obj[key] = draw(st.sampled_from(wrong))
    else:
        msg = draw(st.sampled_from([m for lst in message_lists(obj) for m in lst]))
        if kind == "role":
            msg["role"] = draw(NOT_A_ROLE)
        else:
            msg["content"] = draw(st.sampled_from([0, None, [], {}, "", " \n"]))
    return json.dumps(obj, ensure_ascii=draw(st.booleans())).encode()


@SETTINGS
@given(data=st.data(), fmt=st.sampled_from(FORMATS))
def test_corrupted_line_is_refused_with_its_line_number(path, data, fmt):
    objs = [obj for obj, _ in data.draw(st.lists(record(fmt), min_size=1, max_size=4))]
    bad = data.draw(st.integers(0, len(objs) - 1))
    lines = [data.draw(corrupt(o, fmt)) if i == bad else o for i, o in enumerate(objs)]
    content, numbers = data.draw(jsonl_file(lines))
    path.write_bytes(content)
    # One line alone cannot always reveal its format (a preference line without "chosen" is a
    # fine prompt line), so detection is only left to the loader when other lines vote.
    detect = len(objs) > 1 and data.draw(st.booleans())
    with pytest.raises(DataError) as info:
        load_jsonl(path, None if detect else fmt)
    if len(objs) == 1 and not info.value.problems:  # a file that is one JSON array: said once
        assert str(info.value).startswith(f"{path}: holds one JSON array")
        return
    # a file-level hint (a non-UTF-8 byte: issue 19) may follow, naming the file alone
    [problem] = [p for p in info.value.problems if not p.startswith(f"{path}: ")]
    assert problem.startswith(f"{path}:{numbers[bad]}: ")
    # from one bad line in five the message goes on to name data.max_error_rate
    assert str(info.value).startswith(f"{path}: 1 of {len(objs)} lines are invalid")


# ---------------------------------------------------------------------------------- fuzzing

json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
KEYS = ["messages", "role", "content", "prompt", "chosen", "rejected", "completion", "label",
        "instruction", "input", "output", "answer", "system", "topic"]
message_like = st.fixed_dictionaries({}, optional={"role": st.sampled_from(ROLES) | json_value,
                                                   "content": text | json_value})
field_value = json_value | text | st.lists(message_like, max_size=3)
object_like = st.dictionaries(st.sampled_from(KEYS), field_value, max_size=5)


def check_only_data_errors(path, fmt):
    try:
        result = load_jsonl(path, fmt, max_error_rate=1.0)
    except DataError as err:
        problems = err.problems
    else:
        problems = result.problems
    # per-line problems, then file-level hints (an encoding: issue 19) naming the file alone
    assert all(re.match(rf"{re.escape(str(path))}(:\d+)?: ", p) for p in problems)
    try:
        validate_file(path, fmt)
    except DataError:
        pass


@SETTINGS
@given(content=st.binary(max_size=200), fmt=st.none() | st.sampled_from(FORMATS))
def test_arbitrary_bytes_give_only_data_errors(path, content, fmt):
    path.write_bytes(content)
    check_only_data_errors(path, fmt)


@SETTINGS
@given(objs=st.lists(object_like, min_size=1, max_size=4), fmt=st.none() | st.sampled_from(FORMATS))
def test_arbitrary_objects_give_only_data_errors(path, objs, fmt):
    path.write_text("\n".join(json.dumps(o) for o in objs))
    check_only_data_errors(path, fmt)
