"""TRL 1.16's side of ``benchmarks/vs_trl.py``, in its own process (``--_side trl``).

The trainers are TRL's own (DPO, KTO, SFT, GRPO from ``trl``; ORPO from ``trl.experimental``) with
the settings :func:`_vs_trl_setup.side_settings` names. The benchmark adds only clocks: a
callback for step ends, a wrapper on ``training_step`` that counts SFT's answer tokens
(``labels != -100``, what TRL's loss is taken over; padding-free batches carry no attention mask)
and examples (sequences with a label in a packed row), and for GRPO a timer and a dtype probe on
``_generate`` (and, for the like-for-like bf16 row, bf16 autocast around it).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from mindprint.models import resolve

from _vs_trl_mindprint import eval_pref_accuracy, grpo_stats, peak_rss_mb
from _vs_trl_reward import length_reward
from _vs_trl_setup import (BETA, DATA, GRPO_GROUP, SETTINGS, TARGETS, answer_tokens_and_examples,
                           sampler_dtypes, steady)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def trl_dataset(method: str) -> Dataset:
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


def build_trainer(a, model, tok, peft, common):
    fast = not a.trl_defaults
    ds = trl_dataset(a.method)
    kw = dict(model=model, train_dataset=ds, processing_class=tok, peft_config=peft)
    if a.method == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        common.pop("max_length")
        common["per_device_train_batch_size"] *= GRPO_GROUP     # TRL counts completions
        args = GRPOConfig(num_generations=GRPO_GROUP, max_completion_length=a.max_completion_length,
                          temperature=1.0, top_p=1.0, loss_type="dapo", beta=0.0, **common)
        return GRPOTrainer(args=args, reward_funcs=[length_reward], **kw)
    if a.method == "dpo":
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(beta=BETA["dpo"], precompute_ref_log_probs=fast, **common)
        return DPOTrainer(args=args, **kw)
    if a.method == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        return ORPOTrainer(args=ORPOConfig(beta=BETA["orpo"], **common), **kw)
    if a.method == "kto":
        from trl import KTOConfig, KTOTrainer

        args = KTOConfig(beta=BETA["kto"], train_sampling_strategy="sequential",
                         precompute_ref_log_probs=fast, **common)
        return KTOTrainer(args=args, **kw)
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(completion_only_loss=True, packing=fast, padding_free=fast, **common)
    return SFTTrainer(args=args, **kw)


def _wrap_generate(trainer, a, gen_s: list, seen: set) -> None:
    """Time TRL's sampling (prompt tokenization + ``generate``) and record the dtype its LM head
    computes in; for the like-for-like bf16 row run it under bf16 autocast (TRL's ``bf16=True``
    autocasts the training forward, not necessarily ``generate`` on the PEFT model)."""
    want = sampler_dtypes(a.method, a.precision, a.trl_defaults, a.sampler_dtype)[1]
    head = trainer.model.get_output_embeddings()
    real = trainer._generate

    def probe(_module, _inputs, out):
        seen.add(str(out.dtype).replace("torch.", ""))

    def timed_generate(*args, **kw):
        cast = (torch.autocast("cpu", dtype=torch.bfloat16) if want == "bfloat16"
                else contextlib.nullcontext())
        hook = head.register_forward_hook(probe)
        t = time.perf_counter()
        try:
            with cast:
                out = real(*args, **kw)
        finally:
            hook.remove()
        gen_s.append(time.perf_counter() - t)
        return out

    trainer._generate = timed_generate


def run_trl(a, t_start: float) -> dict:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    torch.set_num_threads(a.threads)
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
    steps = dict(max_steps=-1, num_train_epochs=a.epochs) if a.epochs else dict(max_steps=a.steps)
    common = dict(output_dir=tempfile.mkdtemp(prefix="trl-bench-"), per_device_train_batch_size=bs,
                  gradient_accumulation_steps=1, learning_rate=lr, **steps,
                  lr_scheduler_type="linear", warmup_steps=0, logging_steps=1,
                  save_strategy="no", eval_strategy="no", report_to=[], seed=0,
                  gradient_checkpointing=a.gradient_checkpointing, max_length=a.max_length,
                  bf16=dev == "cuda" or a.precision == "bf16", use_cpu=dev == "cpu",
                  dataloader_num_workers=0, disable_tqdm=True)
    trainer = build_trainer(a, model, tok, peft, common)
    setup_s, rss_setup = time.monotonic() - t0, peak_rss_mb()
    ends, answer_tokens, examples, gen_s, seen = [], [], [], [], set()

    class Clock(TrainerCallback):
        def on_train_begin(self, *args, **kw):
            ends.append(time.perf_counter())

        def on_step_end(self, *args, **kw):
            ends.append(time.perf_counter())

    trainer.add_callback(Clock())
    real_step = trainer.training_step

    def counting(model, inputs, *args, **kw):
        if a.method == "sft":
            n, k = answer_tokens_and_examples(inputs)
            answer_tokens.append(n)
            examples.append(k)
        return real_step(model, inputs, *args, **kw)

    trainer.training_step = counting
    if a.method == "grpo":
        _wrap_generate(trainer, a, gen_s, seen)
    trainer.train()
    e2e_s = time.monotonic() - t_start
    w = a.warmup if len(ends) > a.warmup + 1 else 0
    span = ends[-1] - ends[w]
    hist = trainer.state.log_history
    losses = [h["loss"] for h in hist if "loss" in h]
    res = {"s_per_step": steady(ends, a.warmup), "steps": len(ends) - 1,
           "tokens_per_s": sum(answer_tokens[w:]) / span if a.method == "sft" else None,
           "final_loss": losses[-1] if losses else None, "setup_s": setup_s, "e2e_s": e2e_s,
           "imports_s": t0 - t_start, "step_s": [round(y - x, 2) for x, y in zip(ends, ends[1:])],
           "examples": sum(examples) if a.method == "sft" else (len(ends) - 1) * bs,
           "threads": torch.get_num_threads(), "peak_rss_setup_mb": rss_setup}
    res["eval_pref_acc"] = eval_pref_accuracy(trainer.model, tok, a.method, a.max_length)
    res["peak_rss_mb"] = peak_rss_mb()
    if a.method == "grpo":
        rows = [h for h in hist if "reward" in h]
        res.update(grpo_stats([h["reward"] for h in rows],
                              [h["completions/mean_length"] for h in rows], gen_s, a.warmup))
        res["sampler_dtype_seen"] = "/".join(sorted(seen)) or None
    return res
