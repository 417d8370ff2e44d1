"""Mindprint's MLX backend vs mlx-lm-lora, DPO, same model, data, LoRA, batch, max_length, steps.

    python benchmarks/vs_mlx_lm_lora.py --peer-python /tmp/mlxlora-venv/bin/python --steps 6

mlx-lm-lora runs in its own virtual environment (``pip install "mlx[cpu]" mlx-lm-lora`` there;
on macOS plain ``mlx``), through its own ``train_dpo`` loop with its DPO dataset, its LoRA layers
(``linear_to_lora_layers``) and a separate reference model, as its ``mlx_lm_lora.train --train-mode
dpo`` sets up. (On a Linux CPU mlx-lm-lora 5.10's ``train_dpo`` stops at a Metal-only key of
``mx.device_info()``; the driver supplies that key and changes nothing else.) Mindprint runs ``backend: mlx``, ``method: dpo``. Each side is a subprocess, one
after the other, on the bundled model (float32), LoRA r 8, scale 2 (alpha 16), dropout 0 on
q,v,o,up,down of every layer, AdamW at the same learning rate (the peer's keeps MLX's default
``bias_correction=False``: larger first steps, same cost), constant schedule, β 0.1, the
first ``--pairs`` pairs of examples/data/preference_train.jsonl (mlx-lm-lora applies the same chat
template). Mindprint's one-off reference pass over those pairs counts as setup.

* s/step: mean wall time between consecutive optimizer-step ends after ``--warmup`` steps
  (mlx-lm-lora: its per-step report callback with ``steps_per_report = 1``; Mindprint: the
  trainer's step). One-off setup (model load, tokenisation, Mindprint's reference pass) is
  reported separately as ``setup_s``.
* peak RSS: ``ru_maxrss`` of that side's process; MLX peak: ``mx.get_peak_memory()``.

The last line printed is JSON; the table above it is for people.

BLAS: on Linux the mlx[cpu] wheels link the reference BLAS; Mindprint's side loads OpenBLAS ahead
of it (``mindprint.backends.mlx``, when installed) and the peer's process gets the same library the
same way (the line above the table names it), so the comparison is like for like.

Runtime (2-core Linux CPU, 2026-11-22): with OpenBLAS ``--pairs 8 --steps 6 --max-length 128``
takes ~4 minutes in all (Mindprint 1.8 s/step + 11 s setup, mlx-lm-lora 3.6 s/step); with the
wheel's reference BLAS ``--pairs 4 --steps 4 --max-length 64`` took ~8 minutes (26.6 / 49.4 s/step).
Results: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "examples" / "data" / "preference_train.jsonl"
KEYS = ["self_attn.q_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.up_proj", "mlp.down_proj"]
LR, BETA = 5e-4, 0.1


def _steady(ends: list[float], warmup: int) -> float:
    ends = ends[warmup:] if len(ends) > warmup + 1 else ends
    return (ends[-1] - ends[0]) / max(len(ends) - 1, 1)


def _memory() -> dict:
    import mlx.core as mx

    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "mlx_peak_mb": mx.get_peak_memory() / 2**20}


def subset(a) -> Path:
    """The first ``--pairs`` pairs of the training file (both sides train on this file)."""
    out = Path(tempfile.gettempdir()) / f"mindprint-bench-pairs-{a.pairs}.jsonl"
    out.write_text("".join(DATA.read_text().splitlines(True)[:a.pairs]))
    return out


def run_mindprint(a) -> dict:
    from mindprint import config as C
    from mindprint.training import Trainer
    from mindprint.methods import get_method

    out = tempfile.mkdtemp(prefix="mp-mlx-bench-")
    cfg = C.from_dict({
        "method": "dpo", "backend": "mlx", "model": {"name": "smollm2-135m-instruct", "dtype": "float32"},
        "data": {"train": str(subset(a)), "max_length": a.max_length},
        "train": {"max_steps": a.steps, "batch_size": a.batch_size, "grad_accum": 1, "lr": LR,
                  "schedule": "constant", "warmup_steps": 0, "warmup_ratio": 0.0,
                  "max_grad_norm": None, "weight_decay": 0.0, "eval_every": 0,
                  "eval_at_start": False, "save_every": 0, "log_every": 1, "seed": 0},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0,
                 "targets": [k.split(".")[-1] for k in KEYS]},
        "dpo": {"beta": BETA}, "output_dir": out})
    t0 = time.monotonic()
    trainer = Trainer(cfg, get_method(cfg), overwrite=True, log=lambda s: print(s, file=sys.stderr))
    trainer.setup()
    setup_s = time.monotonic() - t0
    ends, losses = [time.perf_counter()], []
    step = trainer.train_step

    def timed():
        m = step()
        ends.append(time.perf_counter())
        losses.append(m["loss"])
        return m

    trainer.train_step = timed
    trainer.train()
    from mindprint.backends.mlx import fast_blas

    return {"s_per_step": _steady(ends, a.warmup), "setup_s": setup_s, "final_loss": losses[-1],
            "blas": fast_blas(), **_memory()}


# The peer's side: only mlx-lm-lora's and mlx-lm's own API, run by --peer-python.
PEER = r'''
import ctypes, json, resource, sys, time
a = json.loads(sys.argv[1])
if a["blas"]:   # the BLAS Mindprint's side used (mindprint.backends.mlx), loaded the same way
    ctypes.CDLL(a["blas"], mode=ctypes.RTLD_GLOBAL)
import mlx.core as mx, mlx.optimizers as optim
from mlx_lm.utils import load
from mlx_lm.tuner.utils import linear_to_lora_layers
from mlx_lm_lora.trainer.datasets import CacheDataset, DPODataset
from mlx_lm_lora.trainer.dpo_trainer import DPOTrainingArgs, train_dpo
from mlx_lm_lora.trainer.sft_trainer import TrainingCallback

# mlx-lm-lora 5.10 train_dpo starts with mx.set_wired_limit(mx.device_info()[
# "max_recommended_working_set_size"]), a Metal-only key: supply it on a CPU device (the wired
# limit is a no-op there), change nothing else
_info = mx.device_info
mx.device_info = lambda: {"max_recommended_working_set_size": 0, **_info()}
t0 = time.monotonic()
mx.random.seed(0)
model, tok = load(a["model"])
ref, _ = load(a["model"])
ref.freeze()
model.freeze()
linear_to_lora_layers(model, len(model.layers), {"rank": 8, "scale": 2.0, "dropout": 0.0,
                                                 "keys": a["keys"]})
rows = [json.loads(l) for l in open(a["data"])]
train = CacheDataset(DPODataset(rows, tok))
ends, losses = [], []

class CB(TrainingCallback):
    def on_train_loss_report(self, info):
        ends.append(time.perf_counter()); losses.append(info.get("train_loss"))
    def on_val_loss_report(self, info):
        pass

args = DPOTrainingArgs(batch_size=a["batch_size"], iters=a["steps"], val_batches=1,
                       steps_per_report=1, steps_per_eval=10**9, steps_per_save=10**9,
                       max_seq_length=a["max_length"], adapter_file=a["adapter_file"], beta=a["beta"])
setup_s = time.monotonic() - t0
train_dpo(model=model, ref_model=ref, optimizer=optim.AdamW(learning_rate=a["lr"], weight_decay=0.0),
          train_dataset=train, val_dataset=None, args=args, training_callback=CB())
w = a["warmup"]
e = ends[w:] if len(ends) > w + 1 else ends
print(json.dumps({"s_per_step": (e[-1] - e[0]) / max(len(e) - 1, 1), "setup_s": setup_s,
                  "final_loss": losses[-1] if losses else None, "steps_reported": len(ends),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                  "mlx_peak_mb": mx.get_peak_memory() / 2**20}))
'''


def run_peer(a, blas: str | None) -> dict:
    from mindprint.models import resolve

    with tempfile.TemporaryDirectory() as tmp:
        arg = {"model": resolve("smollm2-135m-instruct").path, "keys": KEYS, "data": str(subset(a)),
               "batch_size": a.batch_size, "steps": a.steps, "max_length": a.max_length,
               "lr": LR, "beta": BETA, "warmup": a.warmup, "blas": blas,
               "adapter_file": str(Path(tmp) / "adapters.safetensors")}
        r = subprocess.run([a.peer_python, "-c", PEER, json.dumps(arg)], capture_output=True,
                           text=True, cwd=tmp)
    if r.returncode:
        sys.exit(f"mlx-lm-lora failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer-python", default="/tmp/mlxlora-venv/bin/python",
                    help="python of the environment with mlx-lm-lora installed")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--pairs", type=int, default=16, help="first N pairs of the training file")
    ap.add_argument("--side", choices=["mindprint"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.side == "mindprint":
        print(json.dumps(run_mindprint(a)))
        return
    load = lambda: round(os.getloadavg()[0], 2)  # noqa: E731
    before = load()
    r = subprocess.run([sys.executable, __file__, "--side", "mindprint", "--steps", str(a.steps),
                        "--warmup", str(a.warmup), "--batch-size", str(a.batch_size),
                        "--max-length", str(a.max_length), "--pairs", str(a.pairs)],
                       capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"mindprint failed:\n{r.stderr[-3000:]}")
    mp = json.loads(r.stdout.strip().splitlines()[-1])
    mid = load()
    peer = run_peer(a, mp.get("blas"))
    after = load()
    print(f"load average: {before} before, {mid} between, {after} after; "
          f"BLAS under MLX (both sides): {mp.get('blas') or 'the mlx wheel own'}")
    print(f"| {'':16s} | {'Mindprint-MLX':>13s} | {'mlx-lm-lora':>11s} | {'ratio':>6s} |")
    for key, label in (("s_per_step", "s/step"), ("mlx_peak_mb", "MLX peak (MB)"),
                       ("peak_rss_mb", "peak RSS (MB)"), ("setup_s", "setup (s)"),
                       ("final_loss", "final loss")):
        ratio = f"{mp[key] / peer[key]:.2f}×" if key != "final_loss" and peer.get(key) else ""
        print(f"| {label:16s} | {mp[key]:>13.3f} | {peer[key]:>11.3f} | {ratio:>6s} |")
    print(json.dumps({"method": "dpo", "backend": "mlx", "steps": a.steps, "batch_size": a.batch_size,
                      "pairs": a.pairs, "blas": mp.get("blas"),
                      "max_length": a.max_length, "mindprint_s_per_step": round(mp["s_per_step"], 3),
                      "mlx_lm_lora_s_per_step": round(peer["s_per_step"], 3),
                      "speedup": round(peer["s_per_step"] / mp["s_per_step"], 3),
                      "mindprint_mlx_peak_mb": round(mp["mlx_peak_mb"], 1),
                      "mlx_lm_lora_mlx_peak_mb": round(peer["mlx_peak_mb"], 1),
                      "mindprint_peak_rss_mb": round(mp["peak_rss_mb"], 1),
                      "mlx_lm_lora_peak_rss_mb": round(peer["peak_rss_mb"], 1),
                      "mindprint_final_loss": mp["final_loss"], "mlx_lm_lora_final_loss": peer["final_loss"]}))


if __name__ == "__main__":
    main()
