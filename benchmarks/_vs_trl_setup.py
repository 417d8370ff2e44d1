"""What each side of ``benchmarks/vs_trl.py`` runs with, and the summary line: pure Python.

No torch here (the driver and the plumbing test import it without loading a model). Two TRL
baselines (``--trl-defaults`` picks the second):

* **fastest** (the default, issue 25): what TRL 1.16's docs recommend for the workload on a CPU —
  DPO/KTO ``precompute_ref_log_probs=True`` (reference log-probs computed once in the trainer's
  ``__init__``, like Mindprint's cache); SFT ``packing=True`` + ``padding_free=True`` with the
  completion-only loss; GRPO sampling at the training precision on both sides (``--precision
  fp32``: both float32; ``bf16``: Mindprint's bf16 sampler, TRL's ``generate`` under bf16
  autocast). DPO's ``padding_free`` is not used: TRL 1.16 documents it as temporarily
  unavailable (it warns and pads).
* **defaults** (the numbers before issue 25): TRL's defaults — a reference forward every DPO/KTO
  step, SFT on padded random batches, GRPO with Mindprint's default sampler (``auto``: bf16 on a
  CPU with native bf16) against TRL's ``generate`` in the model's dtype.

Both sides run with the same thread count, pinned in each side's process (``OMP_NUM_THREADS`` and
``MKL_NUM_THREADS`` in its environment, ``torch.set_num_threads`` in it) and reported back.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "examples" / "data"
TARGETS = ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]
SETTINGS = {  # method: train file, eval pairs, lr, batch size (pairs / completions / examples)
    "dpo": ("preference_train.jsonl", "preference_eval.jsonl", 5e-4, 4),
    "orpo": ("preference_train.jsonl", "preference_eval.jsonl", 5e-4, 4),
    "kto": ("kto_train.jsonl", "preference_eval.jsonl", 5e-4, 8),
    "sft": ("persona_train.jsonl", None, 5e-4, 8),
    "grpo": ("prompts.jsonl", None, 5e-4, 2),     # batch: prompts, each answered GRPO_GROUP times
}
BETA = {"dpo": 0.1, "orpo": 0.1, "kto": 0.1}
GRPO_GROUP = 8                  # completions per prompt
LIBRARIES = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "mindprint")
# the step's work counted as tokens/s: SFT's figure of merit, counted alike on both sides
SFT_TOKENS = ("answer tokens: TRL labels != -100 (its loss positions), Mindprint the SFT loss "
              "normaliser (the answer tokens it trains on)")
# the thread-pool variables pinned in each side's environment
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def versions() -> dict:
    """Installed versions of the libraries both sides use (this interpreter is theirs)."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def thread_env(threads: int) -> dict:
    return {k: str(threads) for k in THREAD_ENV}


def default_threads() -> int:
    return os.cpu_count() or 1


def sampler_dtypes(method: str, precision: str, trl_defaults: bool,
                   sampler_dtype: str | None) -> tuple[str | None, str | None]:
    """(Mindprint's ``grpo.sampler_dtype``, the dtype TRL's ``generate`` is asked to compute in)
    for a GRPO run, (None, None) otherwise. Like for like: both sample at the training precision.
    ``--sampler-dtype`` overrides Mindprint's side; TRL's defaults sample in the model's dtype
    (float32 on a CPU; the bf16 row's autocast may or may not reach ``generate``: the side reports
    what it saw)."""
    if method != "grpo":
        return None, None
    matched = "bfloat16" if precision == "bf16" else "float32"
    mp = sampler_dtype or ("auto" if trl_defaults else matched)
    return mp, (None if trl_defaults else matched)


def side_settings(a) -> dict:
    """The settings each side runs with, named as the JSON line names them. ``a``: the parsed
    arguments of vs_trl.py (method, trl_defaults, precision, sampler_dtype, threads, ref_cache,
    gradient_checkpointing, mp_set)."""
    fast = not a.trl_defaults
    s = {"trl_baseline": "defaults" if a.trl_defaults else "fastest", "threads": a.threads,
         "precision": a.precision, "gradient_checkpointing": a.gradient_checkpointing}
    if a.method in ("dpo", "kto"):
        s["trl_precompute_ref_log_probs"] = fast
        s["mindprint_reference"] = f"cached ({a.ref_cache} cache)"
    if a.method == "sft":
        s.update(trl_packing=fast, trl_padding_free=fast, trl_completion_only_loss=True,
                 tokens_counted=SFT_TOKENS)
    if a.method == "grpo":
        mp, trl = sampler_dtypes(a.method, a.precision, a.trl_defaults, a.sampler_dtype)
        s.update(mindprint_sampler_dtype=mp, trl_sampler_dtype=trl or "model dtype (TRL default)")
    if a.mp_set:
        s["mindprint_set"] = list(a.mp_set)
    return s


def answer_tokens_and_examples(batch) -> tuple[int, int]:
    """(labelled positions, sequences holding one) of a TRL SFT batch, padded or padding-free.
    TRL's collator sets -100 on every position outside the answers (and on each packed
    sequence's first); a padding-free row carries ``position_ids`` restarting at 0 per sequence
    (its right padding too, unlabelled) and no attention mask. Tensor methods only: no torch
    import here."""
    keep = batch["labels"] != -100
    pos = batch.get("position_ids")
    if pos is None:
        return int(keep.sum()), int(keep.any(dim=-1).sum())
    seq = (pos == 0).cumsum(dim=-1)          # the sequence each position belongs to, per row
    starts = {(r, int(seq[r, c])) for r, c in keep.nonzero().tolist()}
    return int(keep.sum()), len(starts)


def steady(ends: list[float], warmup: int) -> float:
    """Mean seconds per step over steps warmup+1..N from the step-end timestamps (ends[0] is the
    start of the first step)."""
    ends = ends[warmup:] if len(ends) > warmup + 1 else ends
    return (ends[-1] - ends[0]) / max(len(ends) - 1, 1)


def median_index(values: list[float]) -> int:
    """Index of the median value (the lower of the two middle ones for an even count)."""
    return sorted(range(len(values)), key=lambda i: values[i])[(len(values) - 1) // 2]


def speedup(method: str, mp: dict, trl: dict) -> float:
    """SFT: tokens/s ratio (the two sides' steps hold different work: TRL's packed rows carry
    more examples); the others: TRL's s/step over Mindprint's."""
    if method == "sft":
        return mp["tokens_per_s"] / trl["tokens_per_s"] if trl["tokens_per_s"] else float("nan")
    return trl["s_per_step"] / mp["s_per_step"]


def e2e_speedup(mp: dict, trl: dict) -> float:
    """End to end: TRL's wall time per training example over Mindprint's (setup included; per
    example, since with packing the two sides cover an epoch in different step counts)."""
    return (trl["e2e_s"] / max(trl["examples"], 1)) / (mp["e2e_s"] / max(mp["examples"], 1))


def _r(v, nd=4):
    return None if v is None else round(v, nd)


def summary(a, pairs: list[tuple[dict, dict]], load0: str) -> dict:
    """The JSON line: the median pair's figures, every pair's, the settings and the versions."""
    ratios = [speedup(a.method, m, t) for m, t in pairs]
    e2e = [e2e_speedup(m, t) for m, t in pairs]
    mid = median_index(ratios)
    mp, trl = pairs[mid]
    out = {"method": a.method, "steps": {"mindprint": mp["steps"], "trl": trl["steps"]},
           "epochs": a.epochs, **side_settings(a),
           "threads_seen": {"mindprint": mp["threads"], "trl": trl["threads"]},
           "versions": versions(),
           "mindprint_s_per_step": _r(mp["s_per_step"]), "trl_s_per_step": _r(trl["s_per_step"]),
           "speedup": _r(ratios[mid], 3), "median_pair": mid + 1,
           "mindprint_e2e_s": _r(mp["e2e_s"], 1), "trl_e2e_s": _r(trl["e2e_s"], 1),
           "examples": {"mindprint": mp["examples"], "trl": trl["examples"]},
           "e2e_speedup": _r(e2e[mid], 3),
           "mindprint_setup_s": _r(mp["setup_s"], 1), "trl_setup_s": _r(trl["setup_s"], 1),
           "mindprint_tokens_per_s": _r(mp["tokens_per_s"], 1),
           "trl_tokens_per_s": _r(trl["tokens_per_s"], 1),
           "mindprint_peak_rss_mb": _r(mp["peak_rss_mb"], 1),
           "trl_peak_rss_mb": _r(trl["peak_rss_mb"], 1),
           "mindprint_peak_rss_setup_mb": _r(mp["peak_rss_setup_mb"], 1),
           "trl_peak_rss_setup_mb": _r(trl["peak_rss_setup_mb"], 1),
           "rss_ratio": _r(mp["peak_rss_mb"] / trl["peak_rss_mb"], 3),
           "mindprint_final_loss": mp["final_loss"], "trl_final_loss": trl["final_loss"],
           "mindprint_eval_pref_acc": mp["eval_pref_acc"], "trl_eval_pref_acc": trl["eval_pref_acc"]}
    if len(pairs) > 1:
        out.update(speedups=[_r(x, 3) for x in ratios], e2e_speedups=[_r(x, 3) for x in e2e],
                   s_per_step_pairs=[[_r(m["s_per_step"]), _r(t["s_per_step"])] for m, t in pairs],
                   rss_ratios=[_r(m["peak_rss_mb"] / t["peak_rss_mb"], 3) for m, t in pairs])
    if a.method == "grpo":
        out.update({f"{side}_{k}": _r(r.get(k)) for side, r in (("mindprint", mp), ("trl", trl))
                    for k in ("generate_s_per_step", "completion_len_mean", "reward_mean")})
        out["mindprint_sampler_dtype_seen"] = mp.get("sampler_dtype_seen")
        out["trl_sampler_dtype_seen"] = trl.get("sampler_dtype_seen")
    out["load_before_mp_trl"] = [load0, mp["load"], trl["load"]]
    return out
