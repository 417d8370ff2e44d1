"""CLI: user mistakes give one-line errors and non-zero exits, never tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import chat, tiny_config, write_jsonl
from mindprint.cli import main


def test_unknown_key_one_line_error(tmp_path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"data": {"train": "x.jsonl"}, "train": {"learning_rate": 1}}))
    assert main(["train", str(p)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'train.learning_rate'; did you mean 'train.lr'?" in err
    assert "Traceback" not in err


def test_missing_config_and_data(tmp_path, capsys):
    assert main(["train", str(tmp_path / "none.yaml")]) == 2
    assert "no such config file" in capsys.readouterr().err
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"data": {"train": str(tmp_path / "missing.jsonl")},
                                 "model": str(tmp_path)}))
    assert main(["train", str(p)]) == 2


def test_bad_data_fails_before_training_with_file_line(tiny_model_dir, tmp_path, capsys):
    good = chat("q", "a")
    train = write_jsonl(tmp_path / "t.jsonl", [good, '{"messages": [}', good,
                                               {"messages": [{"role": "robot", "content": "x"}]}])
    raw = tiny_config(tiny_model_dir, str(train), str(train), str(tmp_path / "run"))
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    assert main(["train", str(p)]) == 2
    err = capsys.readouterr().err
    assert f"{train}:2:" in err and f"{train}:4: messages[0].role" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "adapter").exists()


def test_data_validate_exit_codes(tmp_path, capsys):
    ok = write_jsonl(tmp_path / "ok.jsonl", [chat("q", "a", "cycles"), chat("q2", "a2", "risk")])
    assert main(["data", "validate", str(ok)]) == 0
    assert "ok: 2 records (chat)" in capsys.readouterr().out
    bad = write_jsonl(tmp_path / "bad.jsonl", [chat("q", "a"), {"messages": []}])
    assert main(["data", "validate", str(bad)]) != 0
    out = capsys.readouterr().out
    assert f"{bad}:2: messages" in out


def test_config_show_prints_defaults(tmp_path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"data": {"train": "x.jsonl"}}))
    assert main(["config", "show", str(p), "--set", "lora.r=4"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["lora"]["r"] == 4 and shown["train"]["max_steps"] == 200
    assert shown["model"]["name"] == "smollm2-135m-instruct"


def test_generate_with_adapter_uses_adapter_base(tiny_model_dir, tiny_chat_files, tmp_path,
                                                 capsys):
    from mindprint import config as C
    from mindprint.backends.torch.train import run_training

    train, ev = tiny_chat_files
    run_training(C.from_dict(tiny_config(tiny_model_dir, train, ev, str(tmp_path / "r"),
                                         max_steps=1)))
    capsys.readouterr()
    assert main(["generate", "--adapter", str(tmp_path / "r" / "adapter"), "--prompt", "Hi",
                 "--max-new-tokens", "5"]) == 0
    capsys.readouterr()
    from mindprint.backends.torch.model import load_for_inference

    _, _, ref = load_for_inference(None, str(tmp_path / "r" / "adapter"))
    assert ref.path == str(tiny_model_dir)        # the base came from the adapter's metadata
    assert main(["generate", "--adapter", str(tmp_path / "nope"), "--prompt", "Hi"]) == 2


def test_no_traceback_in_a_real_process(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train: {lr: -1}\ndata: {train: x}\n")
    r = subprocess.run([sys.executable, "-m", "mindprint.cli", "train", str(p)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "train.lr" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
