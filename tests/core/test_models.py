"""Model specs: alias → cached converted dir (mlx-ready), local dirs, GGUF paths, hub ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mindprint.errors import ModelError
from mindprint.models import resolve


def test_alias_converts_once_into_cache(bundled_model_dir):
    d = Path(bundled_model_dir)
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["rope_theta"] == 100000.0                 # top-level, for mlx-lm
    assert "quantization_config" not in cfg
    assert (d / "model.safetensors").exists() and (d / "tokenizer.json").exists()
    again = resolve("smollm2-135m-instruct")
    assert again.path == bundled_model_dir and again.kind == "alias"


def test_bundled_model_answers_sensibly(bundled_model_dir):
    from mindprint.backends.torch.model import generate, load_for_inference

    model, tok, _ = load_for_inference(None, None)
    (answer,) = generate(model, tok, [[{"role": "user", "content": "What is the capital of France?"}]],
                         max_new_tokens=12)
    assert "Paris" in answer


def test_local_dir_and_errors(tiny_model_dir, tmp_path):
    assert resolve(tiny_model_dir).kind == "local"
    with pytest.raises(ModelError, match="no such GGUF"):
        resolve(str(tmp_path / "x.gguf"))
    with pytest.raises(ModelError, match="not a model directory"):
        resolve(str(tmp_path))
    with pytest.raises(ModelError, match="no such model directory"):
        resolve(str(tmp_path / "missing"))
    with pytest.raises(ModelError, match="unknown model 'smollm3'"):
        resolve("smollm3")


def test_hub_id_is_passed_through_and_fails_cleanly_offline(monkeypatch):
    ref = resolve("SomeOrg/some-model")
    assert ref.kind == "hub" and ref.path == "SomeOrg/some-model"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from mindprint.backends.torch.model import load_base

    with pytest.raises(ModelError, match="SomeOrg/some-model"):
        load_base(ref)


def test_dtype_defaults():
    import torch

    from mindprint.backends.torch.model import pick_dtype

    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert pick_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert pick_dtype("float16", torch.device("cpu")) == torch.float16
