"""Mindprint's side of ``benchmarks/vs_trl.py`` and the scoring both trained adapters share.

Runs in its own process (``vs_trl.py --_side mindprint``): the training is Mindprint's own
:class:`~mindprint.training.Trainer` on a config built from the arguments, as ``mindprint train``
runs it (``configure_process`` first). Timed: setup (model load, tokenization, the reference pass
for DPO/KTO — cold by default: a fresh reference cache, since TRL recomputes its precomputed
log-probs in every run), each optimizer step's end, and end to end (this process's start to the
last step's end).
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from mindprint import config as C
from mindprint.backends.torch.backend import TorchBackend
from mindprint.backends.torch.process import configure_process
from mindprint.backends.torch.sampling import sampler_dtype
from mindprint.data.jsonl import load_many
from mindprint.methods import get_method
from mindprint.methods.groups import live_reference, pair_items, render_groups
from mindprint.models import cache_dir
from mindprint.training import Trainer

from _vs_trl_setup import BETA, DATA, GRPO_GROUP, REPO, SETTINGS, TARGETS, sampler_dtypes, steady


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def eval_pref_accuracy(model, tok, method: str, max_length: int) -> float | None:
    """Fraction of held-out pairs whose chosen answer gets the higher implicit reward (β·log-ratio
    to the adapter-free model for DPO/KTO, mean token log-prob for ORPO); None for SFT/GRPO."""
    if SETTINGS[method][1] is None:
        return None
    recs = load_many([str(DATA / SETTINGS[method][1])], "preference").records
    groups, _ = render_groups(tok, pair_items(recs), max_length, 0.0, "eval")
    backend = TorchBackend(model, tok)
    model.eval()
    correct = 0
    with torch.no_grad():
        for s in range(0, len(groups), 8):
            batch = groups[s:s + 8]
            sums, counts = backend.group_logps([g.packed() for g in batch])
            score = sums - live_reference(backend, batch) if method in ("dpo", "kto") else sums / counts
            correct += int((score[:, 0] > score[:, 1]).sum())
    return correct / len(groups)


def grpo_stats(rewards, lengths, gen_s, warmup) -> dict:
    mean = lambda xs: sum(xs) / len(xs) if xs else None   # noqa: E731
    return {"reward_first": rewards[0], "reward_last": rewards[-1], "reward_mean": mean(rewards),
            "completion_len_mean": mean(lengths),
            "generate_s_per_step": mean(gen_s[warmup:] or gen_s)}


def cold_reference_cache() -> str:
    """A fresh ``MINDPRINT_CACHE`` that shares the converted model (and the file-hash memo) of the
    real one but holds no reference log-probs, so DPO/KTO compute them in setup as TRL does."""
    real, cold = cache_dir(), Path(tempfile.mkdtemp(prefix="mp-bench-cache-"))
    for name in ("models", "file-hashes.json"):
        if (real / name).exists():
            (cold / name).symlink_to(real / name)
    os.environ["MINDPRINT_CACHE"] = str(cold)
    return str(cold)


def config(a):
    train, _, lr, bs = SETTINGS[a.method]
    if a.method == "kto":
        bs //= 2          # Mindprint's KTO batch counts prompts; each has two completions here
    steps = {"epochs": a.epochs} if a.epochs else {"max_steps": a.steps}
    raw = {"method": a.method, "model": "smollm2-135m-instruct",
           "data": {"train": str(DATA / train), "max_length": a.max_length},
           "train": {**steps, "batch_size": bs, "grad_accum": 1, "lr": lr,
                     "schedule": "linear", "warmup_steps": 0, "warmup_ratio": 0.0,
                     "eval_every": 0, "eval_at_start": False, "save_every": 0, "log_every": 1,
                     "gradient_checkpointing": a.gradient_checkpointing, "seed": 0,
                     "num_threads": a.threads,
                     "mixed_precision": "bf16" if a.precision == "bf16" else "no"},
           "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "targets": TARGETS},
           "dpo": {"beta": BETA["dpo"]}, "orpo": {"lam": BETA["orpo"]}, "kto": {"beta": BETA["kto"]},
           "output_dir": tempfile.mkdtemp(prefix="mp-bench-")}
    if a.method == "grpo":
        raw["data"]["max_length"] = a.max_length + a.max_completion_length
        raw["grpo"] = {"group_size": GRPO_GROUP, "max_completion_length": a.max_completion_length,
                       "temperature": 1.0, "top_p": 1.0, "loss_type": "dapo", "beta": 0.0,
                       "rewards": ["benchmarks._vs_trl_reward:length_reward"], "sample_every": 0,
                       "sampler_dtype": sampler_dtypes(a.method, a.precision, a.trl_defaults,
                                                       a.sampler_dtype)[0]}
    for key, value in C.parse_overrides(a.mp_set or []):
        C.set_key(raw, key, value, "--mp-set")
    return C.from_dict(raw)


def run_mindprint(a, t_start: float) -> dict:
    torch.set_num_threads(a.threads)
    if a.ref_cache == "cold":
        cold_reference_cache()
    os.chdir(REPO)       # the GRPO reward is imported by name from the repository root
    cfg = config(a)
    process = configure_process(cfg)      # as `mindprint train` does
    t0 = time.monotonic()
    trainer = Trainer(cfg, get_method(cfg), overwrite=True, log=lambda s: print(s, file=sys.stderr))
    trainer.setup()
    setup_s, rss_setup = time.monotonic() - t0, peak_rss_mb()
    ends, losses, metrics, answer_tokens, examples = [time.perf_counter()], [], [], [], []
    step, stepper_step = trainer.train_step, trainer.stepper.step

    def counted(groups, norm, check):
        # SFT's normaliser is the step's answer-token count (Σ n_target, the loss's denominator)
        answer_tokens.append(float(norm) if a.method == "sft" else 0.0)
        examples.append(sum(len(g) for g in groups))
        return stepper_step(groups, norm, check)

    def timed():
        m = step()
        ends.append(time.perf_counter())
        losses.append(m["loss"])
        metrics.append(m["metrics"])
        return m

    trainer.stepper.step, trainer.train_step = counted, timed
    trainer.train()
    e2e_s = time.monotonic() - t_start
    w = a.warmup if len(ends) > a.warmup + 1 else 0
    span = ends[-1] - ends[w]
    res = {"s_per_step": steady(ends, a.warmup), "steps": len(ends) - 1,
           "tokens_per_s": sum(answer_tokens[w:]) / span if a.method == "sft" else None,
           "final_loss": losses[-1], "setup_s": setup_s, "e2e_s": e2e_s,
           "imports_s": t0 - t_start, "step_s": [round(y - x, 2) for x, y in zip(ends, ends[1:])],
           "examples": sum(examples) if a.method == "sft" else (len(ends) - 1) * SETTINGS[a.method][3],
           "threads": torch.get_num_threads(), "peak_rss_setup_mb": rss_setup, "process": process}
    res["eval_pref_acc"] = eval_pref_accuracy(trainer.model, trainer.tok, a.method, a.max_length)
    res["peak_rss_mb"] = peak_rss_mb()
    if a.method == "grpo":
        res.update(grpo_stats([m["reward"] for m in metrics],
                              [m["completion_len_mean"] for m in metrics],
                              [m["generate_s"] for m in metrics], a.warmup))
        dt = sampler_dtype(cfg.grpo.sampler_dtype, trainer.model) or next(trainer.model.parameters()).dtype
        res["sampler_dtype_seen"] = f"{cfg.grpo.sampler_dtype} -> {str(dt).replace('torch.', '')}"
    return res
