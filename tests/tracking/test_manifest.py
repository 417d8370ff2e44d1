"""manifest.json: written by every run, completed with its outcome; --reproduce flags differences."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from mindprint import config as C
from mindprint import manifest as M
from mindprint.manifest import identity
from mindprint.training import Trainer, run_training
from mindprint.cli import main
from mindprint.data.render import Rendered
from mindprint.errors import TrainingStopped
from mindprint.methods.groups import Group

from .conftest import chat_files, read_json, small_config


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_manifest_of_a_finished_run(sft_run, tiny_model_dir):
    m = read_json(sft_run / "manifest.json")
    assert m["versions"]["torch"] == torch.__version__
    assert m["versions"]["transformers"] and m["versions"]["peft"]
    assert "mlx" in m["versions"] and "trl" in m["versions"]      # None when not installed
    assert m["mindprint"]["version"]
    git = m["mindprint"]["git"]
    assert git is None or len(git["commit"]) == 40
    assert m["device"]["device"] == "cpu" and m["device"]["name"]
    assert m["seeds"] == {"train.seed": 3}
    assert m["config"] == yaml.safe_load((sft_run / "config.yaml").read_text())
    files = {f["role"]: f for f in m["data"]["files"]}
    assert files["train"]["sha256"] == sha(files["train"]["path"])
    assert files["eval"]["sha256"] == sha(files["eval"]["path"])
    tok = m["data"]["tokenized"]
    assert tok["train_examples"] == 20 and tok["eval_examples"] == 4
    assert len(tok["train_sha256"]) == 64 and tok["train_sha256"] != tok["eval_sha256"]
    model = m["model"]
    assert model["kind"] == "local" and model["path"] == str(Path(tiny_model_dir).resolve())
    assert model["files"]["model.safetensors"] == sha(Path(tiny_model_dir) / "model.safetensors")
    assert len(model["weights_sha256"]) == 64 and "tokenizer.json" in model["files"]
    run = m["run"]
    assert run["status"] == "completed" and run["stopped"] == "max_steps" and run["steps"] == 4
    assert run["started_at"] <= run["ended_at"] and run["error"] is None


def test_failed_and_interrupted_runs_are_recorded(tiny_model_dir, tmp_path, monkeypatch):
    train, ev = chat_files(tmp_path / "data")

    def boom(self):
        raise TrainingStopped("loss became nan at step 1")

    monkeypatch.setattr(Trainer, "train_step", boom)
    with pytest.raises(TrainingStopped):
        run_training(C.from_dict(small_config(tiny_model_dir, train, ev, str(tmp_path / "a"),
                                              eval_at_start=False)), log=lambda s: None)
    run = read_json(tmp_path / "a" / "manifest.json")["run"]
    assert run["status"] == "failed" and "nan" in run["error"] and run["ended_at"]

    def interrupt(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train_step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_training(C.from_dict(small_config(tiny_model_dir, train, ev, str(tmp_path / "b"),
                                              eval_at_start=False)), log=lambda s: None)
    assert read_json(tmp_path / "b" / "manifest.json")["run"]["status"] == "interrupted"


def test_reproduce_flags_a_changed_data_file(tiny_model_dir, tmp_path, capsys):
    train, ev = chat_files(tmp_path / "data")
    raw = small_config(tiny_model_dir, train, ev, str(tmp_path / "orig"), max_steps=2,
                       eval_at_start=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["train", str(cfg)]) == 0
    capsys.readouterr()

    # same data, same machine: nothing to warn about, and the same numbers
    assert main(["train", "--reproduce", str(tmp_path / "orig")]) == 0
    err = capsys.readouterr().err
    assert "match the original run" in err and "difference" not in err
    same = read_json(tmp_path / "orig-reproduce" / "summary.json")
    assert same["train_loss"] == read_json(tmp_path / "orig" / "summary.json")["train_loss"]
    assert read_json(tmp_path / "orig-reproduce" / "manifest.json")["reproduced_from"][
        "differences"] == []

    # one changed line in the training file: flagged by file and by tokenized data
    lines = Path(train).read_text().splitlines()
    lines[0] = lines[0].replace("Zoom out.", "Zoom in.")
    Path(train).write_text("\n".join(lines) + "\n")
    out = tmp_path / "again"
    assert main(["train", "--reproduce", str(tmp_path / "orig"), "--output-dir", str(out),
                 "--set", "train.lr=0.001"]) == 0
    err = capsys.readouterr().err
    assert f"data.train[0] {train}: contents changed" in err
    assert "tokenized train data (sha256)" in err
    assert "config train.lr: 0.005 → 0.001" in err
    assert "data.eval[0]" not in err                     # unchanged file: no warning
    diffs = read_json(out / "manifest.json")["reproduced_from"]["differences"]
    assert any("contents changed" in d for d in diffs)
    assert "reproduce: train_loss: original" in err


def test_reproduce_user_errors(tmp_path, capsys):
    assert main(["train", "--reproduce", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    (tmp_path / "old").mkdir()
    assert main(["train", "--reproduce", str(tmp_path / "old")]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    assert main(["train"]) == 2
    assert "give a config file" in capsys.readouterr().err


def test_differences_name_each_kind(sft_run):
    old = read_json(sft_run / "manifest.json")
    new = json.loads(json.dumps(old))
    new["versions"]["torch"] = "9.9.9"
    new["device"].update(device="cuda:0", name="NVIDIA H100")
    new["model"]["weights_sha256"] = "0" * 64
    new["data"]["files"][1]["sha256"] = None
    lines = M.differences(old, new)
    assert any(line.startswith("version of torch:") and "→ 9.9.9" in line for line in lines)
    assert "device: cpu → cuda:0" in lines
    assert any(line.startswith("model weights (sha256)") for line in lines)
    assert any(line.startswith("data.eval[0]") and "missing" in line for line in lines)
    assert M.differences(old, old) == []


def test_weight_hashes_are_cached_by_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("MINDPRINT_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"x" * 1000)
    assert M.cached_sha256(f) == sha(f)
    calls = []
    real = M.sha256_file
    # patched where cached_sha256 looks it up (mindprint.manifest.identity, since the split)
    monkeypatch.setattr(identity, "sha256_file", lambda p: calls.append(p) or real(p))
    assert M.cached_sha256(f) == sha(f) and calls == []           # a stat, no read
    f.write_bytes(b"y" * 1000)
    os.utime(f, ns=(1, 1))                                         # same size, other mtime
    assert M.cached_sha256(f) == sha(f) and len(calls) == 1


def test_tokenized_hash_covers_ids_masks_and_labels_not_caches():
    a = [Rendered([1, 2, 3], [0, 1, 1])]
    assert M.tokenized_sha256(a) != M.tokenized_sha256([Rendered([1, 2, 3], [0, 0, 1])])
    g = Group([5, 6], [[7, 8], [9]], [[1, 1], [1]], [True, False])
    h = M.tokenized_sha256([g])
    g.ref = torch.tensor([-1.0, -2.0])            # cached reference log-probs are not data
    assert M.tokenized_sha256([g]) == h
    g.labels = [False, True]
    assert M.tokenized_sha256([g]) != h


def test_a_broken_callback_never_stops_training(tiny_model_dir, tmp_path):
    class Broken:
        name = "broken"

        def on_log(self, row):
            raise RuntimeError("disk full")

    train, ev = chat_files(tmp_path / "data")
    logs: list[str] = []
    summary = run_training(C.from_dict(small_config(tiny_model_dir, train, ev, str(tmp_path / "r"),
                                                    max_steps=2, eval_at_start=False)),
                           log=logs.append, callbacks=[M.ManifestWriter(), Broken()])
    assert summary["steps"] == 2
    assert sum("broken: on_log failed (RuntimeError: disk full)" in s for s in logs) == 1
    assert read_json(tmp_path / "r" / "manifest.json")["run"]["status"] == "completed"
