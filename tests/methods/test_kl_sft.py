"""KL-regularised SFT through the one PyTorch loop, on the tiny random model.

λ = 0 must be plain SFT exactly; λ > 0 must keep the tuned model closer to the base model on
held-out data than plain SFT after the same steps; CE and KL are logged separately.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_config
from mindprint import config as C
from mindprint.backends.torch.backend import TorchBackend
from mindprint.backends.torch.load import load_for_inference
from mindprint.training import run_training
from mindprint.data.jsonl import load_many
from mindprint.data.render import render_chat_records
from mindprint.methods.kl_sft import kl_to_base_on


def _run(method, tiny_model_dir, files, out, lam=0.5, **over):
    train, ev = files
    raw = tiny_config(tiny_model_dir, train, ev, str(out), **over)
    raw["method"] = method
    raw["kl"] = {"lambda": lam, "tau": 1.0}
    return run_training(C.from_dict(raw), log=lambda _: None)


def _adapter(out) -> dict:
    return load_file(str(Path(out) / "adapter" / "adapter_model.safetensors"))


def test_lambda_zero_is_plain_sft_exactly(tiny_model_dir, tiny_chat_files, tmp_path):
    a = _run("sft", tiny_model_dir, tiny_chat_files, tmp_path / "sft", max_steps=3, save_every=0)
    b = _run("kl_sft", tiny_model_dir, tiny_chat_files, tmp_path / "kl0", lam=0.0, max_steps=3,
             save_every=0)
    wa, wb = _adapter(tmp_path / "sft"), _adapter(tmp_path / "kl0")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert a["train_loss"] == b["train_loss"]
    assert a["final_eval_loss"] == b["final_eval_loss"]


def test_kl_sft_logs_ce_and_kl_and_stays_closer_to_base(tiny_model_dir, tiny_chat_files, tmp_path):
    steps = 8
    _run("sft", tiny_model_dir, tiny_chat_files, tmp_path / "sft", max_steps=steps, save_every=0,
         lr=2e-2, eval_every=4)
    s = _run("kl_sft", tiny_model_dir, tiny_chat_files, tmp_path / "kl", lam=2.0, max_steps=steps,
             save_every=0, lr=2e-2, eval_every=4)
    rows = [json.loads(x) for x in (tmp_path / "kl" / "metrics.jsonl").read_text().splitlines()]
    step_rows = [r for r in rows if "loss" in r]
    assert all("ce" in r and "kl" in r for r in step_rows)
    # loss = ce + λ·kl per token
    last = step_rows[-1]
    assert last["loss"] == pytest.approx(last["ce"] + 2.0 * last["kl"], rel=1e-5)
    assert step_rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)     # LoRA B = 0: tuned == base
    assert "eval_kl" in s["final_eval_metrics"]

    # held-out KL(base ‖ tuned), measured the same way for both adapters
    train, ev = tiny_chat_files
    kls = {}
    for name in ("sft", "kl"):
        model, tok, _ = load_for_inference(tiny_model_dir, str(tmp_path / name / "adapter"))
        recs = load_many([ev], "chat").records
        examples, _ = render_chat_records(tok, recs, 96)
        kls[name] = kl_to_base_on(TorchBackend(model, tok), examples)
    assert kls["sft"] > 0
    assert kls["kl"] < kls["sft"]
    # the eval metric the loop logs is the same quantity
    assert s["final_eval_metrics"]["eval_kl"] == pytest.approx(kls["kl"], rel=1e-3)


def test_kl_config_keys_and_suggestion():
    from mindprint.errors import ConfigError

    cfg = C.from_dict({"data": {"train": "x.jsonl"}, "method": "kl_sft",
                       "kl": {"lambda": 0.3, "tau": 2.0}})
    assert cfg.kl.lambda_ == 0.3 and cfg.to_dict()["kl"] == {"lambda": 0.3, "tau": 2.0}
    with pytest.raises(ConfigError, match="did you mean 'kl.lambda'"):
        C.from_dict({"data": {"train": "x.jsonl"}, "kl": {"lamda": 0.3}})
    with pytest.raises(ConfigError, match="kl.lambda"):
        C.from_dict({"data": {"train": "x.jsonl"}, "kl": {"lambda": -1}})
