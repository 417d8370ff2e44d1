"""Tool use in preference and KTO data, as the chat path takes it: ``tools`` (OpenAI preference:
``input.tools``), assistant ``tool_calls`` and ``tool`` turns are read, rendered through the chat
template with the prompt and every completion, counted by ``data stats``, carried by ``data
convert``; a template that cannot render tools is an error naming ``file:line``. Tokenizer only
(a copy of the bundled tokenizer with a small tool-rendering template)."""

from __future__ import annotations

import copy
import json

import pytest

from conftest import TOOL_TEMPLATE, write_jsonl
from mindprint.data.convert import convert
from mindprint.data.jsonl import load_jsonl
from mindprint.data.records import to_json
from mindprint.data.tools import file_stats
from mindprint.errors import DataError
from mindprint.methods.groups import pair_items, render_groups
from mindprint.methods.kto import kto_items

TIDE = {"type": "function", "function": {
    "name": "tide_table", "description": "High and low water for a harbour and a date",
    "parameters": {"type": "object", "properties": {"harbour": {"type": "string"},
                                                    "date": {"type": "string"}}}}}
CALL = {"id": "call_7", "type": "function",
        "function": {"name": "tide_table", "arguments": {"harbour": "Whitby", "date": "Sat"}}}
ASKED = [{"role": "user", "content": "Can we launch the kayaks from Whitby on Saturday morning?"},
         {"role": "assistant", "content": "", "tool_calls": [CALL]},
         {"role": "tool", "tool_call_id": "call_7", "name": "tide_table",
          "content": "high 06:10, low 12:25"}]
GOOD = "High water at ten past six, so launch by seven and be back before the ebb runs hard."
BAD = "Launching depends on many factors, including the weather and tides."


@pytest.fixture(scope="module")
def tool_tok(tokenizer):
    t = copy.deepcopy(tokenizer)
    t.chat_template = TOOL_TEMPLATE
    return t


def _pair_file(tmp_path):
    return write_jsonl(tmp_path / "pairs.jsonl", [
        # TRL explicit prompt with a tool round trip
        {"prompt": ASKED, "chosen": [{"role": "assistant", "content": GOOD}],
         "rejected": [{"role": "assistant", "content": BAD}], "tools": [TIDE]},
        # TRL implicit prompt: the tool round trip is part of the shared turns
        {"chosen": ASKED + [{"role": "assistant", "content": GOOD + " Wetsuits, it is May."}],
         "rejected": ASKED + [{"role": "assistant", "content": "Yes."}], "tools": [TIDE]},
        # the chosen side itself calls a tool
        {"prompt": "What is low water at Staithes on Sunday?",
         "chosen": [{"role": "assistant", "content": "", "tool_calls": [
             {"id": "c9", "type": "function", "function": {
                 "name": "tide_table", "arguments": {"harbour": "Staithes", "date": "Sun"}}}]}],
         "rejected": "Around noon, probably.", "tools": [TIDE]}])


def test_preference_tools_are_read_and_rendered(tmp_path, tool_tok):
    path = _pair_file(tmp_path)
    res = load_jsonl(path)
    assert res.format == "preference" and not res.warnings
    assert [r.tools for r in res.records] == [(TIDE,)] * 3
    assert res.records[1].prompt[-1].role == "tool"        # implicit prompt ends with the tool
    groups, notes = render_groups(tool_tok, pair_items(res.records), 512, 0.0, "data.train")
    assert len(groups) == 3 and not notes
    for g in groups:
        prompt = tool_tok.decode(g.prompt)
        assert prompt.startswith('<|im_start|>system\nTools: [{"type": "function", "function": '
                                 '{"name": "tide_table"')
        assert "Tools:" not in tool_tok.decode(g.completions[0])   # rendered once, in the prompt
    g = groups[0]
    assert "<call>tide_table" in tool_tok.decode(g.prompt)
    chosen = [t for t, m in zip(g.completions[0], g.masks[0]) if m]
    assert tool_tok.decode(chosen).startswith("High water at ten past six")
    scored = [t for t, m in zip(groups[2].completions[0], groups[2].masks[0]) if m]
    assert tool_tok.decode(scored) == ('<call>tide_table {"harbour": "Staithes", "date": "Sun"}'
                                       '</call><|im_end|>')
    # round trip: the canonical form keeps the tools
    again = write_jsonl(tmp_path / "again.jsonl", [to_json(r) for r in res.records])
    assert load_jsonl(again).records == res.records


def test_openai_and_kto_tools(tmp_path, tool_tok):
    openai = write_jsonl(tmp_path / "openai.jsonl", [{
        "input": {"messages": ASKED, "tools": [TIDE], "parallel_tool_calls": False},
        "preferred_output": [{"role": "assistant", "content": GOOD}],
        "non_preferred_output": [{"role": "assistant", "content": BAD}]}])
    res = load_jsonl(openai)
    assert res.records[0].tools == (TIDE,)
    assert res.warnings == [f"{openai}:1: input.parallel_tool_calls: not used (a request "
                            "option) (1 record)"]
    kto = write_jsonl(tmp_path / "kto.jsonl", [
        {"prompt": ASKED, "completion": [{"role": "assistant", "content": GOOD}], "label": True,
         "tools": [TIDE]},
        {"prompt": ASKED, "completion": [{"role": "assistant", "content": BAD}], "label": False,
         "tools": [TIDE]},
        # the same prompt without the tool list is another prompt
        {"prompt": ASKED, "completion": [{"role": "assistant", "content": BAD}], "label": False}])
    records = load_jsonl(kto).records
    items = kto_items(records)
    assert [(len(c), t) for _, c, _, _, t in items] == [(2, (TIDE,)), (1, None)]
    groups, _ = render_groups(tool_tok, items[:1], 512, 0.0, "data.train")
    assert tool_tok.decode(groups[0].prompt).startswith("<|im_start|>system\nTools:")
    assert groups[0].tools == (TIDE,)


def test_a_template_without_tools_names_the_record(tmp_path, tokenizer):
    """The bundled model's template renders no tools: training and stats say where."""
    path = _pair_file(tmp_path)
    with pytest.raises(DataError, match=rf"^{path}:1: uses tools, tool_calls, tool but the "
                                        "model's chat template does not render tool use"):
        render_groups(tokenizer, pair_items(load_jsonl(path).records), 512, 0.0, "data.train")
    logs = []
    with pytest.raises(DataError, match="no valid records"):
        file_stats(path, tokenizer, log=logs.append)
    assert f"  cannot render: 3" in logs and any(line.strip().startswith(f"{path}:2: uses tools")
                                                 for line in logs)


def test_stats_count_tool_calls_as_trained_tokens(tmp_path, tool_tok):
    s = file_stats(_pair_file(tmp_path), tool_tok, log=lambda _: None)
    assert s.records == 3 and s.invalid == 0 and s.trained_tokens > 0


def test_convert_carries_tools_or_counts_the_record(tmp_path):
    kto = tmp_path / "kto.jsonl"
    convert(_pair_file(tmp_path), kto, to="kto", log=lambda _: None)
    rows = [json.loads(line) for line in kto.read_text().splitlines()]
    assert len(rows) == 6 and all(r["tools"] == [TIDE] for r in rows)
    assert rows[0]["prompt"][-1]["role"] == "tool" and rows[1]["label"] is False
    chats = write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": ASKED + [{"role": "assistant", "content": GOOD}], "tools": [TIDE]},
        {"messages": [{"role": "user", "content": "Best month for seals at Ravenscar?"},
                      {"role": "assistant", "content": "January, at low water."}]}])
    logs, out = [], tmp_path / "prompts.jsonl"
    convert(chats, out, to="prompt", log=logs.append)
    assert [json.loads(line)["prompt"] for line in out.read_text().splitlines()] == [
        "Best month for seals at Ravenscar?"]
    assert "  uses tools (prompt records have no tool list): 1" in logs
    # chat → kto keeps the tool round trip in the prompt (it was cut at the last user turn)
    convert(chats, tmp_path / "k.jsonl", to="kto", log=lambda _: None)
    first = json.loads((tmp_path / "k.jsonl").read_text().splitlines()[0])
    assert [m["role"] for m in first["prompt"]] == ["user", "assistant", "tool"]
    assert first["tools"] == [TIDE] and first["completion"] == GOOD
