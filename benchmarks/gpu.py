"""Mindprint vs TRL 1.16 on one CUDA GPU: LoRA SFT and DPO on a 1B-class Llama, seq 2048, bf16.

    python benchmarks/gpu.py                  # both methods, both sides, one after the other
    python benchmarks/gpu.py --methods sft --steps 30 --batch-size 8

Without CUDA it prints ``skipped: no CUDA`` (and a JSON line saying so) and exits 0.
``--smoke`` runs the whole pipeline on a tiny Llama (hidden 64, 2 layers, seq 256, 4 steps) on
whatever device there is — a check of the script, not a measurement.

The model is a Llama config of the Llama-3.2-1B shape (hidden 2048, MLP 8192, 16 layers, 32 heads,
8 KV heads, vocab 128256, tied embeddings) with random weights (seeded), saved once as bf16 with
the bundled model's tokenizer and chat template. Both sides train the same LoRA (r 16, alpha 32,
dropout 0, q/k/v/o/gate/up/down), bf16, SDPA attention, no gradient checkpointing (``--gradient-
checkpointing`` turns it on for both), the same batch, steps and learning rate, on the same
synthetic records whose rendered length is 2048 tokens (SFT: a short question and a long answer;
DPO: a ~25% prompt and two long answers, each prompt+answer cut to 2048). Each side runs in its
own subprocess (own CUDA context and peak memory).

Numbers per side (after ``--warmup`` steps):

* tokens/s: tokens of the step's sequences per second of step wall time — SFT: prompt+answer per
  example; DPO: prompt+chosen and prompt+rejected per pair (the prompt counted twice, as a
  two-row implementation processes it; Mindprint computes it once, which is part of its speed).
  Both sides are credited the same token count per step (Mindprint's tokenization of the data).
* MFU: 4·N·tokens/s ÷ peak bf16 dense FLOP/s. 4N per token is the LoRA convention (forward 2N, the
  backward's activation gradients 2N; the frozen base needs no weight gradients); N counts the
  transformer blocks plus the LM head matrix once (embedding lookups cost no FLOPs). Peak: 989.4
  TFLOP/s for H100 SXM / H200 (NVIDIA's dense bf16 figure), 756 for H100 PCIe, 312 for A100;
  ``--peak-tflops`` for anything else. DPO's reference passes (Mindprint: cached once before
  training; TRL: one extra forward per step by default) are not credited.
* peak memory: ``torch.cuda.max_memory_allocated`` of that side's process.

Target (issue 9): Mindprint MFU ≥ 40% and tokens/s ≥ 1.3× TRL. Record the printed table in
benchmarks/RESULTS.md with the GPU name. The last line printed is JSON.

``--methods sft_packing`` (issue 25) is Mindprint against itself: SFT with ``data.packing``
false, then true, on short chat turns (``benchmarks/data/short_turns.jsonl``, median ~44 tokens
rendered, repeated to fill the steps), rows of up to ``--pack-len`` tokens, ``--batch-size``
examples per micro-batch (the same examples per step either way: packing changes only the
layout). On CUDA the packed rows run SDPA per example (``backends/torch/packing.py``'s layout,
positions restarting); a flash-attention-2 build trains unpacked (``can_pack`` is False). Both
runs are credited the same real tokens per step, so the ratio is the step-time ratio. Unmeasured
so far (no GPU lent while it was written).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                max_position_embeddings=4096, tie_word_embeddings=True, rope_theta=500000.0,
                rms_norm_eps=1e-5)
PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("GH200", 989.4),
               ("A100", 312.0), ("L40S", 362.0)]
WORDS = ("market cycle credit crowd season tide pendulum fear greed boom bust cash risk patience "
         "position zoom out price value yield spread rate bond equity margin leverage liquidity "
         "panic rally trend range breakout support resistance volume momentum discipline "
         "history memory narrative consensus contrarian optimism pessimism valuation").split()


def peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    for key, v in PEAK_TFLOPS:
        if key.lower() in name.lower():
            return v
    return None


def text(rng: random.Random, n_words: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n_words)]
    return " ".join(w.capitalize() + "." if i % 12 == 11 else w for i, w in enumerate(words))


def make_data(root: Path, n: int, seed: int = 0, words=(40, 2600, 450, 2000)) -> dict[str, Path]:
    """SFT chat records and DPO pairs long enough to fill 2048 tokens once rendered; ``words``:
    SFT question and answer, DPO prompt and answers (in words)."""
    q, a, p, c = words
    rng = random.Random(seed)
    sft = [{"messages": [{"role": "user", "content": text(rng, q)},
                         {"role": "assistant", "content": text(rng, a)}]} for _ in range(n)]
    dpo = [{"prompt": text(rng, p), "chosen": text(rng, c), "rejected": text(rng, c)}
           for _ in range(n)]
    out = {}
    for name, rows in (("sft", sft), ("dpo", dpo)):
        p = root / f"{name}.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
        out[name] = p
    return out


def make_model(root: Path, smoke: bool = False) -> tuple[Path, int]:
    """The random 1B-class Llama (bf16) with the bundled tokenizer; returns (dir, N for MFU)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from mindprint.backends.common import load_tokenizer
    from mindprint.models import resolve

    tok = load_tokenizer(resolve("smollm2-135m-instruct").path)
    shape = LLAMA_1B if not smoke else dict(LLAMA_1B, hidden_size=64, intermediate_size=128,
                                             num_hidden_layers=2, num_attention_heads=4,
                                             num_key_value_heads=2, vocab_size=len(tok))
    cfg = LlamaConfig(**shape, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    out = root / "llama-1b-random"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())   # tied: the head matrix counted once
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out, n


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset_peak() -> None:
    import torch

    _sync()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (smoke)"


# -- Mindprint side ----------------------------------------------------------------------------
def run_mindprint(a) -> dict:
    from mindprint import config as C
    from mindprint.training import Trainer
    from mindprint.methods import get_method

    raw = {"method": a.method, "model": a.model_dir,
           "data": {"train": a.data, "max_length": a.seq, "packing": a.packing},
           "train": {"max_steps": a.steps, "batch_size": a.batch_size, "grad_accum": 1, "lr": 1e-4,
                     "schedule": "linear", "warmup_steps": 0, "warmup_ratio": 0.0,
                     "eval_every": 0, "eval_at_start": False, "save_every": 0, "log_every": 1,
                     "gradient_checkpointing": a.gradient_checkpointing, "seed": 0},
           "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "targets": TARGETS},
           "dpo": {"beta": 0.1}, "output_dir": tempfile.mkdtemp(prefix="mp-gpu-")}
    cfg = C.from_dict(raw)
    trainer = Trainer(cfg, get_method(cfg), overwrite=True, log=lambda s: print(s, file=sys.stderr))
    trainer.setup()
    _reset_peak()
    ends, tokens = [], []
    step = trainer.train_step

    def timed():
        if not ends:
            _sync()
            ends.append(time.perf_counter())
        m = step()      # float(loss) inside synchronises every step
        _sync()
        ends.append(time.perf_counter())
        tokens.append(m["tokens"])
        return m

    trainer.train_step = timed
    trainer.train()
    return {"ends": ends, "tokens": tokens, "peak_mem_mb": _peak_mb(), "gpu": _gpu_name()}


# -- TRL side ----------------------------------------------------------------------------------
def run_trl(a) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    cuda = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=torch.bfloat16 if cuda else
                                                 torch.float32, attn_implementation="sdpa")
    model.to("cuda" if cuda else "cpu")
    tok = AutoTokenizer.from_pretrained(a.model_dir)
    peft = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS, bias="none",
                      task_type="CAUSAL_LM")
    rows = [json.loads(line) for line in Path(a.data).read_text().splitlines() if line.strip()]
    common = dict(output_dir=tempfile.mkdtemp(prefix="trl-gpu-"), per_device_train_batch_size=a.batch_size,
                  gradient_accumulation_steps=1, max_steps=a.steps, learning_rate=1e-4,
                  lr_scheduler_type="linear", warmup_steps=0, logging_steps=1, save_strategy="no",
                  eval_strategy="no", report_to=[], seed=0, bf16=cuda, use_cpu=not cuda,
                  gradient_checkpointing=a.gradient_checkpointing, max_length=a.seq,
                  dataloader_num_workers=0, disable_tqdm=True)
    if a.method == "dpo":
        from trl import DPOConfig, DPOTrainer

        ds = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                                 "chosen": [{"role": "assistant", "content": r["chosen"]}],
                                 "rejected": [{"role": "assistant", "content": r["rejected"]}]}
                                for r in rows])
        trainer = DPOTrainer(model=model, args=DPOConfig(beta=0.1, **common), train_dataset=ds,
                             processing_class=tok, peft_config=peft)
    else:
        from trl import SFTConfig, SFTTrainer

        ds = Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]}
                                for r in rows])
        trainer = SFTTrainer(model=model, args=SFTConfig(completion_only_loss=True, **common),
                             train_dataset=ds, processing_class=tok, peft_config=peft)
    _reset_peak()
    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *args, **kw):
            if not ends:
                _sync()
                ends.append(time.perf_counter())

        def on_step_end(self, *args, **kw):
            _sync()
            ends.append(time.perf_counter())

    trainer.add_callback(Clock())
    trainer.train()
    return {"ends": ends, "tokens": None, "peak_mem_mb": _peak_mb(), "gpu": _gpu_name()}


# -- SFT packing (issue 25): Mindprint packed vs unpacked on short turns -------------------------
SHORT_TURNS = REPO / "benchmarks" / "data" / "short_turns.jsonl"


def short_turns_data(root: Path, n: int, source: Path = SHORT_TURNS) -> Path:
    """``n`` records of ``source`` (repeated in order) as one training file."""
    rows = [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = root / "short_turns.jsonl"
    out.write_text("".join(rows[i % len(rows)] + "\n" for i in range(n)), encoding="utf-8")
    return out


def packing_rows(unpacked: dict, packed: dict, warmup: int, n_params: int,
                 peak: float | None) -> dict:
    """One result row: both runs credited the packed run's real tokens per step (the same
    examples per step either way), ``packed_speedup`` = unpacked s/step ÷ packed s/step."""
    per_step = sum(packed["tokens"]) / len(packed["tokens"])
    rows = {"unpacked": summarise(unpacked, per_step, warmup, n_params, peak),
            "packed": summarise(packed, per_step, warmup, n_params, peak)}
    return {"tokens_per_step": per_step,
            "packed_speedup": rows["unpacked"]["s_per_step"] / rows["packed"]["s_per_step"],
            **{f"{k}_{s}": v for s, r in rows.items() for k, v in r.items()}}


# -- driver ------------------------------------------------------------------------------------
def side(name: str, method: str, a, model_dir: Path, data: Path, packing: bool = False,
         seq: int | None = None) -> dict:
    cmd = [sys.executable, __file__, "--_side", name, "--_method", method, "--_model-dir",
           str(model_dir), "--_data", str(data), "--steps", str(a.steps),
           "--seq", str(seq or a.seq), "--_packing", "on" if packing else "off",
           "--batch-size", str(a.batch_size if method == "sft" else a.dpo_batch_size)]
    if a.smoke:
        cmd.append("--smoke")
    if a.gradient_checkpointing:
        cmd.append("--gradient-checkpointing")
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE,
                       stderr=None if a.verbose else subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.stderr.write((r.stderr or "")[-6000:])
        raise SystemExit(f"{name} {method} failed (exit {r.returncode})")
    return json.loads(r.stdout.strip().splitlines()[-1])


def summarise(res: dict, tokens_per_step: float, warmup: int, n_params: int,
              peak: float | None) -> dict:
    ends = res["ends"][warmup:]
    steps = len(ends) - 1
    s_per_step = (ends[-1] - ends[0]) / max(steps, 1)
    tps = tokens_per_step / s_per_step
    mfu = 4 * n_params * tps / (peak * 1e12) if peak else None
    return {"s_per_step": s_per_step, "tokens_per_s": tps, "mfu": mfu,
            "peak_mem_gb": res["peak_mem_mb"] / 1024, "timed_steps": steps}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="sft,dpo",
                   help="comma-separated: sft, dpo (vs TRL), sft_packing (packed vs unpacked)")
    p.add_argument("--pack-len", type=int, default=1024,
                   help="sft_packing: data.max_length, the packed row length")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=8, help="SFT examples per step")
    p.add_argument("--dpo-batch-size", type=int, default=4, help="DPO pairs per step")
    p.add_argument("--gradient-checkpointing", action="store_true", help="on for both sides")
    p.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak of this GPU")
    p.add_argument("--workdir", default=None, help="where the model and data go (default: a temp dir)")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny model, any device: checks the script")
    p.add_argument("--_side", choices=["mindprint", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--_method", help=argparse.SUPPRESS)
    p.add_argument("--_model-dir", dest="model_dir", help=argparse.SUPPRESS)
    p.add_argument("--_data", dest="data", help=argparse.SUPPRESS)
    p.add_argument("--_packing", choices=["on", "off"], default="off", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.packing = a._packing == "on"
    if a._side:
        a.method = a._method
        print(json.dumps((run_mindprint if a._side == "mindprint" else run_trl)(a)))
        return 0

    import torch

    if not torch.cuda.is_available() and not a.smoke:
        print("skipped: no CUDA (benchmarks/gpu.py measures Mindprint and TRL on a CUDA GPU)")
        print(json.dumps({"skipped": "no CUDA"}))
        return 0
    if a.smoke:
        a.seq, a.steps, a.warmup, a.batch_size, a.dpo_batch_size = 256, 4, 1, 2, 1
    gpu = _gpu_name()
    peak = peak_tflops(gpu, a.peak_tflops)
    root = Path(a.workdir or tempfile.mkdtemp(prefix="mindprint-gpu-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    model_dir, n_params = make_model(root, a.smoke)
    n_records = max(a.batch_size, a.dpo_batch_size) * (a.steps + 2)
    data = make_data(root, n_records, words=(30, 400, 60, 300) if a.smoke else (40, 2600, 450, 2000))
    from mindprint.backends.common import load_tokenizer

    tok = load_tokenizer(str(model_dir))
    results, packing = [], []
    for method in [m.strip() for m in a.methods.split(",") if m.strip()]:
        if method == "sft_packing":
            turns = short_turns_data(root, n_records * 4)
            runs = [side("mindprint", "sft", a, model_dir, turns, packing=on, seq=a.pack_len)
                    for on in (False, True)]
            packing.append({"method": method, "batch": a.batch_size, "pack_len": a.pack_len,
                            **packing_rows(*runs, a.warmup, n_params, peak)})
            continue
        mp = side("mindprint", method, a, model_dir, data[method])
        trl = side("trl", method, a, model_dir, data[method])
        # the same tokens are credited to both sides: Mindprint's count per step (steady: every
        # record renders to the same lengths)
        per_step = sum(mp["tokens"]) / len(mp["tokens"])
        rows = {"mindprint": summarise(mp, per_step, a.warmup, n_params, peak),
                "trl": summarise(trl, per_step, a.warmup, n_params, peak)}
        ratio = rows["mindprint"]["tokens_per_s"] / rows["trl"]["tokens_per_s"]
        bs = a.batch_size if method == "sft" else a.dpo_batch_size
        results.append({"method": method, "batch": bs, "tokens_per_step": per_step,
                        "ratio_vs_trl": ratio, **{f"{k}_{s}": v for s, r in rows.items()
                                                   for k, v in r.items()}})
    del tok
    print(f"{gpu}; Llama 1B-class random init, N = {n_params / 1e9:.3f} B; seq {a.seq}; bf16; LoRA "
          f"r16 on all linear; gradient checkpointing {'on' if a.gradient_checkpointing else 'off'}; "
          f"{a.steps} steps (timing after {a.warmup}); MFU = 4·N·tokens/s ÷ "
          f"{peak if peak else '?'} TFLOP/s; torch {torch.__version__}")
    print("| method | batch | side | tokens/s | MFU | s/step | peak mem (GB) | vs TRL |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        for s, label in (("mindprint", "Mindprint"), ("trl", "TRL 1.16")):
            mfu = r["mfu_" + s]
            mfu_s = "—" if mfu is None else "%.1f%%" % (100 * mfu)
            vs = "%.2f×" % r["ratio_vs_trl"] if s == "mindprint" else ""
            print("| %s | %d | %s | %s | %s | %.3f | %.1f | %s |" % (
                r["method"], r["batch"], label, format(r["tokens_per_s_" + s], ",.0f"), mfu_s,
                r["s_per_step_" + s], r["peak_mem_gb_" + s], vs))
    for r in packing:
        print(f"SFT packing on short turns, rows of {r['pack_len']}, batch {r['batch']}: "
              f"{r['tokens_per_s_unpacked']:,.0f} tokens/s unpacked, "
              f"{r['tokens_per_s_packed']:,.0f} packed ({r['packed_speedup']:.2f}x); peak "
              f"{r['peak_mem_gb_unpacked']:.1f} / {r['peak_mem_gb_packed']:.1f} GB")
    for r in results + packing:
        print(json.dumps({"gpu": gpu, "peak_tflops": peak, "n_params": n_params, **r}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
