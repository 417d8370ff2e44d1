"""Foreign data formats and file kinds (issue 19): each maps onto the existing records, nothing a
user wrote is dropped without an error or a counted warning, and the loss sees what each source
format's own trainer trains on."""

from __future__ import annotations

import copy
import csv
import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TOOL_TEMPLATE, write_jsonl
from mindprint.data.columns import parse_columns
from mindprint.data.formats import DETECT, FORMATS, READERS
from mindprint.data.jsonl import load_jsonl, load_many
from mindprint.data.records import ChatRecord, KTORecord, Message, PreferenceRecord, TextRecord
from mindprint.data.render import render_chat_records, render_sft_record, render_sft_records
from mindprint.data.validate import cmd_validate, validate_file
from mindprint.errors import DataError

U, A, S = "user", "assistant", "system"


def msgs(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


def one(tmp_path, obj, name="d.jsonl", **kw):
    """The single record of a one-line file (and the load result)."""
    res = load_jsonl(write_jsonl(tmp_path / name, [obj]), **kw)
    [rec] = res.records
    return rec, res


def problem(tmp_path, obj, fmt=None, name="d.jsonl"):
    path = write_jsonl(tmp_path / name, [obj])
    with pytest.raises(DataError) as info:
        load_jsonl(path, fmt)
    [p, *_hints] = info.value.problems
    assert p.startswith(f"{path}:1: ")
    return p.removeprefix(f"{path}:1: ")


def trained_text(tok, r):
    return tok.decode([t for t, m in zip(r.input_ids, r.loss_mask) if m])


def test_tables_agree():
    assert set(FORMATS) == {name for name, _ in DETECT} == set(READERS)
    from typing import get_args

    from mindprint.config import DataConfig
    assert set(get_args(DataConfig.model_fields["format"].annotation)) == {"auto", *FORMATS}


# ------------------------------------------------------------------------------------- TRL


def test_text_trains_on_every_token_and_eos(tmp_path, tokenizer):
    essay = ("Compost is slow patience. I turn the heap on Sundays, add the coffee grounds, and "
             "leave the rest to the worms.")
    rec, res = one(tmp_path, {"text": essay, "topic": "garden"})
    assert res.format == "text" and rec == TextRecord(essay, "garden")
    r = render_sft_record(tokenizer, rec)
    ids = tokenizer(essay)["input_ids"]
    assert r.input_ids == ids + [tokenizer.eos_token_id]  # no chat template
    assert r.loss_mask == [0] + [1] * len(ids)  # every token the model can predict, EOS included


def test_prompt_completion_trains_the_completion_only(tmp_path, tokenizer):
    obj = {"prompt": "How often should I water basil?",
           "completion": "When the top inch is dry. Basil sulks in soggy soil."}
    rec, res = one(tmp_path, obj)
    # before issue 19 this line was read as an RL prompt and the completion was ignored
    assert res.format == "completion"
    assert rec.messages == (Message(U, obj["prompt"]), Message(A, obj["completion"]))
    [r], _ = render_chat_records(tokenizer, [rec], 256)
    assert trained_text(tokenizer, r) == obj["completion"] + "<|im_end|>"


def test_conversational_prompt_completion_keeps_earlier_answers_as_context(tmp_path, tokenizer):
    obj = {"prompt": [{"role": S, "content": "You coach chess juniors."},
                      {"role": U, "content": "I keep losing to the London."},
                      {"role": A, "content": "Play ...c5 early."},
                      {"role": U, "content": "And if White takes?"}],
           "completion": [{"role": A, "content": "Recapture with the queen and develop fast."}]}
    rec, _ = one(tmp_path, obj)
    assert [m.weight for m in rec.messages] == [None, None, 0, None, None]
    [r], _ = render_sft_records(tokenizer, [rec], 512)
    assert trained_text(tokenizer, r) == "Recapture with the queen and develop fast.<|im_end|>"


def test_preference_with_implicit_prompt(tmp_path):
    shared = msgs((S, "You are a night-shift nurse."), (U, "Can I take ibuprofen with coffee?"))
    obj = {"chosen": shared + msgs((A, "Yes, with food; coffee is fine.")),
           "rejected": shared + msgs((A, "Never mix them."))}
    rec, res = one(tmp_path, obj)
    assert res.format == "preference"
    assert rec == PreferenceRecord(tuple(Message(m["role"], m["content"]) for m in shared),
                                   (Message(A, "Yes, with food; coffee is fine."),),
                                   (Message(A, "Never mix them."),))


def test_implicit_prompt_needs_a_shared_user_turn(tmp_path):
    obj = {"chosen": msgs((U, "a?"), (A, "x")), "rejected": msgs((U, "b?"), (A, "y"))}
    assert problem(tmp_path, obj).startswith("chosen: chosen and rejected share 0 leading turn(s)")


@pytest.mark.parametrize("label, expected", [(True, True), (1, True), (0, False), (False, False)])
def test_unpaired_preference_labels(tmp_path, label, expected):
    rec, res = one(tmp_path, {"prompt": "Is mulch worth it?", "completion": "Always.", "label": label})
    assert res.format == "kto" and rec.label is expected


def test_unpaired_label_other_values_fail(tmp_path):
    obj = {"prompt": "q", "completion": "a", "label": "yes"}
    assert problem(tmp_path, obj) == 'label: must be true or false (or 1 or 0), got "yes"'


# ------------------------------------------------------------------------ OpenAI weights


def test_weight_zero_is_context_and_weight_one_is_trained(tmp_path, tokenizer):
    obj = {"messages": [{"role": S, "content": "Marv is a sarcastic bot."},
                        {"role": U, "content": "Capital of France?"},
                        {"role": A, "content": "Paris, as if you didn't know.", "weight": 0},
                        {"role": U, "content": "Who wrote Romeo and Juliet?"},
                        {"role": A, "content": "Some guy named Shakespeare.", "weight": 1}]}
    rec, _ = one(tmp_path, obj)
    [r], _ = render_sft_records(tokenizer, [rec], 512)
    assert trained_text(tokenizer, r) == "Some guy named Shakespeare.<|im_end|>"


@pytest.mark.parametrize("messages, expected", [
    ([{"role": U, "content": "q"}, {"role": A, "content": "a", "weight": 0}],
     "messages: every assistant turn has weight 0: nothing to learn"),
    ([{"role": U, "content": "q", "weight": 1}, {"role": A, "content": "a"}],
     "messages[0].weight: only assistant turns carry a weight (this is user)"),
    ([{"role": U, "content": "q"}, {"role": A, "content": "a", "weight": 0.5}],
     "messages[1].weight: must be 0 (context only) or 1 (trained), got 0.5"),
    ([{"role": U, "content": "q"}, {"role": A, "content": "a", "weight": True}],
     "messages[1].weight: must be 0 (context only) or 1 (trained), got true"),
])
def test_bad_weights(tmp_path, messages, expected):
    assert problem(tmp_path, {"messages": messages}) == expected


# ---------------------------------------------------------------------------------- tools

WEATHER = {"type": "function", "function": {"name": "get_weather",
                                            "parameters": {"type": "object",
                                                           "properties": {"city": {"type": "string"}}}}}
TOOL_CHAT = {
    "tools": [WEATHER],
    "messages": [
        {"role": U, "content": "Do I need a coat in Bergen?"},
        {"role": A, "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": {"city": "Bergen"}}}]},
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "7C, rain"},
        {"role": A, "content": "Yes: 7 degrees and rain. Bring the raincoat."}]}


@pytest.fixture(scope="module")
def tool_tokenizer(tokenizer):
    t = copy.deepcopy(tokenizer)
    t.chat_template = TOOL_TEMPLATE
    return t


def test_tool_calls_render_through_a_template_that_supports_them(tmp_path, tool_tokenizer):
    rec, _ = one(tmp_path, TOOL_CHAT)
    assert rec.tools == (WEATHER,) and rec.messages[2].tool_call_id == "call_1"
    [r], _ = render_sft_records(tool_tokenizer, [rec], 512)
    text = tool_tokenizer.decode(r.input_ids)
    assert text.startswith('<|im_start|>system\nTools: [{"type": "function"')
    assert trained_text(tool_tokenizer, r) == ('<call>get_weather {"city": "Bergen"}</call><|im_end|>'
                                               "Yes: 7 degrees and rain. Bring the raincoat.<|im_end|>")


def test_tool_calls_with_a_template_without_tools_name_the_record(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "tools.jsonl", [TOOL_CHAT])
    records = load_jsonl(path).records
    with pytest.raises(DataError, match=rf"^{path}:1: uses tools, tool_calls, tool but the "
                                        "model's chat template does not render tool use"):
        render_sft_records(tokenizer, records, 512)


def test_a_tool_message_must_answer_a_call(tmp_path):
    obj = {"messages": msgs((U, "q"), ("tool", "42"), (A, "a"))}
    assert problem(tmp_path, obj).startswith("messages[1].role: a tool message must follow")


# ---------------------------------------------------------------------------- LLaMA-Factory


def test_alpaca_with_system_and_history_trains_history_answers(tmp_path, tokenizer):
    obj = {"instruction": "And for tomatoes?", "input": "", "output": "Deep and rarely.",
           "system": "You are a market gardener.",
           "history": [["How do I water lettuce?", "Little and often."]]}
    rec, res = one(tmp_path, obj, system_prompt="ignored: the record has its own")
    assert res.format == "alpaca"
    assert [(m.role, m.content) for m in rec.messages] == [
        (S, "You are a market gardener."), (U, "How do I water lettuce?"),
        (A, "Little and often."), (U, "And for tomatoes?"), (A, "Deep and rarely.")]
    [r], _ = render_sft_records(tokenizer, [rec], 512)
    # LLaMA-Factory's default (mask_history=False): every answer is trained
    assert trained_text(tokenizer, r) == "Little and often.<|im_end|>Deep and rarely.<|im_end|>"


def test_sharegpt_with_every_tag(tmp_path):
    obj = {"system": "You run a bike repair shop.",
           "tools": json.dumps([{"name": "parts_lookup", "parameters": {}}]),
           "conversations": [
               {"from": "human", "value": "Do you have a 10-speed chain?"},
               {"from": "function_call", "value": json.dumps({"name": "parts_lookup",
                                                              "arguments": {"part": "chain 10s"}})},
               {"from": "observation", "value": "{\"in_stock\": 3}"},
               {"from": "gpt", "value": "Three in stock. Want one set aside?"},
               {"from": "user", "value": "Yes please."},
               {"from": "assistant", "value": "Done, it's under your name."}]}
    rec, res = one(tmp_path, obj)
    assert res.format == "sharegpt" and res.warnings == []
    assert [m.role for m in rec.messages] == [S, U, A, "tool", A, U, A]
    assert rec.messages[2].tool_calls == ({"type": "function", "function": {
        "name": "parts_lookup", "arguments": {"part": "chain 10s"}}},)
    assert rec.tools == ({"name": "parts_lookup", "parameters": {}},)


@pytest.mark.parametrize("turns, expected", [
    ([{"from": "human", "value": "hi"}, {"from": "robot", "value": "beep"}],
     'conversations[1].from: unknown tag "robot"; expected one of human, user, gpt, assistant, '
     "system, observation, tool, function_call"),
    ([{"from": "human", "value": "hi"}, {"from": "gpt", "value": ""}],
     "conversations[1].value: must not be empty"),
    ([{"from": "human", "value": "hi"}, {"from": "gpt"}], "conversations[1].value: missing"),
    ([{"from": "gpt", "value": "hi"}, {"from": "system", "value": "late"}],
     "conversations[1].from: a system message may only come first"),
])
def test_sharegpt_problems_name_the_fields_as_written(tmp_path, turns, expected):
    assert problem(tmp_path, {"conversations": turns}) == expected


def test_sharegpt_preference_alpaca_preference_and_kto_tags(tmp_path):
    sg = {"conversations": [{"from": "human", "value": "Best first telescope?"}],
          "chosen": {"from": "gpt", "value": "A 6-inch Dobsonian."},
          "rejected": {"from": "gpt", "value": "The most expensive one."}}
    rec, res = one(tmp_path, sg, name="a.jsonl")
    assert res.format == "sharegpt_preference"
    assert (rec.prompt[-1].content, rec.chosen[0].content) == ("Best first telescope?", "A 6-inch Dobsonian.")
    alp = {"instruction": "Name a hardy shrub.", "input": "zone 4", "chosen": "Lilac.",
           "rejected": "Bougainvillea."}
    rec, res = one(tmp_path, alp, name="b.jsonl")
    assert res.format == "alpaca_preference" and rec.prompt == (Message(U, "Name a hardy shrub.\n\nzone 4"),)
    kto = {"conversations": [{"from": "human", "value": "Fix my flat?"},
                             {"from": "gpt", "value": "Swap the tube."}], "kto_tag": False}
    rec, res = one(tmp_path, kto, name="c.jsonl")
    assert res.format == "sharegpt_kto"
    assert rec == KTORecord((Message(U, "Fix my flat?"),), (Message(A, "Swap the tube."),), False)
    chat_kto = {"messages": msgs((U, "Tea or coffee at night?"), (A, "Chamomile tea.")), "label": 1}
    rec, res = one(tmp_path, chat_kto, name="d.jsonl")
    assert res.format == "chat_kto" and rec.label is True


def test_openai_preference(tmp_path):
    obj = {"input": {"messages": msgs((U, "Summarise the match in one line."))},
           "preferred_output": msgs((A, "Late winner, deserved.")),
           "non_preferred_output": msgs((A, "A football match happened."))}
    rec, res = one(tmp_path, obj)
    assert res.format == "openai_preference"
    assert rec.chosen == (Message(A, "Late winner, deserved."),)
    obj["input"]["tools"] = [WEATHER]     # tools travel with the pair (test_preference_tools)
    assert one(tmp_path, obj, name="t.jsonl")[0].tools == (WEATHER,)


# --------------------------------------------------------------------- nothing dropped


def test_keys_of_other_formats_and_unknown_message_keys_are_counted(tmp_path):
    rows = [{"messages": msgs((U, f"q{i}"), (A, f"a{i}")), "answer": "x", "id": i} for i in range(3)]
    rows[1]["messages"][1]["refusal"] = None
    res = load_jsonl(write_jsonl(tmp_path / "d.jsonl", rows))
    assert res.warnings == [f"{tmp_path / 'd.jsonl'}:1: answer: not used by chat data (3 records)",
                            f"{tmp_path / 'd.jsonl'}:2: messages[].refusal: not a message field; not used (1 record)"]


# ------------------------------------------------------------------------------ file kinds


def test_json_array_reports_each_element_at_its_line(tmp_path):
    rows = [{"messages": msgs((U, "What's a good first hike?"), (A, "Something with a lake."))},
            {"messages": msgs((U, "Boots or trail runners?"))},
            {"prompt": "Best season?", "completion": "Early autumn."}]
    path = tmp_path / "hikes.json"
    path.write_text(json.dumps(rows, indent=2))
    report = validate_file(path)
    assert report.format == "chat" and report.valid == 1
    starts = [i + 1 for i, ln in enumerate(path.read_text().splitlines()) if ln == "  {"]
    assert [p.split(": ")[0] for p in report.problems] == [f"{path}:{starts[1]}", f"{path}:{starts[2]}"]
    path.write_text(json.dumps(rows))  # all on one line: the array index instead
    assert [p.split(": ")[0] for p in validate_file(path).problems] == [f"{path}:[1]", f"{path}:[2]"]


@pytest.mark.parametrize("content, says", [
    ('[{"text": "a"},\n {"text": "b"}]\n', "holds one JSON array, not JSON Lines"),
    ('{\n  "text": "a"\n}\n{\n  "text": "b"\n}\n', "holds pretty-printed JSON (the first object spans lines 1-3)"),
])
def test_whole_json_in_a_jsonl_file_is_said_once(tmp_path, content, says):
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    with pytest.raises(DataError) as info:
        load_jsonl(path)
    assert str(info.value).startswith(f"{path}: {says}") and info.value.problems == []


def test_a_cp1252_file_gets_a_hint(tmp_path, capsys):
    path = tmp_path / "d.jsonl"
    path.write_bytes('{"text": "Caf\u00e9 cr\u00e8me \u2013 20\u20ac"}\n'.encode("cp1252")
                     + b'{"text": "plain"}\n')
    assert cmd_validate([str(path)]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{path}:1: invalid UTF-8: byte 0xe9 at offset 13"
    assert out[-1] == (f"hint: {path}: 1 line(s) are not UTF-8 but read as cp1252 "
                       "(Windows-1252); save the file as UTF-8")


def _csv(path, header, rows, delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_csv_question_answer_with_extra_columns(tmp_path):
    path = _csv(tmp_path / "faq.csv", ["ID", "Question", "Answer", "Category", "reviewed_by"], [
        [1, "Do you ship to Norway?", "Yes, in 3-5 days.", "shipping", "ana"],
        [2, "Can I return\nopened items?", "Within 30 days, unused.", "returns", ""],
        [3, "Gift wrap?", "For 2 euros, \"with a ribbon\".", "", "li"]])
    res = load_jsonl(path)
    assert res.format == "completion"
    assert [(r.messages[0].content, r.topic) for r in res.records] == [
        ("Do you ship to Norway?", "shipping"), ("Can I return\nopened items?", "returns"),
        ("Gift wrap?", None)]
    assert res.records[2].messages[-1].content == 'For 2 euros, "with a ribbon".'
    # rows are reported at the line they start on (row 2 spans lines 3-4)
    assert [r.where for r in res.records] == [f"{path}:2", f"{path}:3", f"{path}:5"]
    assert res.warnings == [f"{path}:2: column 'ID': not used (3 records)",
                            f"{path}:2: column 'reviewed_by': not used (2 records)"]


def test_tsv_alpaca_and_kto_labels(tmp_path):
    path = _csv(tmp_path / "a.tsv", ["instruction", "input", "output", "system"], [
        ["Translate to French.", "good morning", "bonjour", "You translate."],
        ["Give a synonym.", "", "glad", ""]], delimiter="\t")
    res = load_jsonl(path, system_prompt="Default system.")
    assert res.format == "alpaca"
    assert [m.content for m in res.records[0].messages] == ["You translate.", "Translate to French.\n\ngood morning", "bonjour"]
    assert res.records[1].messages[0] == Message(S, "Default system.")
    kto = _csv(tmp_path / "k.csv", ["prompt", "completion", "label"],
               [["q1", "a1", "TRUE"], ["q2", "a2", "0"], ["q3", "a3", "maybe"]])
    with pytest.raises(DataError) as info:
        load_jsonl(kto)
    assert info.value.problems == [f"{kto}:4: label: must be true or false (or 1 or 0), got \"maybe\""]


def test_csv_columns_mapping_and_errors(tmp_path):
    path = _csv(tmp_path / "de.csv", ["Frage", "Antwort"], [["Wie spät?", "Halb acht."]])
    with pytest.raises(DataError, match="no column names a record field"):
        load_jsonl(path)
    rec = load_jsonl(path, columns=parse_columns("prompt=Frage, completion=Antwort")).records[0]
    assert rec.messages[-1].content == "Halb acht."
    with pytest.raises(DataError, match=r"completion=Reply \(--columns / data.columns\): no such"):
        load_jsonl(path, columns=parse_columns("completion=Reply"))
    with pytest.raises(DataError, match="'antwort' is not a record key"):
        parse_columns("antwort=Antwort")


def test_csv_cells_that_look_like_json(tmp_path):
    turns = json.dumps(msgs((U, "Sort [3, 1, 2]?"), (A, "[1, 2, 3]"), (U, "And as a dict?")))
    path = _csv(tmp_path / "code.csv", ["prompt", "completion"], [
        ["Print an empty dict.", "{}  # that is all"],
        ["Give a list.", "[1, 2, 3]"],
        [turns, '{"sorted": [1, 2, 3]}']])
    res = load_jsonl(path)
    assert [r.messages[-1].content for r in res.records] == ["{}  # that is all", "[1, 2, 3]",
                                                             '{"sorted": [1, 2, 3]}']
    # a cell holding a JSON list of turns is a conversation; its earlier answer is context
    assert [(m.role, m.weight) for m in res.records[2].messages] == [(U, None), (A, 0), (U, None), (A, None)]


def test_parquet_with_message_lists(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = {"messages": [msgs((U, "Sourdough too sour?"), (A, "Feed the starter more often.")),
                         msgs((U, "Oven temp?"), (A, "250C, then down to 220C."))],
            "topic": ["bread", None]}
    path = tmp_path / "bread.parquet"
    pq.write_table(pa.table(rows), path)
    res = load_jsonl(path)
    assert res.format == "chat" and [r.where for r in res.records] == [f"{path}:[0]", f"{path}:[1]"]
    assert res.records[1].messages[1].content == "250C, then down to 220C." and res.records[1].topic is None


def test_saved_dataset_folder_and_offline_hub_id(tmp_path, monkeypatch):
    import datasets
    ds = datasets.Dataset.from_dict({"prompt": ["Knit or crochet first?", "Yarn weight?"],
                                     "chosen": ["Crochet: one hook.", "Worsted."],
                                     "rejected": ["Both at once.", "Whatever is cheapest."]})
    ds.save_to_disk(str(tmp_path / "prefs"))
    res = load_many([str(tmp_path / "prefs")], expect=("preference",))
    assert res.format == "preference" and res.records[1].chosen == (Message(A, "Worsted."),)
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match="is a DatasetDict with splits train; give one split's folder"):
        load_jsonl(tmp_path / "dd")
    # offline unless the network is explicitly allowed (HF_HUB_OFFLINE=0), as for models
    for value in ("1", None):
        if value is None:
            monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        else:
            monkeypatch.setenv("HF_HUB_OFFLINE", value)
        with pytest.raises(DataError, match="as a Hugging Face Hub dataset id it needs the network"):
            load_jsonl("someone/their-dataset")


def test_mlx_folder_gives_train_and_valid(tmp_path):
    from mindprint import config as C
    from mindprint.methods.common import load_splits

    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"text": f"Field note {i}: frost on the kale."} for i in range(3)])
    write_jsonl(folder / "valid.jsonl", [{"prompt": "Frost?", "completion": "Cover the rows."}])
    write_jsonl(folder / "test.jsonl", [{"messages": msgs((U, "q"))}])
    cfg = C.from_dict({"method": "sft", "data": {"train": str(folder)}})
    train, ev, notes = load_splits(cfg, ("chat", "alpaca", "text"))
    assert [type(r) for r in train] == [TextRecord] * 3 and [type(r) for r in ev] == [ChatRecord]
    # validate checks every split file; test.jsonl's record has no answer
    assert cmd_validate([str(folder)]) == 2


# ------------------------------------------------------------------------------- properties

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
words = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"),
                              include_characters="\n\t,;\"'"), min_size=1,
                max_size=20).filter(lambda s: s.strip())
TAG_OF = {U: st.sampled_from(["human", "user"]), A: st.sampled_from(["gpt", "assistant"])}


@SETTINGS
@given(data=st.data(), n=st.integers(1, 3), system=st.none() | words)
def test_sharegpt_round_trip(tmp_path_factory, data, n, system):
    turns, expected = [], ([Message(S, system)] if system else [])
    for _ in range(n):
        for role in (U, A):
            text = data.draw(words)
            turns.append({"from": data.draw(TAG_OF[role]), "value": text})
            expected.append(Message(role, text))
    obj = {"conversations": turns, **({"system": system} if system else {})}
    rec, res = one(tmp_path_factory.mktemp("sg"), obj)
    assert res.format == "sharegpt" and rec.messages == tuple(expected)


@SETTINGS
@given(rows=st.lists(st.tuples(words, words), min_size=1, max_size=5),
       sep=st.sampled_from([",", "\t"]), crlf=st.booleans())
def test_csv_round_trip(tmp_path_factory, rows, sep, crlf):
    """Cells with commas, quotes, tabs and newlines come back exactly, at their start line."""
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=sep, lineterminator="\r\n" if crlf else "\n")
    w.writerow(["prompt", "response"])
    w.writerows(rows)
    path = tmp_path_factory.mktemp("csv") / ("d.csv" if sep == "," else "d.tsv")
    path.write_bytes(buf.getvalue().encode("utf-8"))
    res = load_jsonl(path)
    assert [(r.messages[0].content, r.messages[1].content) for r in res.records] == rows
    starts, line = [], 2
    for q, a in rows:
        starts.append(line)
        line += (q + a).count("\n") + 1
    assert [r.where for r in res.records] == [f"{path}:{s}" for s in starts]


# ---------------------------------------------------------------------------- stats, train


def test_stats_json_reports_format_and_trained_tokens(tmp_path, tokenizer, capsys):
    from mindprint.cli import main

    notes = ["The pear tree fruits every other year.", "Prune in late winter, never in frost."]
    text = write_jsonl(tmp_path / "notes.jsonl", [{"text": t} for t in notes])
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [
        {"role": U, "content": "Capital of France?"},
        {"role": A, "content": "Paris.", "weight": 0},
        {"role": U, "content": "And of Spain?"},
        {"role": A, "content": "Madrid, obviously."}]}])
    assert main(["data", "stats", str(text), str(chat), "--json"]) == 0
    got = {s["path"]: s for s in json.loads(capsys.readouterr().out)}
    # text: every token after the first, plus EOS
    assert got[str(text)]["format"] == "text" and got[str(text)]["records"] == 2
    assert got[str(text)]["trained_tokens"] == sum(len(tokenizer(t)["input_ids"]) for t in notes)
    # chat: only the weight-1 answer and its end-of-turn token
    answer = tokenizer("Madrid, obviously.<|im_end|>", add_special_tokens=False)["input_ids"]
    assert got[str(chat)]["format"] == "chat" and got[str(chat)]["trained_tokens"] == len(answer)


def test_text_and_prompt_completion_files_train(tiny_model_dir, tmp_path):
    """One tiny run of 2 steps on a TRL text file and a prompt-completion file together."""
    from conftest import tiny_config
    from mindprint import config as C
    from mindprint.training import run_training

    text = write_jsonl(tmp_path / "essays.jsonl", [
        {"text": f"Entry {i}. The river was high again; I moved the boat to the upper mooring."}
        for i in range(4)])
    pc = write_jsonl(tmp_path / "qa.jsonl", [
        {"prompt": f"Where is the boat on day {i}?", "completion": "At the upper mooring, as always."}
        for i in range(4)])
    raw = tiny_config(tiny_model_dir, str(text), str(pc), str(tmp_path / "run"),
                      max_steps=2, eval_every=2, save_every=0)
    raw["data"]["train"] = [str(text), str(pc)]
    summary = run_training(C.from_dict(raw), log=lambda _: None)
    assert summary["train_loss"] > 0 and summary["final_eval_loss"] > 0


json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)
turn_like = st.fixed_dictionaries({}, optional={
    "role": st.sampled_from([U, A, S, "tool", "bot"]) | json_value,
    "from": st.sampled_from(["human", "gpt", "system", "observation", "function_call", "x"]) | json_value,
    "content": words | json_value, "value": words | st.just('{"name": "f"}') | json_value,
    "weight": st.sampled_from([0, 1, 2, None, True]),
    "tool_calls": st.just([{"function": {"name": "f", "arguments": {}}}]) | json_value,
    "tool_call_id": words | json_value, "name": words | json_value})
field_value = json_value | words | st.lists(turn_like, max_size=4) | turn_like \
    | st.lists(st.lists(words, min_size=2, max_size=2), max_size=2) \
    | st.fixed_dictionaries({"messages": st.lists(turn_like, max_size=3)})
object_like = st.dictionaries(st.sampled_from(sorted(set().union(*(k for _, _, k in READERS.values())))),
                              field_value, max_size=6)


@SETTINGS
@given(objs=st.lists(object_like, min_size=1, max_size=4), fmt=st.none() | st.sampled_from(FORMATS))
def test_arbitrary_objects_of_every_format_give_only_data_errors(tmp_path_factory, objs, fmt):
    """Whatever the keys hold, every format's reader answers with a record or a problem naming
    its line, never a traceback."""
    path = tmp_path_factory.mktemp("fuzz") / "d.jsonl"
    path.write_text("\n".join(json.dumps(o) for o in objs))
    try:
        result = load_jsonl(path, fmt, max_error_rate=1.0)
        problems = result.problems
    except DataError as err:
        problems = err.problems
    assert all(p.startswith(f"{path}:") for p in problems)
