"""CLI: user mistakes give one-line errors and non-zero exits, never tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
    from mindprint.training import run_training

    train, ev = tiny_chat_files
    run_training(C.from_dict(tiny_config(tiny_model_dir, train, ev, str(tmp_path / "r"),
                                         max_steps=1)))
    capsys.readouterr()
    assert main(["generate", "--adapter", str(tmp_path / "r" / "adapter"), "--prompt", "Hi",
                 "--max-new-tokens", "5"]) == 0
    capsys.readouterr()
    from mindprint.backends.torch.load import load_for_inference

    _, _, ref = load_for_inference(None, str(tmp_path / "r" / "adapter"))
    assert ref.path == str(tiny_model_dir)        # the base came from the adapter's metadata
    assert main(["generate", "--adapter", str(tmp_path / "nope"), "--prompt", "Hi"]) == 2


def test_train_from_a_data_file_alone_in_epochs_then_generate_from_the_run_dir(
        tiny_model_dir, tiny_chat_files, tmp_path, monkeypatch, capsys):
    """`mindprint train --data FILE` with no config: sft from the chat format, output_dir
    runs/<file stem> under the current directory, train.epochs turned into steps; the run
    directory is then a valid --adapter."""
    train, ev = tiny_chat_files                    # 20 training chats
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", train, "--eval", ev, "--model", tiny_model_dir,
                 "--set", "train.epochs=2", "--set", "train.batch_size=4",
                 "--set", "data.max_length=96", "--set", "lora.r=4", "--set", "train.save_every=0",
                 "--set", "train.eval_every=0", "--set", "train.eval_at_start=false"]) == 0
    out = capsys.readouterr()
    assert "chat data → method sft" in out.err
    run = tmp_path / "runs" / "train"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 * (20 // 4)               # 2 epochs of 5 steps
    written = yaml.safe_load((run / "config.yaml").read_text())
    assert (written["train"]["epochs"], written["train"]["max_steps"]) == (2, 10)
    assert written["output_dir"] == str(run) and written["data"]["train"] == [train]
    assert main(["generate", "--adapter", "runs/train", "--prompt", "Hi",
                 "--max-new-tokens", "4"]) == 0
    by_run = capsys.readouterr().out
    assert main(["generate", "--adapter", str(run / "adapter"), "--prompt", "Hi",
                 "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out == by_run


def _train_cfg(argv: list[str]):
    """The config `mindprint train ARGV` would train with (parsing and config only)."""
    from mindprint.cli import _train_config, build_parser

    return _train_config(build_parser().parse_args(["train", *argv]))


def test_train_data_picks_the_method_from_the_format(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    pairs = write_jsonl(tmp_path / "my pairs.jsonl", [
        {"prompt": "Is cash trash?", "chosen": "Cash is an option on panic.",
         "rejected": "Cash has pros and cons."},
        {"prompt": [{"role": "user", "content": "Buy the dip?"}],
         "chosen": "Which dip? Zoom out first.", "rejected": "It depends on many factors."}])
    kto = write_jsonl(tmp_path / "kto.jsonl", [
        {"prompt": "Hedge?", "completion": "Always, cheaply.", "label": True},
        {"prompt": "Hedge?", "completion": "Hedging is complex.", "label": False}])
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Where are we in the cycle?"}])
    cfg = _train_cfg(["--data", str(pairs)])
    assert cfg.method == "dpo" and cfg.output_dir == str(Path("runs") / "my pairs")
    assert cfg.data.train == [str(pairs)] and cfg.train.max_steps == 200   # the defaults
    assert "preference data → method dpo" in capsys.readouterr().err
    cfg = _train_cfg(["--data", str(pairs), "--method", "orpo", "--set", "output_dir=o"])
    assert (cfg.method, cfg.output_dir) == ("orpo", "o")
    assert _train_cfg(["--data", str(kto)]).method == "kto"
    capsys.readouterr()
    # prompt-only data has nothing to imitate: RL only, and only when asked for
    assert main(["train", "--data", str(prompts)]) == 2
    assert "--method grpo" in capsys.readouterr().err
    assert _train_cfg(["--data", str(prompts), "--method", "grpo"]).method == "grpo"
    # files whose formats train differently
    assert main(["train", "--data", str(pairs), "--data", str(kto)]) == 2
    assert "pass --method" in capsys.readouterr().err
    # neither a config nor data
    assert main(["train"]) == 2
    err = capsys.readouterr().err
    assert "give a config file or training data" in err and "--data FILE" in err


def test_train_data_overrides_a_config_and_set_overrides_both(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    p = tmp_path / "conf" / "c.yaml"
    p.write_text(yaml.safe_dump({"method": "kl_sft", "data": {"train": "a.jsonl"},
                                 "output_dir": "runs/c"}))
    monkeypatch.chdir(tmp_path)
    cfg = _train_cfg([str(p), "--data", "mine.jsonl", "--set", "model.dtype=float32"])
    assert cfg.data.train == ["mine.jsonl"] and cfg.method == "kl_sft"   # --data: CWD-relative
    assert cfg.output_dir == "runs/c" and cfg.model.dtype == "float32"
    cfg = _train_cfg([str(p), "--data", "mine.jsonl", "--set", "data.train=x.jsonl"])
    assert cfg.data.train == ["x.jsonl"]


def test_no_traceback_in_a_real_process(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train: {lr: -1}\ndata: {train: x}\n")
    r = subprocess.run([sys.executable, "-m", "mindprint.cli", "train", str(p)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "train.lr" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_train_with_an_uncached_hub_id_fails_at_once(tmp_path, monkeypatch, capsys):
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    data = write_jsonl(tmp_path / "t.jsonl", [chat("Where are we?", "Late in the cycle.")])
    t0 = time.monotonic()
    assert main(["train", "--data", str(data), "--model", "NoSuchOrg/no-such-model",
                 "--output-dir", str(tmp_path / "run")]) == 2
    assert time.monotonic() - t0 < 2.0
    err = capsys.readouterr().err
    assert "not in the local Hugging Face cache" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
