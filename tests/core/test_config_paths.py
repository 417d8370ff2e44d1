"""Relative paths in a config file are read from the file's folder (mindprint.config_paths)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml

from conftest import EXAMPLES, REPO
from mindprint import config as C
from mindprint.config_paths import ConfigPathWarning


@pytest.fixture
def project(tmp_path):
    """A project folder as a user lays it out: configs/ beside data/, a model dir, elsewhere a
    working directory with nothing in it."""
    root = tmp_path / "project"
    (root / "configs").mkdir(parents=True)
    (root / "data").mkdir()
    for name in ("train.jsonl", "held out.jsonl", "prompts.txt"):
        (root / "data" / name).write_text("{}\n")
    (root / "models" / "base").mkdir(parents=True)
    (root / "models" / "base" / "config.json").write_text("{}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return root, elsewhere


def _write(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def test_inputs_are_read_beside_the_config_outputs_from_the_cwd(project, monkeypatch):
    root, elsewhere = project
    cfg_file = _write(root / "configs" / "run.yaml", {
        "model": "../models/base",
        "data": {"train": "../data/train.jsonl", "eval": ["../data/held out.jsonl"]},
        "eval": {"prompts": "../data/prompts.txt", "output_dir": "reports"},
        "output_dir": "runs/mine"})
    monkeypatch.chdir(elsewhere)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                     # nothing to warn about
        cfg = C.load(cfg_file, use_env=False)
    assert cfg.data.train == [str(root / "data" / "train.jsonl")]
    assert cfg.data.eval == [str(root / "data" / "held out.jsonl")]
    assert cfg.eval.prompts == [str(root / "data" / "prompts.txt")]
    assert cfg.model.name == str(root / "models" / "base")
    assert cfg.output_dir == "runs/mine" and cfg.eval.output_dir == "reports"   # CWD-relative


def test_set_and_flags_stay_relative_to_the_cwd(project, monkeypatch):
    root, elsewhere = project
    cfg_file = _write(root / "configs" / "run.yaml", {"data": {"train": "../data/train.jsonl"}})
    monkeypatch.chdir(elsewhere)
    cfg = C.load(cfg_file, ["data.eval=mine.jsonl"], use_env=False,
                 flags=[("model.name", "some/dir")])
    assert cfg.data.eval == ["mine.jsonl"] and cfg.model.name == "some/dir"


def test_hub_ids_aliases_and_absolute_paths_are_left_alone(project, tmp_path):
    root, _ = project
    absolute = str(tmp_path / "abs.jsonl")
    for model in ("HuggingFaceTB/SmolLM2-360M-Instruct", "smollm2-135m-instruct"):
        cfg_file = _write(root / "configs" / "c.yaml", {"model": {"name": model},
                                                        "data": {"train": absolute}})
        cfg = C.load(cfg_file, use_env=False)
        assert (cfg.model.name, cfg.data.train) == (model, [absolute])


def test_hub_dataset_ids_in_data_keys_are_left_alone(project, monkeypatch, tmp_path):
    # `data.train: org/name` names a Hub dataset unless such a path exists; a relative file path
    # with a suffix, or with more than one folder, is still a path beside the config
    root, elsewhere = project
    monkeypatch.chdir(elsewhere)
    cfg_file = _write(root / "configs" / "hub.yaml", {"data": {
        "train": "someone/their-dataset", "eval": ["sub/held.jsonl", "a/b/c"]}})
    cfg = C.load(cfg_file, use_env=False)
    assert cfg.data.train == ["someone/their-dataset"]
    assert cfg.data.eval == [str(root / "configs" / "sub" / "held.jsonl"),
                             str(root / "configs" / "a" / "b" / "c")]
    from mindprint.config_paths import absolute_paths
    assert absolute_paths(cfg.to_dict())["data"]["train"] == ["someone/their-dataset"]
    # ... and a folder of that name beside the config is a path after all
    (root / "configs" / "someone" / "their-dataset").mkdir(parents=True)
    cfg = C.load(cfg_file, use_env=False)
    assert cfg.data.train == [str(root / "configs" / "someone" / "their-dataset")]


def test_curriculum_topic_files_are_resolved_too(project, monkeypatch):
    root, elsewhere = project
    cfg_file = _write(root / "configs" / "cur.yaml", {"curriculum": {"topics": [
        {"name": "a", "data": "../data/train.jsonl", "eval": ["../data/held out.jsonl"]},
        {"name": "b"}]}})
    monkeypatch.chdir(elsewhere)
    topics = C.load(cfg_file, use_env=False).curriculum.topics
    assert topics[0].data == [str(root / "data" / "train.jsonl")]
    assert topics[0].eval == [str(root / "data" / "held out.jsonl")] and topics[1].data == []


def test_old_cwd_relative_paths_still_load_with_a_warning(project, monkeypatch):
    root, _ = project
    cfg_file = _write(root / "configs" / "old.yaml", {"data": {"train": "data/train.jsonl"}})
    monkeypatch.chdir(root)                       # where the old config used to be run from
    with pytest.warns(ConfigPathWarning, match=r"data.train 'data/train.jsonl' is not in the "
                      r"config's folder.*write '../data/train.jsonl'"):
        cfg = C.load(cfg_file, use_env=False)
    assert cfg.data.train == [str(root / "data" / "train.jsonl")]


def test_a_missing_file_is_looked_for_beside_the_config(project, monkeypatch):
    root, elsewhere = project
    cfg_file = _write(root / "configs" / "c.yaml", {"data": {"train": "nope.jsonl"}})
    monkeypatch.chdir(elsewhere)
    assert C.load(cfg_file, use_env=False).data.train == [str(root / "configs" / "nope.jsonl")]


def test_the_resolved_config_loads_back_the_same_from_anywhere(project, monkeypatch, tmp_path):
    root, elsewhere = project
    cfg_file = _write(root / "configs" / "run.yaml", {
        "model": "../models/base", "data": {"train": "../data/train.jsonl"},
        "train": {"epochs": 2}, "output_dir": "runs/x"})
    monkeypatch.chdir(root)
    cfg = C.load(cfg_file, ["data.eval=data/held out.jsonl"], use_env=False)
    dumped = tmp_path / "dumped" / "config.yaml"
    dumped.parent.mkdir()
    dumped.write_text(C.dump_yaml(cfg))
    monkeypatch.chdir(elsewhere)
    again = C.load(dumped, use_env=False)
    assert again.output_dir == str(root / "runs" / "x")
    assert again.data.eval == [str(root / "data" / "held out.jsonl")]
    expected = {**cfg.to_dict(), "output_dir": str(root / "runs" / "x"),
                "data": {**cfg.to_dict()["data"], "eval": [str(root / "data" / "held out.jsonl")]}}
    assert again.to_dict() == expected


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_every_example_config_loads_from_any_directory(example, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = C.load(EXAMPLES / example, use_env=False)
    files = cfg.data.train + cfg.data.eval + cfg.eval.prompts + cfg.eval.chat + \
        cfg.eval.preference
    if cfg.curriculum:
        files += [f for t in cfg.curriculum.topics for f in t.data + t.eval]
    assert files and all(Path(f).is_file() for f in files), files
    assert all(Path(f).is_relative_to(EXAMPLES / "data") for f in files)
    assert not Path(cfg.output_dir).is_absolute() and cfg.output_dir.startswith("runs/")


def test_the_repo_makefile_demo_runs_the_quickstart_from_the_repo_root():
    # `make demo` expects runs/quickstart under the repository root: output_dir is CWD-relative
    assert "mindprint train examples/quickstart.yaml" in (REPO / "Makefile").read_text()
    assert C.load(EXAMPLES / "quickstart.yaml", use_env=False).output_dir == "runs/quickstart"
