"""The PyTorch loop on a tiny random model: exact accumulation, exact resume, stops, outputs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import start_then_sigkill, tiny_config
from mindprint import config as C
from mindprint.training import Trainer, run_training
from mindprint.errors import MindprintError, TrainingStopped
from mindprint.methods import get_method


def _cfg(raw):
    return C.from_dict(raw)


def _adapter(run_dir) -> dict:
    return load_file(str(Path(run_dir) / "adapter" / "adapter_model.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_outputs_and_plain_peft_load(tiny_model_dir, tiny_chat_files, tmp_path):
    train, ev = tiny_chat_files
    out = tmp_path / "run"
    summary = run_training(_cfg(tiny_config(tiny_model_dir, train, ev, str(out))))
    for name in ("config.yaml", "metrics.jsonl", "metrics.csv", "summary.json", "adapter"):
        assert (out / name).exists(), name
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert all(k in steps[0] for k in ("lr", "grad_norm", "tokens_per_s"))
    assert [r["step"] for r in rows if "eval_loss" in r] == [0, 2, 4]
    s = json.loads((out / "summary.json").read_text())
    for k in ("steps", "train_loss", "first_eval_loss", "final_eval_loss", "tokens_per_s",
              "peak_memory_mb", "wall_s", "setup_s"):
        assert s[k] is not None, k
    assert s["final_eval_loss"] < s["first_eval_loss"]
    assert summary["steps"] == 4
    # the adapter loads with plain PEFT, no Mindprint involved
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, str(out / "adapter"))
    assert any("lora_A" in n for n, _ in model.named_parameters())
    # the config written is the resolved one and loads back
    again = C.load(str(out / "config.yaml"), use_env=False)
    assert again.train.max_steps == 4


def _packing(raw: dict, on: bool) -> dict:
    """``data.packing`` set explicitly, with rows long enough for four of these examples."""
    return {**raw, "data": {**raw["data"], "packing": on, "max_length": 256}}


@pytest.fixture
def always_pack(monkeypatch):
    """Pack every micro-batch of two or more examples (these examples have equal lengths, so
    plan_rows would rightly keep them padded: packing them would save nothing)."""
    monkeypatch.setattr("mindprint.data.packing.MIN_SAVING", -100.0)


@pytest.mark.parametrize("lr_schedule,packing", [("cosine", True), ("constant", False)])
def test_accumulation_is_exact(tiny_model_dir, tiny_chat_files, tmp_path, lr_schedule, packing,
                               always_pack):
    """batch 4 × accum 1 and batch 1 × accum 4 give the same update (token-weighted loss); with
    packing, four examples share a row in the first run and have one each in the second."""
    train, ev = tiny_chat_files
    a = tiny_config(tiny_model_dir, train, ev, str(tmp_path / "a"), batch_size=4, grad_accum=1,
                    max_steps=3, schedule=lr_schedule)
    b = tiny_config(tiny_model_dir, train, ev, str(tmp_path / "b"), batch_size=1, grad_accum=4,
                    max_steps=3, schedule=lr_schedule)
    ra, rb = run_training(_cfg(_packing(a, packing))), run_training(_cfg(_packing(b, packing)))
    assert _max_diff(_adapter(tmp_path / "a"), _adapter(tmp_path / "b")) < 1e-5
    assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-5)


def test_packed_run_equals_unpacked_run(tiny_model_dir, tiny_chat_files, tmp_path, always_pack):
    """data.packing changes the layout, not the update: the same adapter and losses."""
    train, ev = tiny_chat_files
    runs, said = {}, []
    for on in (True, False):
        raw = tiny_config(tiny_model_dir, train, ev, str(tmp_path / str(on)), batch_size=4,
                          max_steps=3, eval_every=3)
        runs[on] = run_training(_cfg(_packing(raw, on)), log=said.append)
    assert any("data.packing: on" in s and "5 of 5 micro-batches packed" in s for s in said)
    assert _max_diff(_adapter(tmp_path / "True"), _adapter(tmp_path / "False")) < 1e-5
    for k in ("train_loss", "final_eval_loss"):
        assert runs[True][k] == pytest.approx(runs[False][k], rel=1e-5), k


def test_resume_equals_uninterrupted(tiny_model_dir, tiny_chat_files, tmp_path, always_pack):
    train, ev = tiny_chat_files
    raw = _packing(tiny_config(tiny_model_dir, train, ev, str(tmp_path / "full"), max_steps=6,
                               save_every=3), True)
    raw["lora"]["dropout"] = 0.1   # RNG-dependent: resume must restore the RNG too
    run_training(_cfg(raw))
    # a run "killed" right after its step-3 checkpoint: copy it without what came later
    part = tmp_path / "part"
    part.mkdir()
    shutil.copytree(tmp_path / "full" / "checkpoints" / "step-0000003",
                    part / "checkpoints" / "step-0000003")
    shutil.copy(tmp_path / "full" / "metrics.jsonl", part / "metrics.jsonl")
    raw2 = dict(raw, output_dir=str(part))
    s = run_training(_cfg(raw2), resume=True)
    assert s["steps"] == 6
    assert _max_diff(_adapter(tmp_path / "full"), _adapter(part)) <= 1e-6
    steps = [json.loads(l)["step"] for l in (part / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(l)]
    assert steps == [1, 2, 3, 4, 5, 6]          # no duplicated rows after resume


def test_sigkill_then_resume_equals_uninterrupted(tiny_model_dir, tiny_chat_files, tmp_path):
    """The real thing: a training process killed with SIGKILL, then `mindprint train --resume`."""
    train, ev = tiny_chat_files
    import yaml

    def write(name, **over):
        raw = tiny_config(tiny_model_dir, train, ev, str(tmp_path / name), max_steps=40,
                          save_every=5, eval_every=0, **over)
        p = tmp_path / f"{name}.yaml"
        p.write_text(yaml.safe_dump(raw))
        return p

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cli = [sys.executable, "-m", "mindprint.cli", "train"]
    full = write("full")
    subprocess.run(cli + [str(full)], check=True, env=env, capture_output=True)
    killed = write("killed")
    start_then_sigkill(cli + [str(killed)], env, tmp_path / "killed" / "checkpoints")
    assert not (tmp_path / "killed" / "adapter").exists(), "killed too late to test anything"
    r = subprocess.run(cli + [str(killed), "--resume"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stderr
    assert _max_diff(_adapter(tmp_path / "full"), _adapter(tmp_path / "killed")) <= 1e-6


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_model_dir, tiny_chat_files, tmp_path,
                                                       monkeypatch):
    train, ev = tiny_chat_files
    cfg = _cfg(tiny_config(tiny_model_dir, train, ev, str(tmp_path / "r"), max_steps=6,
                           save_every=2))
    method = get_method(cfg)
    real = method.micro_loss
    calls = {"n": 0}

    def poisoned(backend, examples, norm):
        calls["n"] += 1
        loss, m = real(backend, examples, norm)
        return (loss * float("nan") if calls["n"] > 3 else loss), m

    monkeypatch.setattr(method, "micro_loss", poisoned)
    t = Trainer(cfg, method)
    t.setup()
    with pytest.raises(TrainingStopped) as e:
        t.train()
    msg = str(e.value)
    assert "nan" in msg and "step 4" in msg and "step-0000002" in msg
    ck = load_file(str(tmp_path / "r" / "checkpoints" / "step-0000002" / "trainable.safetensors"))
    assert all(torch.isfinite(v).all() for v in ck.values())
    assert not (tmp_path / "r" / "checkpoints" / "step-0000004").exists()


def test_time_cap_saves_and_stops(tiny_model_dir, tiny_chat_files, tmp_path):
    train, ev = tiny_chat_files
    s = run_training(_cfg(tiny_config(tiny_model_dir, train, ev, str(tmp_path / "r"),
                                      max_steps=50, max_minutes=1e-6, save_every=0)))
    assert s["stopped"] == "time_cap" and s["steps"] == 1
    assert (tmp_path / "r" / "adapter" / "adapter_model.safetensors").exists()
    assert (tmp_path / "r" / "checkpoints" / "step-0000001" / "state.json").exists()


def test_early_stopping_on_plateau(tiny_model_dir, tiny_chat_files, tmp_path):
    train, ev = tiny_chat_files
    raw = tiny_config(tiny_model_dir, train, ev, str(tmp_path / "r"), max_steps=40, eval_every=1,
                      lr=1e-7, save_every=0)
    raw["train"]["early_stopping"] = {"patience": 2, "min_delta": 0.5, "min_steps": 3}
    s = run_training(_cfg(raw))
    assert s["stopped"] == "early_stopping" and 3 <= s["steps"] < 40


def test_existing_run_needs_resume_or_overwrite(tiny_model_dir, tiny_chat_files, tmp_path):
    train, ev = tiny_chat_files
    raw = tiny_config(tiny_model_dir, train, ev, str(tmp_path / "r"), max_steps=1)
    run_training(_cfg(raw))
    with pytest.raises(MindprintError, match="already holds a run"):
        run_training(_cfg(raw))
    assert run_training(_cfg(raw), overwrite=True)["steps"] == 1


def test_sigint_saves_checkpoint_and_exits(tiny_model_dir, tiny_chat_files, tmp_path):
    import yaml

    train, ev = tiny_chat_files
    raw = tiny_config(tiny_model_dir, train, ev, str(tmp_path / "r"), max_steps=100000,
                      save_every=0, eval_every=0)
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    proc = subprocess.Popen([sys.executable, "-m", "mindprint.cli", "train", str(p)],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    metrics = tmp_path / "r" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("loss") >= 2):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    assert list((tmp_path / "r" / "checkpoints").glob("step-*/state.json"))
    assert (tmp_path / "r" / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.parametrize("lora", [{"dora": True}, {"rslora": True, "targets": ["q_proj", "v_proj"]},
                                  {"targets": "all_linear"}])
def test_lora_variants_train_and_save(tiny_model_dir, tiny_chat_files, tmp_path, lora):
    train, ev = tiny_chat_files
    raw = tiny_config(tiny_model_dir, train, ev, str(tmp_path / "r"), max_steps=2)
    raw["lora"].update(lora)
    s = run_training(_cfg(raw))
    assert s["final_eval_loss"] < s["first_eval_loss"]
    acfg = json.loads((tmp_path / "r" / "adapter" / "adapter_config.json").read_text())
    assert acfg["use_dora"] == lora.get("dora", False)
    assert acfg["use_rslora"] == lora.get("rslora", False)
    if isinstance(lora.get("targets"), list):
        assert sorted(acfg["target_modules"]) == ["q_proj", "v_proj"]


def test_unknown_lora_target_is_a_clear_error(tiny_model_dir, tiny_chat_files, tmp_path):
    train, ev = tiny_chat_files
    raw = tiny_config(tiny_model_dir, train, ev, str(tmp_path / "r"))
    raw["lora"]["targets"] = ["qproj"]
    with pytest.raises(MindprintError, match="qproj.*linear layers are"):
        run_training(_cfg(raw))


def test_mixed_precision_bf16_trains_close_to_float32(tiny_model_dir, tiny_chat_files, tmp_path):
    """train.mixed_precision bf16: the passes run under bf16 autocast (the products in bf16,
    the LoRA weights and optimizer float32), the run trains, and its losses follow float32's
    within bf16 rounding; the LM head's hand-written backward runs its product in bf16 too and
    stays close to float32's gradient."""
    from mindprint.backends.torch.logps import selected_logps

    train, ev = tiny_chat_files
    res = {}
    for mp in ("no", "bf16"):
        raw = tiny_config(tiny_model_dir, train, ev, str(tmp_path / mp))
        raw["train"]["mixed_precision"] = mp
        tr = Trainer(_cfg(raw), get_method(_cfg(raw)), log=lambda s: None)
        tr.setup()
        assert tr.backend.amp_dtype == (torch.bfloat16 if mp == "bf16" else None)
        assert all(p.dtype == torch.float32 for p in tr.stepper.params)
        res[mp] = [tr.train_step()["loss"] for _ in range(3)]
    assert res["bf16"] != res["no"]                   # autocast did change the arithmetic
    # measured relative gaps of the three losses (~10.8, near ln V on the random tiny model, whose
    # flat logits damp the bf16 rounding): 1.6e-5, 4e-7, 2.3e-5; bound 10x the largest (the
    # gradient check below covers peaked logits)
    for a, b in zip(res["bf16"], res["no"]):
        assert a == pytest.approx(b, rel=2.5e-4)

    g = torch.Generator().manual_seed(0)
    h = torch.randn(40, 64, generator=g, requires_grad=True)
    w = torch.randn(300, 64, generator=g) * 0.2
    tgt = torch.randint(0, 300, (40,), generator=g)
    grads = []
    for amp in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = selected_logps(h, w, None, tgt, chunk=16)
        assert out.dtype == torch.float32
        (gh,) = torch.autograd.grad(out.sum(), h)
        assert gh.dtype == torch.float32
        grads.append(gh)
    assert not torch.equal(grads[0], grads[1])
    # bf16 keeps 8 significant bits: unit roundoff u = 2**-9. The bf16 product rounds h and w
    # (relative error u each) and the gradient dh = (onehot - softmax) @ w reads w in bf16 again,
    # so the gradient's relative error is a small multiple of u. Measured over seeds 0-4: norm-wise
    # 0.0026-0.0030 (~1.5 u), element-wise at most 0.0044 (|grad| up to 0.93). Bounds: 2 u = 0.0039
    # norm-wise and 0.01 element-wise (2x the measured); a wrong chunk, softmax or target in the
    # bf16 path is off by O(0.1-1) and fails both.
    err = grads[1] - grads[0]
    assert err.norm() / grads[0].norm() <= 2 ** -8, float(err.norm() / grads[0].norm())
    assert err.abs().max() <= 0.01, float(err.abs().max())
