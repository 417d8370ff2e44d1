"""20 steps of SFT and of DPO on the bundled model, torch and mlx from the same LoRA start and the
same data order: the logged loss agrees within 1% at every step (slow).

Small enough for make test: four records of ~24 tokens after the chat template (a one-character
system message replaces the template's default one, ~20 tokens by itself), one example or pair
per step, LoRA r 4 on the attention projections, all four runs in one process. With OpenBLAS
under MLX (mindprint.backends.mlx; `make test` installs it) the four runs take ~57 s on one
thread of the 2-core CI (mlx SFT 11 s, DPO 25 s); with the mlx[cpu] wheel's reference BLAS
about ten times as long. Measured: largest relative gap SFT 0.52% (losses 4.87 → 0.0045), DPO
0.39% (0.696 → 0.00064) on 2026-11-22; SFT 0.51% (step 12, loss 0.171), DPO 0.38% (step 18, loss
0.00035) on 2026-12-02 with today's packages: float32 rounding differences of two frameworks,
compounded over 20 Adam steps. The bound is 1%, about 2x the larger."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_adapter, write_jsonl

import mlx.core as mx  # noqa: E402
import mlx_lm  # noqa: E402,F401

WORDS = ["Tide", "Cycle", "Credit", "Cash"]
STEPS = 20
RTOL = 0.01
SYSTEM = {"role": "system", "content": "."}


def _raw(model_dir, train, out, method):
    return {"method": method, "model": model_dir, "output_dir": str(out),
            "data": {"train": train, "max_length": 32},
            "train": {"max_steps": STEPS, "batch_size": 1, "grad_accum": 1, "lr": 2e-3,
                      "seed": 7, "eval_every": 0, "save_every": 0, "warmup_steps": 2},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targets": "attn"},
            "dpo": {"beta": 0.1}}


def _losses(run_dir) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.fixture(scope="session")
def bundled_curves(tmp_path_factory, bundled_model_dir):
    """{method: {backend: [loss per step]}} for sft and dpo."""
    from mindprint.training import run_training as mlx_run
    from mindprint.training import run_training as torch_run
    from mindprint.config import from_dict

    root = tmp_path_factory.mktemp("bundled-curves")
    sft = write_jsonl(root / "sft.jsonl", [
        {"messages": [SYSTEM, {"role": "user", "content": f"{w}?"},
                      {"role": "assistant", "content": f"Zoom out: {w.lower()} turns."}]}
        for w in WORDS])
    pref = write_jsonl(root / "pref.jsonl", [
        {"prompt": [SYSTEM, {"role": "user", "content": f"{w}?"}],
         "chosen": [{"role": "assistant", "content": f"Zoom out: {w.lower()} turns."}],
         "rejected": [{"role": "assistant", "content": "Buy now!"}]}
        for w in WORDS])
    # B ≠ 0 at the start, so both LoRA factors move from step 1 on
    start = make_adapter(bundled_model_dir, root / "start" / "adapter", seed=3, scale=0.02)
    # make_adapter targets every projection; keep the attention ones (lora.targets: attn)
    _keep_attention(start)
    out: dict = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINDPRINT_CACHE", str(root / "cache"))
        for method, data in (("sft", sft), ("dpo", pref)):
            for backend, run in (("torch", torch_run), ("mlx", mlx_run)):
                raw = dict(_raw(bundled_model_dir, str(data), root / method / backend, method),
                           backend=backend)
                run(from_dict(raw), log=lambda s: None, init_adapter=start)
                out.setdefault(method, {})[backend] = _losses(root / method / backend)
    return out


def _keep_attention(adapter_dir) -> None:
    from safetensors.numpy import load_file, save_file

    f = f"{adapter_dir}/adapter_model.safetensors"
    w = load_file(f)
    save_file({k: v for k, v in w.items() if ".self_attn." in k}, f, metadata={"format": "pt"})
    cfg_file = f"{adapter_dir}/adapter_config.json"
    cfg = json.loads(open(cfg_file).read())
    cfg["target_modules"] = ["k_proj", "o_proj", "q_proj", "v_proj"]
    open(cfg_file, "w").write(json.dumps(cfg))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_bundled_loss_curves_match(method, bundled_curves):
    t, m = bundled_curves[method]["torch"], bundled_curves[method]["mlx"]
    assert len(t) == len(m) == STEPS
    assert all(np.isfinite(t)) and np.mean(t[-8:]) < np.mean(t[:8])     # the runs do learn
    gap = np.abs(np.asarray(m) - np.asarray(t)) / np.abs(np.asarray(t))
    assert gap.max() <= RTOL, (f"{method}: torch and mlx losses differ by {gap.max():.3%} "
                               f"at step {gap.argmax() + 1} (bound {RTOL:.0%})")
