"""Table column mapping everywhere a data file is read: ``--columns`` on convert, mix, split and
``train --data``, and the config key ``data.columns`` the trainer uses (issue 19)."""

from __future__ import annotations

import csv
import json

import pytest

from mindprint import config as C
from mindprint.cli import main
from mindprint.data.formats import VOCABULARY
from mindprint.errors import ConfigError

# a survey export in German: no column is named like a record key
HEADER = ["Nr", "Frage", "Antwort", "Thema"]
ROWS = [
    [1, "Wie fängst du den Tag an?", "Mit Kaffee, schwarz, und zehn Minuten Stille.", "morgen"],
    [2, "Was liest du gerade?", "Einen Roman über Leuchtturmwärter, langsam, Kapitel für Kapitel.",
     "bücher"],
    [3, "Lieblingsweg zur Arbeit?", "Am Kanal entlang; der Umweg lohnt sich.", "morgen"],
    [4, "Wie entspannst du?", "Brot backen. Der Teig wartet nicht, also warte ich.", "freizeit"],
    [5, "Tee oder Kaffee?", "Kaffee. Tee nur, wenn ich krank bin.", "morgen"],
    [6, "Was kochst du sonntags?", "Linsen mit Speck, wie meine Großmutter.", "freizeit"],
]
MAP = "prompt=Frage,completion=Antwort,topic=Thema"


@pytest.fixture
def survey(tmp_path):
    path = tmp_path / "umfrage.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerows(ROWS)
    return path


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_config_key_names_record_keys_with_did_you_mean():
    # config sits below data, so it keeps its own copy of the record keys: they must agree
    assert set(C.TABLE_KEYS) == VOCABULARY
    cfg = C.from_dict({"data": {"train": "t.csv", "columns": {"prompt": "Frage"}}})
    assert cfg.data.columns == {"prompt": "Frage"}
    with pytest.raises(ConfigError, match="data.columns: 'promt' is not a record key; did you "
                                          "mean 'prompt'"):
        C.from_dict({"data": {"train": "t.csv", "columns": {"promt": "Frage"}}})
    with pytest.raises(ConfigError, match="data.columns"):
        C.from_dict({"data": {"train": "t.csv", "columns": ["prompt", "Frage"]}})


def test_without_a_mapping_the_tools_say_how_to_map(survey, tmp_path, capsys):
    assert main(["data", "split", str(survey), "-o", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "no column names a record field" in err and "--columns" in err


def test_split_and_mix_with_columns(survey, tmp_path, capsys):
    assert main(["data", "split", str(survey), "--columns", MAP, "--eval-count", "2",
                 "-o", str(tmp_path / "s")]) == 0
    train, ev = _lines(tmp_path / "s_train.jsonl"), _lines(tmp_path / "s_eval.jsonl")
    assert len(train) + len(ev) == len(ROWS) and len(ev) == 2
    # written as records (the mapped keys), so the outputs load without a mapping
    assert {r["completion"] for r in train + ev} == {row[2] for row in ROWS}
    assert all(set(r) == {"prompt", "completion", "topic"} for r in train + ev)
    # the unmapped column is counted, not silently dropped
    assert "column 'Nr': not used (6 records)" in capsys.readouterr().err

    out = tmp_path / "mix.jsonl"
    assert main(["data", "mix", f"{survey}:2", "--columns", MAP, "--dedupe", "none",
                 "-o", str(out)]) == 0
    mixed = _lines(out)
    assert len(mixed) == 2 * len(ROWS) and {r["prompt"] for r in mixed} == {r[1] for r in ROWS}


def test_convert_with_columns(survey, tmp_path):
    out = tmp_path / "chat.jsonl"
    assert main(["data", "convert", str(survey), "--columns", MAP, "--to", "chat",
                 "-o", str(out)]) == 0
    chats = _lines(out)
    assert [c["messages"][-1]["content"] for c in chats] == [r[2] for r in ROWS]
    assert chats[0]["topic"] == "morgen"


def test_columns_on_a_json_lines_file_is_said_not_ignored(tmp_path, capsys):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi?"},
                                             {"role": "assistant", "content": "Hello."}]}) + "\n")
    out = tmp_path / "o.jsonl"
    assert main(["data", "mix", str(path), "--columns", "prompt=Frage", "-o", str(out)]) == 0
    assert "column mapping (prompt=Frage) not used: only tables" in capsys.readouterr().err


def test_bad_mapping_is_one_line_error(survey, tmp_path, capsys):
    assert main(["data", "split", str(survey), "--columns", "prompt=Question",
                 "-o", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "prompt=Question (--columns / data.columns): no such column" in err
    assert "Frage" in err and "Traceback" not in err
    assert main(["data", "mix", str(survey), "--columns", "frage", "-o", str(tmp_path / "m")]) == 2
    assert "is not KEY=COLUMN" in capsys.readouterr().err


def test_train_data_with_columns(survey, tmp_path, monkeypatch, capsys):
    """``train --data TABLE --columns`` detects the method through the mapping and hands it to
    the trainer as data.columns; the trainer's loader reads the table with it."""
    from mindprint.cli import _train_config, build_parser
    from mindprint.methods.common import load_splits

    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["train", "--data", str(survey), "--columns", MAP])
    cfg = _train_config(args)
    assert cfg.method == "sft" and cfg.data.columns == {
        "prompt": "Frage", "completion": "Antwort", "topic": "Thema"}
    train, _, notes = load_splits(cfg, ("chat", "text"))
    assert [r.messages[-1].content for r in train] == [r[2] for r in ROWS]
    assert any("column 'Nr': not used" in n for n in notes)
    # a config's data.columns is what a config run uses
    yml = tmp_path / "run.yaml"
    yml.write_text(f"data:\n  train: {survey.name}\n  columns: {{prompt: Frage, completion: "
                   "Antwort}\n")
    cfg = _train_config(build_parser().parse_args(["train", str(yml)]))
    assert [r.messages[0].content for r in load_splits(cfg, ("chat",))[0]] == [r[1] for r in ROWS]
    with pytest.raises(Exception, match="'antwort' is not a record key"):
        _train_config(build_parser().parse_args(["train", "--data", str(survey), "--columns",
                                                 "antwort=Antwort"]))
