"""Mindprint vs TRL 1.16, same model, data, LoRA, batch, max_length and steps.

    python benchmarks/vs_trl.py --method dpo --steps 20

Each side runs in its own subprocess, one after the other (so each has its own peak RSS), on the
bundled model (smollm2-135m-instruct, float32 on CPU / the default dtype on CUDA), LoRA r 8,
alpha 16, dropout 0 on q,v,o,up,down, the same learning rate and linear schedule.

* s/step: mean wall time between consecutive optimizer-step ends, after ``--warmup`` steps
  (everything a step costs: batching, forward, backward, reference, optimizer, logging). One-off
  setup — model load, tokenization, Mindprint's cached reference pass — is shown separately.
* peak RSS: ``ru_maxrss`` of that side's process (model, activations, libraries).
* eval preference accuracy: the *same* scoring code for both trained adapters on
  examples/data/preference_eval.jsonl (the method's implicit reward: β·log-ratio to the
  adapter-free model for DPO/KTO, mean token log-prob for ORPO); null for SFT.
* SFT compares tokens/s (non-padding tokens of the training examples per second).

The last line printed is JSON (see ``--help``); the table above it is for people.
Both sides default to gradient checkpointing off (Mindprint's default; TRL 1.16 defaults it on,
``--gradient-checkpointing`` turns it on for both).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
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
GRPO_LENGTH = (5, 25)           # the length reward's target range in words


def length_reward(prompts, completions, records=None, **kwargs) -> list[float]:
    """The reward both sides train on (plain Python, the same function object's code on both):
    1 inside GRPO_LENGTH words, n/lo below, falling to 0 at 2·hi above. TRL passes conversational
    completions as message lists, Mindprint as text."""
    lo, hi = GRPO_LENGTH
    out = []
    for c in completions:
        text = c[-1]["content"] if isinstance(c, list) else c
        n = len(text.split())
        out.append(1.0 if lo <= n <= hi else n / lo if n < lo else max(0.0, 1.0 - (n - hi) / hi))
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def steady(ends: list[float], warmup: int) -> float:
    """Mean seconds per step over steps warmup+1..N from the step-end timestamps."""
    ends = ends[warmup:] if len(ends) > warmup + 1 else ends
    return (ends[-1] - ends[0]) / max(len(ends) - 1, 1)


# -- shared scoring of a trained adapter -------------------------------------------------------
def eval_pref_accuracy(model, tok, method: str, max_length: int) -> float | None:
    """Fraction of held-out pairs whose chosen answer gets the higher implicit reward."""
    import torch

    from mindprint.backends.torch.backend import TorchBackend
    from mindprint.data.jsonl import load_many
    from mindprint.methods.groups import live_reference, pair_items, render_groups

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
            if method in ("dpo", "kto"):
                score = sums - live_reference(backend, batch)
            else:
                score = sums / counts
            correct += int((score[:, 0] > score[:, 1]).sum())
    return correct / len(groups)


# -- Mindprint side ----------------------------------------------------------------------------
def run_mindprint(a) -> dict:
    from mindprint import config as C
    from mindprint.backends.torch.process import configure_process
    from mindprint.training import Trainer
    from mindprint.methods import get_method

    train, _, lr, bs = SETTINGS[a.method]
    if a.method == "kto":
        bs //= 2          # Mindprint's KTO batch counts prompts; each has two completions here
    out = tempfile.mkdtemp(prefix="mp-bench-")
    raw = {"method": a.method, "model": "smollm2-135m-instruct",
           "data": {"train": str(DATA / train), "max_length": a.max_length},
           "train": {"max_steps": a.steps, "batch_size": bs, "grad_accum": 1, "lr": lr,
                     "schedule": "linear", "warmup_steps": 0, "warmup_ratio": 0.0,
                     "eval_every": 0, "eval_at_start": False, "save_every": 0, "log_every": 1,
                     "gradient_checkpointing": a.gradient_checkpointing, "seed": 0,
                     "mixed_precision": "bf16" if a.precision == "bf16" else "no"},
           "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "targets": TARGETS},
           "dpo": {"beta": BETA["dpo"]}, "orpo": {"lam": BETA["orpo"]}, "kto": {"beta": BETA["kto"]},
           "output_dir": out}
    if a.method == "grpo":
        raw["data"]["max_length"] = a.max_length + a.max_completion_length
        raw["grpo"] = {"group_size": GRPO_GROUP, "max_completion_length": a.max_completion_length,
                       "temperature": 1.0, "top_p": 1.0, "loss_type": "dapo", "beta": 0.0,
                       "rewards": ["benchmarks.vs_trl:length_reward"], "sample_every": 0}
        if a.sampler_dtype:          # else the config's default (auto)
            raw["grpo"]["sampler_dtype"] = a.sampler_dtype
        os.chdir(REPO)       # the reward is imported as "benchmarks.vs_trl:length_reward"
    cfg = C.from_dict(raw)
    configure_process(cfg)           # as `mindprint train` does (malloc kept for reuse on a CPU)
    t0 = time.monotonic()
    trainer = Trainer(cfg, get_method(cfg), overwrite=True, log=lambda s: print(s, file=sys.stderr))
    trainer.setup()
    setup_s = time.monotonic() - t0
    ends, tokens, losses, metrics = [time.perf_counter()], [], [], []
    step = trainer.train_step

    def timed():
        m = step()
        ends.append(time.perf_counter())
        tokens.append(m["tokens"])
        losses.append(m["loss"])
        metrics.append(m["metrics"])
        return m

    trainer.train_step = timed
    trainer.train()
    s = steady(ends, a.warmup)
    toks = sum(tokens[a.warmup:]) if len(tokens) > a.warmup + 1 else sum(tokens)
    span = ends[-1] - ends[a.warmup if len(ends) > a.warmup + 1 else 0]
    acc = eval_pref_accuracy(trainer.model, trainer.tok, a.method, a.max_length)
    res = {"s_per_step": s, "tokens_per_s": toks / span, "final_loss": losses[-1],
           "eval_pref_acc": acc, "setup_s": setup_s, "peak_rss_mb": peak_rss_mb()}
    if a.method == "grpo":
        from mindprint.backends.torch.sampling import sampler_dtype

        res.update(_grpo_stats([m["reward"] for m in metrics],
                               [m["completion_len_mean"] for m in metrics],
                               [m["generate_s"] for m in metrics], a.warmup))
        dt = sampler_dtype(cfg.grpo.sampler_dtype, trainer.model)
        res["sampler_dtype"] = f"{cfg.grpo.sampler_dtype} -> {str(dt or 'model dtype').replace('torch.', '')}"
    return res


def _grpo_stats(rewards, lengths, gen_s, warmup) -> dict:
    mean = lambda xs: sum(xs) / len(xs) if xs else None   # noqa: E731
    return {"reward_first": rewards[0], "reward_last": rewards[-1], "reward_mean": mean(rewards),
            "completion_len_mean": mean(lengths),
            "generate_s_per_step": mean(gen_s[warmup:] or gen_s)}


# -- TRL side ----------------------------------------------------------------------------------
def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def trl_dataset(method: str):
    from datasets import Dataset

    rows = _records(DATA / SETTINGS[method][0])
    user = lambda p: [{"role": "user", "content": p}]            # noqa: E731
    assistant = lambda c: [{"role": "assistant", "content": c}]  # noqa: E731
    if method in ("dpo", "orpo"):
        rows = [{"prompt": user(r["prompt"]), "chosen": assistant(r["chosen"]),
                 "rejected": assistant(r["rejected"])} for r in rows]
    elif method == "kto":
        rows = [{"prompt": user(r["prompt"]), "completion": assistant(r["completion"]),
                 "label": r["label"]} for r in rows]
    elif method == "grpo":
        rows = [{"prompt": user(r["prompt"])} for r in rows]
    else:   # SFT on the last assistant turn, as Mindprint does for single-turn chats
        rows = [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows]
    return Dataset.from_list(rows)


def run_trl(a) -> dict:
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from mindprint.models import resolve

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    t0 = time.monotonic()
    path = resolve("smollm2-135m-instruct").path
    _, _, lr, bs = SETTINGS[a.method]
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(dev)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    peft = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS, bias="none",
                      task_type="CAUSAL_LM")
    common = dict(output_dir=tempfile.mkdtemp(prefix="trl-bench-"), per_device_train_batch_size=bs,
                  gradient_accumulation_steps=1, max_steps=a.steps, learning_rate=lr,
                  lr_scheduler_type="linear", warmup_steps=0, logging_steps=1,
                  save_strategy="no", eval_strategy="no", report_to=[], seed=0,
                  gradient_checkpointing=a.gradient_checkpointing, max_length=a.max_length,
                  bf16=dev == "cuda" or a.precision == "bf16", use_cpu=dev == "cpu",
                  dataloader_num_workers=0,
                  disable_tqdm=True)
    ds = trl_dataset(a.method)
    if a.method == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        common.pop("max_length")
        common["per_device_train_batch_size"] = bs * GRPO_GROUP     # TRL counts completions
        args = GRPOConfig(num_generations=GRPO_GROUP, max_completion_length=a.max_completion_length,
                          temperature=1.0, top_p=1.0, loss_type="dapo", beta=0.0, **common)
        trainer = GRPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                              reward_funcs=[length_reward], peft_config=peft)
    elif a.method == "dpo":
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(beta=BETA["dpo"], **common)
        trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                             peft_config=peft)
    elif a.method == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        args = ORPOConfig(beta=BETA["orpo"], **common)
        trainer = ORPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                              peft_config=peft)
    elif a.method == "kto":
        from trl import KTOConfig, KTOTrainer

        args = KTOConfig(beta=BETA["kto"], train_sampling_strategy="sequential", **common)
        trainer = KTOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                             peft_config=peft)
    else:
        from trl import SFTConfig, SFTTrainer

        args = SFTConfig(completion_only_loss=True, **common)
        trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                             peft_config=peft)
    setup_s = time.monotonic() - t0
    ends, tokens = [], []

    class Clock(TrainerCallback):
        def on_train_begin(self, *args, **kw):
            ends.append(time.perf_counter())

        def on_step_end(self, *args, **kw):
            ends.append(time.perf_counter())

    trainer.add_callback(Clock())
    real_step = trainer.training_step

    def counting(model, inputs, *args, **kw):
        # real (non-padding) tokens: every attention mask in the batch (ORPO/KTO name theirs
        # chosen_/rejected_/completion_/KL_…attention_mask)
        # (GRPO's training_step gets the raw prompt rows: its tokens are not counted)
        tokens.append(sum(int(v.sum()) for k, v in inputs.items()
                          if k.endswith("attention_mask") and hasattr(v, "sum"))
                      if isinstance(inputs, dict) else 0)
        return real_step(model, inputs, *args, **kw)

    trainer.training_step = counting
    gen_s = []
    if a.method == "grpo":        # TRL's sampling (prompt tokenization + model.generate), timed
        real_generate = trainer._generate

        def timed_generate(*args, **kw):
            t = time.perf_counter()
            out = real_generate(*args, **kw)
            gen_s.append(time.perf_counter() - t)
            return out

        trainer._generate = timed_generate
    trainer.train()
    s = steady(ends, a.warmup)
    toks = sum(tokens[a.warmup:]) if len(tokens) > a.warmup + 1 else sum(tokens)
    span = ends[-1] - ends[a.warmup if len(ends) > a.warmup + 1 else 0]
    hist = trainer.state.log_history
    losses = [h["loss"] for h in hist if "loss" in h]
    acc = eval_pref_accuracy(trainer.model, tok, a.method, a.max_length)
    res = {"s_per_step": s, "tokens_per_s": toks / span, "final_loss": losses[-1] if losses else None,
           "eval_pref_acc": acc, "setup_s": setup_s, "peak_rss_mb": peak_rss_mb()}
    if a.method == "grpo":
        rows = [h for h in hist if "reward" in h]
        res.update(_grpo_stats([h["reward"] for h in rows],
                               [h["completions/mean_length"] for h in rows], gen_s, a.warmup))
    return res


# -- driver ------------------------------------------------------------------------------------
def side(name: str, a) -> dict:
    cmd = [sys.executable, __file__, "--method", a.method, "--steps", str(a.steps),
           "--warmup", str(a.warmup), "--max-length", str(a.max_length),
           "--max-completion-length", str(a.max_completion_length), "--_side", name]
    if a.gradient_checkpointing:
        cmd.append("--gradient-checkpointing")
    if a.sampler_dtype:
        cmd += ["--sampler-dtype", a.sampler_dtype]
    cmd += ["--precision", a.precision]
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               TRL_EXPERIMENTAL_SILENCE="1")
    t0 = time.monotonic()
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=None if a.verbose else
                       subprocess.PIPE, text=True)
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", required=True, choices=sorted(SETTINGS))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2, help="steps left out of the timing")
    p.add_argument("--max-length", type=int, default=256, help="grpo: prompt tokens at most")
    p.add_argument("--max-completion-length", type=int, default=64, help="grpo: tokens sampled")
    p.add_argument("--sampler-dtype", choices=["auto", "float32", "bfloat16"],
                   help="grpo: Mindprint's grpo.sampler_dtype (default: the config default, auto); "
                        "TRL samples with model.generate in the model's float32")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="CPU: fp32 (both sides train in float32) or bf16 (both sides train with bf16 "
                        "autocast over float32 weights: TRL bf16=True, its default; Mindprint "
                        "train.mixed_precision bf16). On CUDA both sides use bf16 weights either way")
    p.add_argument("--only", choices=["mindprint", "trl"], help="run one side and print its JSON")
    p.add_argument("--gradient-checkpointing", action="store_true", help="on for both sides")
    p.add_argument("--verbose", action="store_true", help="show both sides' logs")
    p.add_argument("--pairs", type=int, default=1,
                   help="run N Mindprint/TRL pairs in alternating order and report the median pair")
    p.add_argument("--_side", choices=["mindprint", "trl"], help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._side:
        res = (run_mindprint if a._side == "mindprint" else run_trl)(a)
        print(json.dumps(res))
        return 0
    if a.only:
        print(json.dumps(side(a.only, a)))
        return 0
    load0 = _load()
    sft = a.method == "sft"

    def ratio(mp, trl):
        return (mp["tokens_per_s"] / trl["tokens_per_s"]) if sft else trl["s_per_step"] / mp["s_per_step"]

    # --pairs N: N pairs, the order alternating (Mindprint first, then TRL first, ...), so a machine
    # that drifts over the minutes of a run is not charged to one side; the table shows the pair
    # with the median speedup (the lower of the two middle ones for an even N)
    pairs = []
    for i in range(a.pairs):
        order = ("mindprint", "trl") if i % 2 == 0 else ("trl", "mindprint")
        got = {n: side(n, a) for n in order}
        pairs.append((got["mindprint"], got["trl"]))
    speedups = [ratio(m, t) for m, t in pairs]
    mid = sorted(range(len(pairs)), key=lambda i: speedups[i])[(len(pairs) - 1) // 2]
    mp, trl = pairs[mid]
    speedup = speedups[mid]
    bs = SETTINGS[a.method][3]
    what = (f" prompts x {GRPO_GROUP} completions (max {a.max_completion_length} tokens, length "
            f"reward {GRPO_LENGTH[0]}-{GRPO_LENGTH[1]} words, loss dapo, beta 0)"
            if a.method == "grpo" else " completions" if a.method == "kto" else "")
    print(f"{a.method}: {a.steps} steps (timing after {a.warmup}), batch {bs}{what}"
          f", max_length {a.max_length}, LoRA r8/a16 "
          f"on {','.join(TARGETS)}, gradient checkpointing {'on' if a.gradient_checkpointing else 'off'}; "
          f"{platform.machine()}, {os.cpu_count()} CPUs")
    rows = [("s/step", "s_per_step", ".2f"), ("tokens/s", "tokens_per_s", ",.0f"),
            ("peak RSS (MB)", "peak_rss_mb", ",.0f"), ("final train loss", "final_loss", ".4f"),
            ("eval pref. accuracy", "eval_pref_acc", ".3f"), ("setup (s)", "setup_s", ".1f"),
            ("process wall (s)", "wall_s", ".1f")]
    if a.method == "grpo":
        rows[4:5] = [("sampling s/step", "generate_s_per_step", ".2f"),
                     ("completion length", "completion_len_mean", ".1f"),
                     ("reward first step", "reward_first", ".3f"),
                     ("reward last step", "reward_last", ".3f"), ("reward mean", "reward_mean", ".3f")]
    print(f"| {'':22s} | {'Mindprint':>10s} | {'TRL 1.16':>10s} | {'ratio':>7s} |")
    print(f"|{'-' * 24}|{'-' * 12}|{'-' * 12}|{'-' * 9}|")
    for label, key, spec in rows:
        ratio = ""
        if key in ("s_per_step", "peak_rss_mb", "generate_s_per_step") and mp[key] and trl[key]:
            ratio = f"{mp[key] / trl[key]:.2f}×"
        if key == "tokens_per_s" and trl[key]:
            ratio = f"{mp[key] / trl[key]:.2f}×"
        print(f"| {label:22s} | {fmt(mp[key], spec):>10s} | {fmt(trl[key], spec):>10s} | {ratio:>7s} |")
    if len(pairs) > 1:
        print(f"pairs (alternating order): speedups {', '.join(f'{x:.2f}×' for x in speedups)}; "
              f"the table is pair {mid + 1}, the median")
    print(f"speedup ({'tokens/s' if sft else 's/step'}): {speedup:.2f}×; peak RSS "
          f"{mp['peak_rss_mb'] / trl['peak_rss_mb']:.2f}× TRL; 1-min load average before / after "
          f"Mindprint / after TRL: {load0} / {mp['load']} / {trl['load']}")
    print(json.dumps({
        "method": a.method, "steps": a.steps,
        "mindprint_s_per_step": round(mp["s_per_step"], 4), "trl_s_per_step": round(trl["s_per_step"], 4),
        "speedup": round(speedup, 3),
        **({"speedups": [round(x, 3) for x in speedups],
            "s_per_step_pairs": [[round(m["s_per_step"], 4), round(t["s_per_step"], 4)]
                                 for m, t in pairs]} if len(pairs) > 1 else {}),
        "mindprint_peak_rss_mb": round(mp["peak_rss_mb"], 1), "trl_peak_rss_mb": round(trl["peak_rss_mb"], 1),
        "mindprint_final_loss": mp["final_loss"], "trl_final_loss": trl["final_loss"],
        "mindprint_eval_pref_acc": mp["eval_pref_acc"], "trl_eval_pref_acc": trl["eval_pref_acc"],
        **({f"{side}_{k}": round(r[k], 4) for side, r in (("mindprint", mp), ("trl", trl))
            for k in ("generate_s_per_step", "completion_len_mean", "reward_mean")}
           if a.method == "grpo" else {}),
        "precision": a.precision,
        **({"mindprint_sampler_dtype": mp["sampler_dtype"], "load_before_mp_trl":
            [load0, mp["load"], trl["load"]]} if a.method == "grpo" else {}),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
