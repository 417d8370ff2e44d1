"""MINDPRINT_<SECTION>__<KEY> environment variables: defaults < YAML < environment < --set."""

from __future__ import annotations

import pytest
import yaml

from mindprint import config as C
from mindprint.cli import main
from mindprint.errors import ConfigError


def write(tmp_path, raw) -> str:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    return str(p)


def test_each_layer_overrides_the_one_below(tmp_path, monkeypatch):
    path = write(tmp_path, {"data": {"train": "t.jsonl"}, "train": {"lr": 0.1, "batch_size": 2,
                                                                    "max_steps": 7}})
    cfg = C.load(path, use_env=False)
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.max_steps, cfg.train.seed) == \
        (0.1, 2, 7, 0)                                       # YAML over defaults
    monkeypatch.setenv("MINDPRINT_TRAIN__LR", "0.2")
    monkeypatch.setenv("MINDPRINT_TRAIN__BATCH_SIZE", "3")
    monkeypatch.setenv("MINDPRINT_TRAIN__SEED", "9")
    cfg = C.load(path)
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.max_steps, cfg.train.seed) == \
        (0.2, 3, 7, 9)                                       # environment over YAML and defaults
    cfg = C.load(path, ["train.lr=0.3"])
    assert (cfg.train.lr, cfg.train.batch_size) == (0.3, 3)  # --set over environment


def test_nested_top_level_and_list_keys(tmp_path, monkeypatch):
    path = write(tmp_path, {"data": {"train": "t.jsonl"}, "model": "some/dir"})
    monkeypatch.setenv("MINDPRINT_TRAIN__EARLY_STOPPING__PATIENCE", "3")
    monkeypatch.setenv("MINDPRINT_MODEL__DTYPE", "bfloat16")     # with the `model: NAME` shorthand
    monkeypatch.setenv("MINDPRINT_OUTPUT_DIR", "runs/from-env")
    monkeypatch.setenv("MINDPRINT_REPORT_TO", "[tensorboard, mlflow]")
    monkeypatch.setenv("MINDPRINT_DATA__EVAL", "[a.jsonl, b.jsonl]")
    monkeypatch.setenv("MINDPRINT_CACHE", "/tmp/not-a-config-key")  # Mindprint's own, not config
    cfg = C.load(path)
    assert cfg.train.early_stopping.patience == 3
    assert cfg.model.name == "some/dir" and cfg.model.dtype == "bfloat16"
    assert cfg.output_dir == "runs/from-env"
    assert cfg.report_to == ["tensorboard", "mlflow"]
    assert cfg.data.eval == ["a.jsonl", "b.jsonl"]
    monkeypatch.setenv("MINDPRINT_REPORT_TO", "trackio")          # a single name works too
    assert C.load(path).report_to == ["trackio"]


def test_bad_environment_values_name_the_variable(tmp_path, monkeypatch):
    path = write(tmp_path, {"data": {"train": "t.jsonl"}})
    monkeypatch.setenv("MINDPRINT_REPORT_TO", "wandb")
    with pytest.raises(ConfigError, match="report_to"):
        C.load(path)
    monkeypatch.delenv("MINDPRINT_REPORT_TO")
    monkeypatch.setenv("MINDPRINT_LORA__RANK", "8")
    with pytest.raises(ConfigError, match="environment MINDPRINT_LORA__RANK: unknown key "
                                          "'lora.rank'; did you mean 'lora.r'"):
        C.load(path)


def test_config_show_reflects_the_environment(tmp_path, monkeypatch, capsys):
    path = write(tmp_path, {"data": {"train": "t.jsonl"}, "train": {"lr": 0.1}})
    monkeypatch.setenv("MINDPRINT_TRAIN__LR", "0.25")
    assert main(["config", "show", path]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["lr"] == 0.25
    assert main(["config", "show", path, "--set", "train.lr=0.5"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["lr"] == 0.5
