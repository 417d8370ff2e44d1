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
    from mindprint.backends.torch.generate import generate
    from mindprint.backends.torch.load import load_for_inference

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


@pytest.mark.parametrize("offline", [None, "1", "true"])
def test_a_hub_id_not_in_the_cache_fails_at_once_offline(monkeypatch, tmp_path, offline):
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    if offline is None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)     # offline is the default
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    t0 = time.monotonic()
    with pytest.raises(ModelError) as e:
        resolve("SomeOrg/some-model-that-is-nowhere")
    assert time.monotonic() - t0 < 2.0                     # no retries against an absent network
    msg = str(e.value)
    assert "'SomeOrg/some-model-that-is-nowhere' is not in the local Hugging Face cache" in msg
    assert "hf download SomeOrg/some-model-that-is-nowhere" in msg     # how to get it
    assert "HF_HUB_OFFLINE=0" in msg                                   # how to allow the network
    assert str(tmp_path / "hub") in msg


def _fake_cache(root, repo_id: str, files: dict) -> str:
    """The Hugging Face cache layout: models--org--name/{refs/main, snapshots/<commit>/...}."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for name, text in files.items():
        (snap / name).write_text(text)
    return str(snap)


def test_a_cached_hub_id_loads_from_its_snapshot_without_the_network(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    snap = _fake_cache(tmp_path, "Org/cached-model", {"config.json": "{}"})
    ref = resolve("Org/cached-model")
    assert (ref.kind, ref.path, ref.spec) == ("hub", snap, "Org/cached-model")
    _fake_cache(tmp_path, "Org/half-model", {"tokenizer.json": "{}"})
    with pytest.raises(ModelError, match="only in part"):
        resolve("Org/half-model")


def test_hf_hub_offline_0_hands_the_id_to_transformers(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    ref = resolve("SomeOrg/some-model")
    assert ref.kind == "hub" and ref.path == "SomeOrg/some-model" and not ref.is_local


def test_dtype_defaults():
    import torch

    from mindprint.backends.torch.load import pick_dtype

    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert pick_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert pick_dtype("float16", torch.device("cpu")) == torch.float16
