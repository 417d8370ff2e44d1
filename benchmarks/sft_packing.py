"""SFT packing (issue 25) on the bundled model, CPU: tokens/s of the same micro-batches unpacked
(length-grouped padding, Mindprint's default before packing) and packed, alternating step by step
in one process so a busy machine slows every variant alike.

    python benchmarks/sft_packing.py                       # bundled persona + short turns, 128/256
    python benchmarks/sft_packing.py --steps 6 --batch-size 8

Variants per micro-batch (forward + backward of the SFT loss through the LoRA model; the
optimizer step is the same for all and left out):

* ``unpacked``: one example per row, right-padded to the micro-batch's longest;
* ``packed``: ``data.packing``'s rows (best-fit-decreasing to ``max_length``) with the attention
  the backend picks for this model (per-example attention: ``layout``);
* ``packed_mask``: the same rows through SDPA with a ``[R, 1, W, W]`` boolean block mask;
* ``auto``: what training does (``backend.batch(..., pack_to=max_length)``): packed only where
  that saves array positions (``data.packing.plan_rows``), else padded.

Micro-batches are the training sampler's (epoch 0, seed 0); ``--random-batches`` forms them
without length grouping instead, to show what packing saves where batches are ragged
(Mindprint's sampler groups by length, which already removes most padding). Printed: tokens/s
per variant (real tokens only), the padding share without and with packing, and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASETS = {"persona": REPO / "examples" / "data" / "persona_train.jsonl",
            "short_turns": REPO / "benchmarks" / "data" / "short_turns.jsonl"}


def micro_batches(lengths: list[int], batch_size: int, n: int,
                  grouped: bool = True) -> list[list[int]]:
    """The first ``n`` micro-batches the training sampler forms (accum 1, seed 0), or with
    ``grouped`` False a seeded shuffle cut in order (random batches, as a sampler without length
    grouping forms them: TRL's default)."""
    import random

    from mindprint.data.batching import StepSampler

    if not grouped:
        idx = list(range(len(lengths)))
        random.Random(0).shuffle(idx)
        return [idx[k * batch_size:(k + 1) * batch_size] for k in range(n)]
    s = StepSampler(lengths, batch_size, 1, 0)
    return [s.next_step()[0] for _ in range(n)]


def variants(backend, kind_for_mask: str = "bool"):
    """name → function(examples) returning the loss of that layout."""
    from mindprint.backends.torch.sft_packing import (packed_batch, packed_token_logps,
                                                      packing_kind)
    from mindprint.data.packing import best_fit_decreasing

    pad, dev, model = backend.tokenizer.pad_token_id, backend.device, backend.model

    def unpacked(ex, _):
        b = backend.batch([e.input_ids for e in ex], [e.loss_mask for e in ex])
        return -backend.token_logps(b).sum()

    def packed_with(kind):
        def f(ex, cap):
            rows = best_fit_decreasing([len(e.input_ids) for e in ex], cap)   # always packed
            b = packed_batch([e.input_ids for e in ex], [e.loss_mask for e in ex], rows, pad, dev,
                             kind)
            return -packed_token_logps(model, b).sum()
        return f

    def auto(ex, cap):       # what training does: packed where it saves positions
        b = backend.batch([e.input_ids for e in ex], [e.loss_mask for e in ex], pack_to=cap)
        return -backend.token_logps(b).sum()

    return {"unpacked": unpacked, "packed": packed_with(packing_kind(model)),
            "packed_mask": packed_with(kind_for_mask), "auto": auto}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=6, help="micro-batches timed per variant")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lengths", default="128,256", help="data.max_length values")
    p.add_argument("--datasets", default="persona,short_turns")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--random-batches", action="store_true",
                   help="micro-batches without length grouping (what packing saves there)")
    a = p.parse_args(argv)

    import torch

    from mindprint import config as C
    from mindprint.backends.torch.backend import TorchBackend
    from mindprint.backends.torch.load import load_base
    from mindprint.backends.torch.lora import add_lora
    from mindprint.data.jsonl import load_many
    from mindprint.data.packing import packing_stats
    from mindprint.data.render import render_chat_records
    from mindprint.models import resolve

    torch.set_num_threads(a.threads)
    cfg = C.load(str(REPO / "examples" / "quickstart.yaml"), use_env=False)
    base, tok = load_base(resolve(cfg.model.name), dtype="float32", device="cpu")
    model = add_lora(base, cfg.lora.model_copy(update={"dropout": 0.0}), 0)
    model.train()
    backend = TorchBackend(model, tok)
    fns = variants(backend)
    rows = []
    for name in a.datasets.split(","):
        recs = load_many([str(DATASETS[name])], None, expect=("chat",)).records
        for cap in (int(x) for x in a.lengths.split(",")):
            ex, _ = render_chat_records(tok, recs, cap)
            lengths = [len(e.input_ids) for e in ex]
            batches = micro_batches(lengths, a.batch_size, a.steps + 1,
                                    grouped=not a.random_batches)
            spent = {v: 0.0 for v in fns}
            tokens = 0
            for k, idx in enumerate(batches):
                group = [ex[i] for i in idx]
                order = list(fns)[k % len(fns):] + list(fns)[:k % len(fns)]   # rotate
                for v in order:
                    t0 = time.perf_counter()
                    fns[v](group, cap).backward()
                    dt = time.perf_counter() - t0
                    model.zero_grad(set_to_none=True)
                    if k:                      # the first micro-batch warms up
                        spent[v] += dt
                if k:
                    tokens += sum(lengths[i] for i in idx)
            st = packing_stats([[lengths[i] for i in idx] for idx in batches[1:]], cap)
            row = {"dataset": name, "max_length": cap, "batch_size": a.batch_size,
                   "batches": "random" if a.random_batches else "length-grouped",
                   "steps": a.steps, "tokens": tokens,
                   "padding_unpacked": round(st.padding_share, 4),
                   "padding_packed": round(st.packed_padding_share, 4), "rows": st.rows,
                   **{f"tokens_per_s_{v}": round(tokens / spent[v], 1) for v in fns}}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"torch {torch.__version__}, {a.threads} threads, bundled SmolLM2-135M, LoRA r16 "
          f"attn+mlp, float32, forward+backward, batch {a.batch_size}, "
          f"{'random' if a.random_batches else 'length-grouped (the sampler)'} micro-batches")
    print("| data | max_length | padding unpacked → with packing | tokens/s unpacked | packed "
          "(per-example attention) | packed (SDPA block mask) | auto (data.packing) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        u = r["tokens_per_s_unpacked"]
        print(f"| {r['dataset']} | {r['max_length']} | {r['padding_unpacked']:.0%} → "
              f"{r['padding_packed']:.0%} | {u:,.0f} | {r['tokens_per_s_packed']:,.0f} "
              f"({r['tokens_per_s_packed'] / u:.2f}×) | {r['tokens_per_s_packed_mask']:,.0f} "
              f"({r['tokens_per_s_packed_mask'] / u:.2f}×) | {r['tokens_per_s_auto']:,.0f} "
              f"({r['tokens_per_s_auto'] / u:.2f}×) |")
    print(json.dumps({"benchmark": "sft_packing", "threads": a.threads, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
