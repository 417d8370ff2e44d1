"""Mindprint vs TRL 1.16, same model, data, LoRA, batch, max_length and steps.

    python benchmarks/vs_trl.py --method dpo --steps 8 --pairs 3
    python benchmarks/vs_trl.py --method dpo --epochs 1          # end to end over the bundled pairs
    python benchmarks/vs_trl.py --method sft --trl-defaults      # the baseline before issue 25

Each side runs in its own subprocess, one after the other (so each has its own peak RSS), on the
bundled model (smollm2-135m-instruct, float32 on CPU / the default dtype on CUDA), LoRA r 8,
alpha 16, dropout 0 on q,v,o,up,down, the same learning rate and linear schedule, the same thread
count (``--threads``, pinned in each process). TRL runs at its fastest recommended settings for the
workload unless ``--trl-defaults`` (see benchmarks/_vs_trl_setup.py for both baselines).

* s/step: mean wall time between consecutive optimizer-step ends, after ``--warmup`` steps
  (everything a step costs: batching, forward, backward, reference, optimizer, logging).
* end to end: the side's process start (imports) to its last step's end — model load,
  tokenization, a cold reference pass (DPO/KTO on both sides), every step — for ``--steps`` or
  ``--epochs``; its ratio is per training example (packed SFT steps hold more examples).
* peak RSS: ``ru_maxrss`` of that side's process (model, activations, libraries).
* eval preference accuracy: the *same* scoring code for both trained adapters on
  examples/data/preference_eval.jsonl; null for SFT and GRPO.
* SFT compares answer tokens/s (labelled tokens on both sides, see ``tokens_counted``).

The last line printed is JSON: the median pair's figures, every pair's ratios, the settings each
side ran with (``trl_precompute_ref_log_probs``, ``trl_packing``, ``trl_padding_free``, both
sides' GRPO sampler dtype, ``threads``) and the library versions. Both sides default to gradient
checkpointing off (Mindprint's default; TRL 1.16 defaults it on, ``--gradient-checkpointing``
turns it on for both).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from _vs_trl_reward import GRPO_LENGTH
from _vs_trl_setup import (GRPO_GROUP, SETTINGS, TARGETS, default_threads, side_settings,
                           summary, thread_env, versions)

PASSED = ("method", "steps", "epochs", "warmup", "max_length", "max_completion_length",
          "sampler_dtype", "precision", "threads", "ref_cache")       # to each side's process


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", required=True, choices=sorted(SETTINGS))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--epochs", type=float,
                   help="train this many passes over the training file instead of --steps (each side "
                        "counts its own steps: TRL's packed SFT rows hold several examples)")
    p.add_argument("--warmup", type=int, default=2, help="steps left out of the s/step timing")
    p.add_argument("--max-length", type=int, default=256, help="grpo: prompt tokens at most")
    p.add_argument("--max-completion-length", type=int, default=64, help="grpo: tokens sampled")
    p.add_argument("--trl-defaults", action="store_true",
                   help="TRL at its defaults, the baseline before issue 25: no precomputed reference "
                        "(DPO/KTO), no packing (SFT), GRPO with Mindprint's default sampler dtype "
                        "against TRL's generate in the model's dtype")
    p.add_argument("--sampler-dtype", choices=["auto", "float32", "bfloat16"],
                   help="grpo: Mindprint's grpo.sampler_dtype (default: the training precision; "
                        "auto with --trl-defaults)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="CPU: fp32 (both sides train in float32) or bf16 (both sides train with bf16 "
                        "autocast over float32 weights: TRL bf16=True; Mindprint "
                        "train.mixed_precision bf16). On CUDA both sides use bf16 weights either way")
    p.add_argument("--threads", type=int, default=default_threads(),
                   help="CPU threads for both sides (default: every core)")
    p.add_argument("--ref-cache", choices=["cold", "warm"], default="cold",
                   help="dpo/kto: Mindprint's reference log-probs computed in setup (cold, as TRL "
                        "computes its own in every run) or read from the user's cache if there (warm)")
    p.add_argument("--mp-set", action="append", metavar="KEY=VALUE",
                   help="extra Mindprint config key (repeatable), e.g. data.packing=true")
    p.add_argument("--only", choices=["mindprint", "trl"], help="run one side and print its JSON")
    p.add_argument("--gradient-checkpointing", action="store_true", help="on for both sides")
    p.add_argument("--verbose", action="store_true", help="show both sides' logs")
    p.add_argument("--pairs", type=int, default=1,
                   help="run N Mindprint/TRL pairs in alternating order and report the median pair")
    p.add_argument("--_side", choices=["mindprint", "trl"], help=argparse.SUPPRESS)
    return p


def side_command(name: str, a) -> list[str]:
    cmd = [sys.executable, __file__, "--_side", name]
    for key in PASSED:
        value = getattr(a, key)
        if value is not None:
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    for flag in ("trl_defaults", "gradient_checkpointing"):
        if getattr(a, flag):
            cmd.append(f"--{flag.replace('_', '-')}")
    for kv in a.mp_set or []:
        cmd += ["--mp-set", kv]
    return cmd


def side(name: str, a) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               TRL_EXPERIMENTAL_SILENCE="1", **thread_env(a.threads))
    t0 = time.monotonic()
    r = subprocess.run(side_command(name, a), env=env, stdout=subprocess.PIPE,
                       stderr=None if a.verbose else subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stderr or "")
        raise SystemExit(f"{name} side failed (exit {r.returncode})")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["wall_s"] = time.monotonic() - t0
    res["load"] = _load()
    return res


def _load() -> str:
    """1-minute load average: other processes on the machine skew CPU timings."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def fmt(v, spec=".3f") -> str:
    return "—" if v is None else format(v, spec)


ROWS = [("s/step", "s_per_step", ".2f"), ("answer tokens/s", "tokens_per_s", ",.0f"),
        ("peak RSS (MB)", "peak_rss_mb", ",.0f"), ("peak RSS at setup end", "peak_rss_setup_mb", ",.0f"),
        ("final train loss", "final_loss", ".4f"),
        ("eval pref. accuracy", "eval_pref_acc", ".3f"), ("setup (s)", "setup_s", ".1f"),
        ("end to end (s)", "e2e_s", ".1f"), ("steps", "steps", "d"),
        ("examples trained", "examples", "d"), ("process wall (s)", "wall_s", ".1f")]
GRPO_ROWS = [("sampling s/step", "generate_s_per_step", ".2f"),
             ("completion length", "completion_len_mean", ".1f"),
             ("reward first step", "reward_first", ".3f"), ("reward last step", "reward_last", ".3f"),
             ("reward mean", "reward_mean", ".3f")]
RATIO_KEYS = ("s_per_step", "peak_rss_mb", "generate_s_per_step", "tokens_per_s", "e2e_s")


def table(a, out: dict, mp: dict, trl: dict) -> None:
    bs = SETTINGS[a.method][3]
    what = (f" prompts x {GRPO_GROUP} completions (max {a.max_completion_length} tokens, length "
            f"reward {GRPO_LENGTH[0]}-{GRPO_LENGTH[1]} words, loss dapo, beta 0)"
            if a.method == "grpo" else " completions" if a.method == "kto" else "")
    amount = f"{a.epochs:g} epoch(s)" if a.epochs else f"{a.steps} steps"
    print(f"{a.method}: {amount} (timing after {a.warmup}), batch {bs}{what}, max_length "
          f"{a.max_length}, LoRA r8/a16 on {','.join(TARGETS)}, gradient checkpointing "
          f"{'on' if a.gradient_checkpointing else 'off'}; {platform.machine()}, {os.cpu_count()} CPUs")
    settings = side_settings(a)
    label = "TRL DEFAULTS (the baseline before issue 25)" if a.trl_defaults else \
        "TRL at its fastest recommended settings (like for like)"
    print(f"{label}: " + ", ".join(f"{k}={v}" for k, v in settings.items() if k != "trl_baseline"))
    print(f"threads: Mindprint {mp['threads']}, TRL {trl['threads']}; versions: "
          + ", ".join(f"{k} {v}" for k, v in versions().items()))
    rows = ROWS[:5] + GRPO_ROWS + ROWS[6:] if a.method == "grpo" else ROWS
    print(f"| {'':22s} | {'Mindprint':>10s} | {'TRL':>10s} | {'MP/TRL':>7s} |")
    print(f"|{'-' * 24}|{'-' * 12}|{'-' * 12}|{'-' * 9}|")
    for name, key, spec in rows:
        m, t = mp.get(key), trl.get(key)
        ratio = f"{m / t:.2f}×" if key in RATIO_KEYS and m and t else ""
        print(f"| {name:22s} | {fmt(m, spec):>10s} | {fmt(t, spec):>10s} | {ratio:>7s} |")
    if "speedups" in out:
        print(f"pairs (alternating order): speedups {', '.join(f'{x:.2f}×' for x in out['speedups'])}; "
              f"end to end {', '.join(f'{x:.2f}×' for x in out['e2e_speedups'])}; the table is the "
              "median pair")
    print(f"speedup ({'answer tokens/s' if a.method == 'sft' else 's/step'}): {out['speedup']:.2f}×; "
          f"end to end per example {out['e2e_speedup']:.2f}×; peak RSS {out['rss_ratio']:.2f}× TRL; "
          f"1-min load average before / after Mindprint / after TRL: "
          f"{' / '.join(out['load_before_mp_trl'])}")


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    if a._side:
        t_start = time.monotonic()
        if a._side == "mindprint":
            from _vs_trl_mindprint import run_mindprint as run
        else:
            from _vs_trl_trl import run_trl as run
        print(json.dumps(run(a, t_start)))
        return 0
    if a.only:
        print(json.dumps(side(a.only, a)))
        return 0
    load0 = _load()
    # --pairs N: N pairs, the order alternating (Mindprint first, then TRL first, ...), so a machine
    # that drifts over the minutes of a run is not charged to one side; the table shows the pair
    # with the median speedup (the lower of the two middle ones for an even N)
    pairs = []
    for i in range(a.pairs):
        order = ("mindprint", "trl") if i % 2 == 0 else ("trl", "mindprint")
        got = {n: side(n, a) for n in order}
        pairs.append((got["mindprint"], got["trl"]))
    out = summary(a, pairs, load0)
    table(a, out, *pairs[out["median_pair"] - 1])
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
