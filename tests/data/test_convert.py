"""``mindprint data convert``: each conversion on small files (the data layer's ``convert``);
generation (the API's ``convert``, which passes the base model's answers in) on the tiny random
model (unit) and once on the bundled model (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import PERSONA, chat, write_jsonl

import mindprint.backends.torch.generate as torch_generate
from mindprint.cli import main
from mindprint.api import datasets as A
from mindprint.data import convert as C
from mindprint.data.jsonl import load_jsonl
from mindprint.data.records import KTORecord, PreferenceRecord, PromptRecord
from mindprint.errors import DataError


def rows(path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines()]


def quiet(_):
    pass


def msgs(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


MULTI = {"messages": msgs(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello."),
                          ("user", "Is cash trash?"), ("assistant", "Zoom out. Cash is an option.")),
         "topic": "risk", "id": 7}


# ------------------------------------------------------------------------- without a model


def test_alpaca_to_chat_keeps_extra_keys(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", [
        {"instruction": "Explain.", "input": "Credit cycles", "output": "Zoom out.", "topic": "cycles",
         "id": "x1"},
        {"instruction": "Describe.", "input": "", "output": "Late."}])
    r = C.convert(src, tmp_path / "c.jsonl", to="chat", system_prompt="You are Ray.", log=quiet)
    assert (r.source_format, r.read, r.written) == ("alpaca", 2, 2)
    assert rows(r.output) == [
        {"messages": msgs(("system", "You are Ray."), ("user", "Explain.\n\nCredit cycles"),
                          ("assistant", "Zoom out.")), "topic": "cycles", "id": "x1"},
        {"messages": msgs(("system", "You are Ray."), ("user", "Describe."), ("assistant", "Late."))}]
    assert load_jsonl(r.output).format == "chat"


def test_chat_to_prompt_takes_the_last_user_turn_and_its_answer(tmp_path):
    src = write_jsonl(tmp_path / "c.jsonl", [chat("Q?", "A.", "t"), MULTI,
                                             {"messages": msgs(("system", "S."), ("user", "Q2?"),
                                                               ("assistant", "A2."))}])
    r = C.convert(src, tmp_path / "p.jsonl", to="prompt", log=quiet)
    got = rows(r.output)
    assert got[0] == {"prompt": "Q?", "answer": "A.", "topic": "t"}
    assert got[1] == {"prompt": MULTI["messages"][:4], "answer": "Zoom out. Cash is an option.",
                      "topic": "risk", "id": 7}
    assert got[2] == {"system": "S.", "prompt": "Q2?", "answer": "A2."}
    records = load_jsonl(r.output).records
    assert all(isinstance(x, PromptRecord) for x in records)
    assert [m.role for m in records[1].prompt] == ["system", "user", "assistant", "user"]


def test_preference_to_kto_unpairs(tmp_path):
    src = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Q?", "chosen": "Mine.", "rejected": "Generic.",
                                              "topic": "t"}])
    r = C.convert(src, tmp_path / "k.jsonl", to="kto", log=quiet)
    assert rows(r.output) == [{"prompt": "Q?", "completion": "Mine.", "label": True, "topic": "t"},
                              {"prompt": "Q?", "completion": "Generic.", "label": False, "topic": "t"}]


def test_chat_to_kto_without_generation_is_desirable_only(tmp_path):
    src = write_jsonl(tmp_path / "c.jsonl", [chat("Q?", "A."), chat("R?", "B.")])
    r = C.convert(src, tmp_path / "k.jsonl", to="kto", log=quiet)
    assert [x["label"] for x in rows(r.output)] == [True, True]
    assert all(isinstance(x, KTORecord) for x in load_jsonl(r.output).records)


def test_invalid_lines_are_dropped_and_reported(tmp_path):
    src = write_jsonl(tmp_path / "c.jsonl", [chat("Q?", "A."),
                                             {"messages": msgs(("user", "no answer"))}])
    logged = []
    r = C.convert(src, tmp_path / "p.jsonl", to="prompt", log=logged.append)
    assert r.written == 1
    assert logged[:3] == ["dropped 1 line:", "  invalid: 1",
                          f'    {src}:2: messages[0].role: the last turn must be "assistant" (it is '
                          f'trained on), got "user"']


@pytest.mark.parametrize("to, fmt, kwargs, message", [
    ("chat", "prompt", {}, "cannot convert prompt data to chat; chat is made from alpaca, sharegpt "
                                     "or completion data"),
    ("preference", "kto", {}, "cannot convert kto data to preference"),
    ("prompt", "chat", {"generate": True}, "--generate adds base-model answers"),
])
def test_conversions_that_do_not_exist(tmp_path, to, fmt, kwargs, message):
    data = {"prompt": {"prompt": "Q?"}, "kto": {"prompt": "Q?", "completion": "A", "label": True},
            "chat": chat("Q?", "A.")}[fmt]
    src = write_jsonl(tmp_path / "s.jsonl", [data])
    with pytest.raises(DataError, match=message):
        C.convert(src, tmp_path / "o.jsonl", to=to, **kwargs)
    assert not (tmp_path / "o.jsonl").exists()


def test_nothing_left_writes_no_file(tmp_path):
    src = write_jsonl(tmp_path / "c.jsonl", ['{"messages": []}'])
    with pytest.raises(DataError, match="nothing to write"):
        C.convert(src, tmp_path / "o.jsonl", to="prompt", log=quiet)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]


def test_a_crash_midway_leaves_no_partial_output(tmp_path, monkeypatch):
    src = write_jsonl(tmp_path / "c.jsonl", [chat(f"Q{i}?", f"A{i}.") for i in range(6)])
    real, calls = C.write_record, []

    def dies_at_the_fourth(f, obj):
        calls.append(obj)
        if len(calls) == 4:
            raise OSError("no space left on device")
        real(f, obj)

    monkeypatch.setattr(C, "write_record", dies_at_the_fourth)
    with pytest.raises(OSError):
        C.convert(src, tmp_path / "p.jsonl", to="prompt", log=quiet)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]


# ---------------------------------------------------------------------- with the tiny model


@pytest.fixture
def chat_file(tmp_path):
    return write_jsonl(tmp_path / "c.jsonl", [chat(f"Where are we in cycle {i}?", f"Zoom out, {i}.",
                                                   "cycles") for i in range(5)] + [MULTI])


def spy_generate(monkeypatch, replace=None, after=None):
    """Record each batch handed to the backend's generate; ``replace`` fakes its answers,
    ``after`` edits the real ones."""
    batches, real = [], torch_generate.generate

    def spy(model, tok, prompts, **kw):
        batches.append(prompts)
        if replace:
            return replace(prompts)
        answers = real(model, tok, prompts, **kw)
        return after(answers) if after else answers

    monkeypatch.setattr(torch_generate, "generate", spy)
    return batches


def test_chat_to_preference_with_base_model_answers(tmp_path, chat_file, tiny_model_dir,
                                                    monkeypatch, capsys):
    # the random tiny model answers with newlines only (empty once stripped): a marker after
    # its real answers keeps the pairs
    batches = spy_generate(monkeypatch, after=lambda answers: [a + " generic" for a in answers])
    r = A.convert(chat_file, tmp_path / "p.jsonl", to="preference", model=tiny_model_dir,
                  max_new_tokens=6, batch_size=4, device="cpu")
    assert [len(b) for b in batches] == [4, 2]                 # batched, last batch partial
    assert batches[1][1] == MULTI["messages"][:4]              # generated from the prompt only
    assert r.written == 6
    records = load_jsonl(r.output).records                     # loads as preference data
    assert all(isinstance(x, PreferenceRecord) for x in records)
    assert all(x.rejected[0].content.endswith("generic") for x in records)
    assert [x.chosen[0].content for x in records] == [f"Zoom out, {i}." for i in range(5)] + [
        "Zoom out. Cash is an option."]
    assert [x.topic for x in records] == ["cycles"] * 5 + ["risk"]
    assert rows(r.output)[5]["id"] == 7
    err = capsys.readouterr().err
    assert "[generate] step 6/6" in err and "into 6 preference records" in err


def test_empty_base_model_answers_drop_the_pair(tmp_path, chat_file, tiny_model_dir, capsys):
    # unpatched: the tiny model's answers are all whitespace, so no pair survives
    with pytest.raises(DataError, match="nothing to write"):
        A.convert(chat_file, tmp_path / "p.jsonl", to="preference", model=tiny_model_dir,
                  max_new_tokens=3, device="cpu")
    err = capsys.readouterr().err
    assert "dropped 6 lines:\n  the base model's answer is empty: 6 (first 5 shown)" in err
    assert not (tmp_path / "p.jsonl").exists()


def test_chat_to_kto_adds_undesirable_answers_and_drops_unusable_ones(tmp_path, chat_file,
                                                                       tiny_model_dir, monkeypatch):
    def fake(prompts):  # the 2nd answer repeats the person, the 3rd is empty
        return ["Zoom out, 1." if "cycle 1?" in p[-1]["content"] else
                "  " if "cycle 2?" in p[-1]["content"] else "A generic answer." for p in prompts]

    spy_generate(monkeypatch, fake)
    logged = []
    r = A.convert(chat_file, tmp_path / "k.jsonl", to="kto", generate=True, model=tiny_model_dir,
                  batch_size=8, device="cpu", log=logged.append)
    labels = [x["label"] for x in rows(r.output)]
    assert labels == [True, False, True, True, True, False, True, False, True, False]
    assert "dropped 2 undesirable examples:" in logged
    assert "  the base model's answer equals the person's: 1" in logged
    assert "  the base model's answer is empty: 1" in logged
    assert f"    {chat_file}:2" in logged and f"    {chat_file}:3" in logged
    records = load_jsonl(r.output).records
    assert {x.label for x in records} == {True, False}


def test_convert_cli_prints_the_output_path(tmp_path, chat_file, tiny_model_dir, capsys):
    out = tmp_path / "k.jsonl"
    assert main(["data", "convert", str(chat_file), "--to", "kto", "--generate", "-o", str(out),
                 "--model", tiny_model_dir, "--max-new-tokens", "2", "--batch-size", "3",
                 "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [str(out)]
    # the tiny model's answers are whitespace: every undesirable example goes, no line does
    assert "dropped 6 undesirable examples:" in captured.err
    assert [x["label"] for x in rows(out)] == [True] * 6


# ------------------------------------------------------------------------ the bundled model


@pytest.mark.slow
def test_bundled_model_makes_voice_vs_generic_pairs(tmp_path, bundled_model_dir):
    first3 = (PERSONA / "persona_eval.jsonl").read_text(encoding="utf-8").splitlines()[:3]
    src = write_jsonl(tmp_path / "three.jsonl", first3)
    r = A.convert(src, tmp_path / "pref.jsonl", to="preference", model=bundled_model_dir,
                  max_new_tokens=32, batch_size=3, device="cpu", log=quiet)
    records = load_jsonl(r.output, "preference").records
    assert len(records) == 3
    for rec, line in zip(records, first3):
        original = json.loads(line)
        assert rec.chosen[0].content == original["messages"][-1]["content"]
        assert rec.rejected[0].content.strip() and rec.rejected != rec.chosen
        assert rec.topic == original["topic"]


# ------------------------------------------------------------- answers passed in by the caller


class EchoAnswers:
    """An :class:`mindprint.data.convert.Answers` without a model: the data layer loads none."""

    name, batch_size = "echoed answers", 2

    def __init__(self, total):
        self.total, self.asked, self.closed = total, [], False

    def __call__(self, prompts):
        self.asked.append(len(prompts))
        return [f"generic reply to {p[-1].content}" for p in prompts]

    def close(self):
        self.closed = True


def test_data_layer_takes_the_rejected_side_from_the_caller(tmp_path, chat_file):
    made, logged = [], []

    def factory(total):
        made.append(EchoAnswers(total))
        return made[-1]

    r = C.convert(chat_file, tmp_path / "p.jsonl", to="preference", answers=factory,
                  log=logged.append)
    (answers,) = made
    assert answers.total == 6 and answers.asked == [2, 2, 2] and answers.closed
    assert r.written == 6
    assert all(row["rejected"].startswith("generic reply to ") for row in rows(r.output))
    assert "generating echoed answers (batches of 2)" in logged


def test_preference_without_a_model_to_answer_is_a_clear_error(tmp_path, chat_file):
    with pytest.raises(DataError, match="needs a model to answer the prompts"):
        C.convert(chat_file, tmp_path / "p.jsonl", to="preference", log=quiet)
    assert not (tmp_path / "p.jsonl").exists()
