"""20 steps of SFT and of DPO on the bundled model, torch and mlx from the same LoRA start and the
same data order: the logged loss agrees within 2% at every step (slow).

MLX on a Linux CPU is far slower than torch, so the runs are small: short chats (~40 tokens
after the chat template), one example or pair per step, LoRA on the attention projections.
Even so the four runs take ~9 minutes on 2 cores (mlx: ~7 s per SFT step, ~13 s per DPO step;
torch: ~0.5 s), more than make test can carry: set MINDPRINT_MLX_CURVES=1 to run them.
Measured (2026-11-21): largest relative gap SFT 0.9% (at loss 0.007), DPO 0.16%."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import chat, make_adapter, write_jsonl

mx = pytest.importorskip("mlx.core")
pytest.importorskip("mlx_lm")
pytestmark = pytest.mark.skipif(not os.environ.get("MINDPRINT_MLX_CURVES"),
                                reason="~9 min on a 2-core CPU; set MINDPRINT_MLX_CURVES=1")

WORDS = ["tide", "season", "credit", "cycle", "risk", "cash", "fear", "boom"]
STEPS = 20


def _raw(model_dir, train, out, method):
    return {"method": method, "model": model_dir, "output_dir": str(out),
            "data": {"train": train, "max_length": 64},
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
    from mindprint.backends.mlx.train import run_training as mlx_run
    from mindprint.backends.torch.train import run_training as torch_run
    from mindprint.config import from_dict

    root = tmp_path_factory.mktemp("bundled-curves")
    sft = write_jsonl(root / "sft.jsonl", [chat(f"The {w}?", f"Zoom out: the {w} turns.")
                                            for w in WORDS])
    pref = write_jsonl(root / "pref.jsonl", [
        {"prompt": [{"role": "user", "content": f"The {w}?"}],
         "chosen": [{"role": "assistant", "content": f"Zoom out: the {w} turns."}],
         "rejected": [{"role": "assistant", "content": f"Buy now, the {w} never ends!"}]}
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
    np.testing.assert_allclose(m, t, rtol=0.02)
