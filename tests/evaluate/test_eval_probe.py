"""eval.every: voice fidelity during training, written to metrics.jsonl, training unchanged."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import PERSONA
from mindprint import config as C
from mindprint.evaluate.probe import VoiceProbe
from mindprint.training import run_training


def _losses(out: str) -> list:
    rows = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r], [r for r in rows if "content_similarity" in r]


def tiny_config(model_dir: str, train: str, ev: str, out: str, **train_over) -> dict:
    t = {"max_steps": 4, "batch_size": 2, "lr": 5e-3, "seed": 3, "eval_every": 2,
         "save_every": 2, "warmup_steps": 1, **train_over}
    return {"method": "sft", "model": model_dir, "output_dir": out, "train": t,
            "data": {"train": train, "eval": ev, "max_length": 96},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}


def test_content_similarity_during_training(tiny_model_dir, tiny_chat_files, tmp_path):
    train, ev = tiny_chat_files
    raw = tiny_config(tiny_model_dir, train, ev, str(tmp_path / "probe"), max_steps=4)
    raw["eval"] = {"every": 2, "prompts": str(PERSONA / "prompts_eval.jsonl"), "max_prompts": 2,
                   "max_new_tokens": 6}
    run_training(C.from_dict(raw), log=lambda s: None, voice_probe=VoiceProbe)
    losses, probes = _losses(str(tmp_path / "probe"))
    assert [p["step"] for p in probes] == [0, 2, 4]
    assert all(-1.0 <= p["content_similarity"] <= 1.0 and p["voice_prompts"] == 2 for p in probes)
    # every row has the voice verifier's voice_match or says why it is missing
    assert all("voice_match" in p or "voice_match_skipped" in p for p in probes)
    # the probe leaves the RNG alone: the same run without it has the same losses
    plain = tiny_config(tiny_model_dir, train, ev, str(tmp_path / "plain"), max_steps=4)
    run_training(C.from_dict(plain), log=lambda s: None)
    assert _losses(str(tmp_path / "plain"))[0] == losses
