"""Config: YAML → typed config, did-you-mean, ranges, overrides and their precedence."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mindprint import config as C
from mindprint.config.loading import from_dict
from mindprint.errors import ConfigError


def _write(tmp_path, data) -> str:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return str(p)


BASE = {"data": {"train": "t.jsonl"}}


def test_defaults_fill_everything(tmp_path):
    cfg = C.load(_write(tmp_path, BASE), use_env=False)
    assert cfg.method == "sft" and cfg.backend == "torch"
    assert cfg.model.name == C.DEFAULT_MODEL
    # relative to the config file's folder (tests/core/test_config_paths.py)
    assert cfg.data.train == [str(tmp_path / "t.jsonl")] and cfg.data.eval == []
    assert cfg.train.eval_batch_size == cfg.train.batch_size
    assert cfg.lora.targets == "attn_mlp"


def test_model_shorthand_string(tmp_path):
    cfg = C.load(_write(tmp_path, {**BASE, "model": "/some/dir"}), use_env=False)
    assert cfg.model.name == "/some/dir" and cfg.model.dtype == "auto"


@pytest.mark.parametrize("raw,expect", [
    ({"train": {"learnin_rate": 1}}, "did you mean 'train.lr'"),
    ({"train": {"learning_rate": 1}}, "did you mean 'train.lr'"),
    ({"train": {"batchsize": 1}}, "did you mean 'train.batch_size'"),
    ({"lora": {"rnk": 4}}, "did you mean 'lora.r'"),
    ({"lora": {"lora_alpha": 4}}, "did you mean 'lora.alpha'"),
    ({"outptu_dir": "x"}, "did you mean 'output_dir'"),
    ({"data": {"train": "t", "max_len": 9}}, "did you mean 'data.max_length'"),
    # names people bring from TRL / the HF Trainer / LLaMA-Factory / mlx-lm, in a section or flat
    ({"train": {"num_train_epochs": 3}}, "did you mean 'train.epochs'"),
    ({"num_train_epochs": 3}, "did you mean 'train.epochs'"),
    ({"per_device_train_batch_size": 8}, "did you mean 'train.batch_size'"),
    ({"train": {"gradient_accumulation_steps": 2}}, "did you mean 'train.grad_accum'"),
    ({"learning_rate": 1e-4}, "did you mean 'train.lr'"),
    ({"train": {"epoch": 2}}, "did you mean 'train.epochs'"),
    ({"train": {"save_total_limit": 2}}, "did you mean 'train.keep_last'"),
    ({"cutoff_len": 512}, "did you mean 'data.max_length'"),
    ({"lora": {"lora_rank": 8}}, "did you mean 'lora.r'"),
])
def test_unknown_key_suggests(tmp_path, raw, expect):
    data = {**BASE, **raw}
    if "data" in raw:
        data["data"] = raw["data"]
    with pytest.raises(ConfigError) as e:
        C.load(_write(tmp_path, data), use_env=False)
    assert "unknown key" in str(e.value) and expect in str(e.value)


@pytest.mark.parametrize("section,key,value,needle", [
    ("train", "lr", -1, "train.lr"),
    ("train", "batch_size", 0, "train.batch_size"),
    ("train", "schedule", "cosin", "train.schedule"),
    ("lora", "dropout", 1.5, "lora.dropout"),
    ("lora", "targets", "everything", "lora.targets"),
    ("data", "max_error_rate", 2, "data.max_error_rate"),
])
def test_range_and_choice_errors_name_the_key(tmp_path, section, key, value, needle):
    data = {**BASE}
    data[section] = {**data.get(section, {}), key: value}
    with pytest.raises(ConfigError) as e:
        C.load(_write(tmp_path, data), use_env=False)
    assert needle in str(e.value)


def test_epochs_is_a_positive_number_and_max_steps_keeps_its_default(tmp_path):
    cfg = C.load(_write(tmp_path, {**BASE, "train": {"epochs": 1.5}}), use_env=False)
    assert cfg.train.epochs == 1.5 and cfg.train.max_steps == 200
    assert "max_steps" not in cfg.train.model_fields_set       # so epochs decides at setup
    with pytest.raises(ConfigError, match="train.epochs"):
        C.load(_write(tmp_path, {**BASE, "train": {"epochs": 0}}), use_env=False)


def test_missing_required_train_data(tmp_path):
    with pytest.raises(ConfigError, match="missing required key 'data'"):
        C.load(_write(tmp_path, {"method": "sft"}), use_env=False)


def test_bad_yaml_names_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("data:\n  train: [a\nmethod: sft\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        C.load(str(p), use_env=False)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        C.load(str(tmp_path / "nope.yaml"))
    (tmp_path / "e.yaml").write_text("")
    with pytest.raises(ConfigError, match="empty"):
        C.load(str(tmp_path / "e.yaml"))


def test_set_overrides_and_types(tmp_path):
    cfg = C.load(_write(tmp_path, BASE), ["train.lr=1e-3", "lora.targets=[q_proj, v_proj]",
                                          "model.name=foo/bar", "train.max_minutes=null"],
                 use_env=False)
    assert cfg.train.lr == 1e-3 and cfg.lora.targets == ["q_proj", "v_proj"]
    assert cfg.model.name == "foo/bar" and cfg.train.max_minutes is None


def test_set_unknown_key_suggests(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'train.max_steps'"):
        C.load(_write(tmp_path, BASE), ["train.max_step=3"], use_env=False)
    with pytest.raises(ConfigError, match="expected key=value"):
        C.load(_write(tmp_path, BASE), ["train.lr"], use_env=False)


def test_precedence_yaml_env_set(tmp_path, monkeypatch):
    path = _write(tmp_path, {**BASE, "train": {"lr": 0.1, "max_steps": 7}})
    monkeypatch.setenv("MINDPRINT_TRAIN__LR", "0.2")
    monkeypatch.setenv("MINDPRINT_METHOD", "sft")
    cfg = C.load(path)
    assert cfg.train.lr == 0.2 and cfg.train.max_steps == 7
    cfg = C.load(path, ["train.lr=0.3"])
    assert cfg.train.lr == 0.3
    monkeypatch.setenv("MINDPRINT_TRAIN__LRR", "0.2")
    with pytest.raises(ConfigError, match="environment MINDPRINT_TRAIN__LRR.*did you mean 'train.lr'"):
        C.load(path)


def test_process_variables_are_not_config_keys(tmp_path, monkeypatch):
    """The documented MINDPRINT_* variables that set up the process (cache, MLX BLAS, torchrun
    timeout, malloc tuning, web UI home and token) never reach the config as unknown keys."""
    path = _write(tmp_path, BASE)
    for name, value in [("MINDPRINT_CACHE", "/tmp/c"), ("MINDPRINT_HOME", "/tmp/h"),
                        ("MINDPRINT_MLX_BLAS", "off"), ("MINDPRINT_DIST_TIMEOUT_MIN", "5"),
                        ("MINDPRINT_MALLOC_TUNING", "0"), ("MINDPRINT_TOKEN", "s3cret")]:
        monkeypatch.setenv(name, value)
    assert C.env_overrides() == []
    assert C.load(path) == C.load(path, use_env=False)
    monkeypatch.setenv("MINDPRINT_TRAIN__LR", "0.2")
    assert C.env_overrides() == [("train.lr", 0.2)]


def test_dump_round_trips(tmp_path):
    cfg = C.load(_write(tmp_path, BASE), ["lora.r=4", "output_dir=runs/here"], use_env=False)
    again = C.from_dict(yaml.safe_load(C.dump_yaml(cfg)))
    # the same config, its CWD-relative output_dir written as an absolute path
    assert again == cfg.model_copy(update={"output_dir": str(Path.cwd() / "runs" / "here")})


def test_describe_covers_every_leaf_key():
    keys = {k for k, _, _ in C.describe()}
    for k in ("method", "backend", "model.name", "data.train", "data.eval", "train.max_steps",
              "train.batch_size", "train.grad_accum", "train.lr", "train.seed", "train.eval_every",
              "train.save_every", "train.keep_last", "output_dir", "lora.r", "lora.alpha",
              "lora.dropout", "lora.targets", "lora.dora", "lora.rslora"):
        assert k in keys
    assert all(meaning for _, _, meaning in C.describe())


@pytest.mark.parametrize("section,key", [("train", "max_steps"), ("train", "lr"),
                                         ("lora", "r"), ("eval", "max_new_tokens")])
def test_true_or_false_is_not_a_number(tmp_path, section, key):
    """YAML's ``true``/``yes`` is a bool, which pydantic alone would read as 1."""
    with pytest.raises(ConfigError, match=rf"{section}\.{key}: expected a number, got true/false"):
        C.load(_write(tmp_path, {**BASE, section: {key: True}}))


@pytest.mark.parametrize("raw, named", [
    ({"method": "dpo", "data": {"train": ["a.jsonl"], "packing": True}}, "method dpo trains"),
    ({"method": "sft", "data": {"packing": True}, "curriculum": {"topics": [
        {"name": "x", "data": ["a.jsonl"], "method": "kto"},
        {"name": "y", "data": ["b.jsonl"], "method": "orpo"}]}}, "methods kto and orpo train"),
])
def test_packing_asked_for_a_method_that_cannot_pack_is_named(raw, named):
    # data.packing: true is not silently ignored where the method trains one example per row
    with pytest.raises(ConfigError) as err:
        from_dict(raw, "c.yaml")
    assert str(err.value) == (f"c.yaml: data.packing: true, but {named} one example per row "
                              "(packing is for sft and kl_sft); set data.packing: auto (the "
                              "default) or false")
    for ok in ({**raw, "data": {**raw["data"], "packing": "auto"}},
               {"method": "kl_sft", "data": {"train": ["a.jsonl"], "packing": True}}):
        assert from_dict(ok, "c.yaml").data.packing == ok["data"]["packing"]
