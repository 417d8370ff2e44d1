"""Peak memory of MLX training on the bundled model: float32 base vs mx-quantised 8-bit / 4-bit
base (``model.quantize``), LoRA r 8 on every projection in float32.

    python benchmarks/mlx_quantize_memory.py --steps 2 --max-length 128

Each setting runs in its own subprocess (a real ``mindprint`` run through the mlx trainer on
examples/data/persona_train.jsonl) and reports, as one JSON line each:

* ``weights_mb``: MLX memory held right after loading (and quantising) the base;
* ``peak_mb``: MLX's peak allocation over the run (weights, activations, gradients, AdamW state);
* ``rss_mb``: the process's peak RSS (adds Python, torch/transformers imports, the tokenizer);
* ``s_per_step`` and the final train loss.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one(bits: int | None, steps: int, max_length: int) -> dict:
    import resource

    import mlx.core as mx

    from mindprint.backends.mlx.model import load_base
    from mindprint.training import run_training
    from mindprint.config import from_dict
    from mindprint.models import resolve

    model, _ = load_base(resolve("smollm2-135m-instruct"), dtype="float32", quantize=bits)
    weights = mx.get_active_memory() / 2**20
    del model
    mx.clear_cache()
    mx.reset_peak_memory()
    with tempfile.TemporaryDirectory() as out:
        cfg = from_dict({
            "method": "sft", "backend": "mlx", "output_dir": out,
            "model": {"name": "smollm2-135m-instruct", "dtype": "float32", "quantize": bits},
            "data": {"train": str(REPO / "examples" / "data" / "persona_train.jsonl"),
                     "max_length": max_length},
            "train": {"max_steps": steps, "batch_size": 1, "lr": 5e-4, "eval_every": 0,
                      "save_every": 0},
            "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "targets": "attn_mlp"}})
        t0 = time.monotonic()
        s = run_training(cfg, log=lambda m: None)
        wall = time.monotonic() - t0
    return {"quantize": bits, "weights_mb": round(weights, 1),
            "peak_mb": round(mx.get_peak_memory() / 2**20, 1),
            "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "s_per_step": round(wall / steps, 2), "train_loss": s["train_loss"],
            "steps": steps, "max_length": max_length}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one is not None:
        print(json.dumps(one(None if a.one == "none" else int(a.one), a.steps, a.max_length)))
        return
    for bits in ("none", "8", "4"):
        r = subprocess.run([sys.executable, __file__, "--one", bits, "--steps", str(a.steps),
                            "--max-length", str(a.max_length)], capture_output=True, text=True)
        if r.returncode:
            sys.exit(r.stderr[-2000:])
        print(r.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
