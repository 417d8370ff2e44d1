"""Serving speed, side by side: llama.cpp on Mindprint's own f16 GGUF of an adapter vs Mindprint's
chat engine (the one behind ``mindprint serve``'s /v1 and ``mindprint chat``) on the same adapter,
same CPU, same thread count (issue 22).

    python benchmarks/serve.py --run runs/quickstart --threads 2
    python benchmarks/serve.py --run runs/quickstart --gguf /tmp/q.gguf   # reuse an f16 export

The GGUF is written once by ``mindprint export gguf --quant f16`` (the adapter merged; voice check
off) unless ``--gguf`` names one. Both sides answer the same chat prompts (the run's held-out
prompts, else a built-in list) greedily, up to ``--tokens`` new tokens each, rendered by each
side's chat template (llama.cpp: the template embedded in the file, through
``create_chat_completion``). Each side runs after the other in this process, with the thread
count pinned (torch.set_num_threads; llama.cpp n_threads and n_threads_batch).

Measured, per side (median over ``--repeats`` prompts):

* decode tokens/s, single stream: (tokens − 1) / (time of the last token − time of the first);
  llama.cpp: streamed chunks (one per token); Mindprint: the engine's ``completion_tokens``
  over the time between its first and last streamed delta;
* time to first token: from the request to its first streamed text, model loaded and warm
  (the adapter folded by a warm-up request); for Mindprint also the first request after load
  (adapter attach + fold included);
* 8 concurrent streams (``--streams``): all submitted at once; aggregate tokens/s = all
  completion tokens / wall time from submission to the last answer. llama-cpp-python's
  high-level API decodes one sequence at a time, so its figure is the 8 answered in turn.

The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = ["Are we near the top of the market?", "What should a young investor do first?",
           "Is cash a position?", "How do you think about risk after a long boom?",
           "What did 2008 teach you?", "Why do crowds get cycles wrong?",
           "Should I buy the dip?", "What is the one thing you check every morning?"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default="runs/quickstart", help="run or adapter directory")
    p.add_argument("--gguf", help="an f16 GGUF of the same adapter (default: exported here)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--tokens", type=int, default=64, help="new tokens per answer at most")
    p.add_argument("--repeats", type=int, default=3, help="single-stream prompts per side")
    p.add_argument("--streams", type=int, default=8, help="concurrent streams")
    p.add_argument("--dtype", default="auto", help="Mindprint's decode dtype (auto: bf16 where "
                   "native)")
    return p


def prompts_of(adapter: Path, n: int) -> list[list[dict]]:
    from mindprint.export.gguf import run_sources
    from mindprint.export.verify import held_out_prompts

    src = run_sources(str(adapter))
    got = []
    if src.get("prompts"):
        got = held_out_prompts(src["prompts"], system_prompt=src.get("system_prompt"), limit=n)
    fill = [[{"role": "user", "content": q}] for q in PROMPTS]
    return (got + fill)[:n]


def export_f16(adapter: Path, out: Path) -> Path:
    from mindprint.export.gguf import export_gguf

    export_gguf(str(out), adapter=str(adapter), quant="f16", max_prompts=0, device="cpu",
                log=lambda s: print(s, file=sys.stderr))
    return out


# -- llama.cpp -----------------------------------------------------------------------------------
def llama_side(gguf: Path, prompts, *, threads: int, tokens: int, repeats: int,
               streams: int) -> dict:
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_threads=threads, n_threads_batch=threads, n_ctx=1024,
                verbose=False)

    def one(msgs):
        t0 = time.perf_counter()
        stamps = []
        for ch in llm.create_chat_completion(msgs, max_tokens=tokens, temperature=0.0,
                                             stream=True):
            if ch["choices"][0]["delta"].get("content"):
                stamps.append(time.perf_counter())
        return t0, stamps

    one(prompts[0])                                            # warm-up
    singles = []
    for msgs in prompts[:repeats]:
        t0, st = one(msgs)
        singles.append({"tokens": len(st), "ttft_s": st[0] - t0,
                        "decode_tok_s": (len(st) - 1) / (st[-1] - st[0])})
    t0 = time.perf_counter()
    n = 0
    for msgs in prompts[:streams]:
        n += len(one(msgs)[1])
    wall = time.perf_counter() - t0
    return _summary(singles) | {"streams": streams, "aggregate_tok_s": n / wall,
                                "aggregate_tokens": n, "batched": False}


# -- Mindprint ------------------------------------------------------------------------------------
def mindprint_side(adapter: Path, prompts, *, threads: int, tokens: int, repeats: int,
                   streams: int, dtype: str) -> dict:
    import torch

    from mindprint.server.engine import ChatEngine, Settings

    eng = ChatEngine(None, device="cpu", default_adapter=str(adapter), dtype=dtype)
    settings = Settings(temperature=0.0, max_tokens=tokens)

    def one(msgs, submit_at=None):
        t0 = submit_at or time.perf_counter()
        req = eng.submit(msgs, str(adapter), settings) if submit_at is None else msgs
        first = last = None
        for ev in req.stream():
            if ev[0] == "delta":
                last = time.perf_counter()
                first = first or last
            elif ev[0] == "error":
                raise ev[1]
            else:
                return t0, first, last, ev[2]["completion_tokens"]

    # the first request loads the base; its time to first token counts the adapter attach and
    # the fold, not the base load (timed apart)
    t = time.perf_counter()
    eng.load()
    torch.set_num_threads(threads)
    load_s = time.perf_counter() - t
    t0, first, _, _ = one(prompts[0])
    cold_ttft = first - t0
    singles = []
    for msgs in prompts[:repeats]:
        t0, first, last, n = one(msgs)
        singles.append({"tokens": n, "ttft_s": first - t0,
                        "decode_tok_s": (n - 1) / (last - first)})
    t0 = time.perf_counter()
    reqs = [eng.submit(m, str(adapter), settings) for m in prompts[:streams]]
    res = [one(r, submit_at=t0) for r in reqs]
    wall = max(r[2] for r in res) - t0
    n = sum(r[3] for r in res)
    eng.close()
    return _summary(singles) | {"streams": streams, "aggregate_tok_s": n / wall,
                                "aggregate_tokens": n, "batched": True,
                                "first_request_ttft_s": cold_ttft, "model_load_s": load_s,
                                "decode_dtype": eng.decode_dtype or "generate"}


def _summary(singles: list[dict]) -> dict:
    return {"decode_tok_s": statistics.median(s["decode_tok_s"] for s in singles),
            "ttft_s": statistics.median(s["ttft_s"] for s in singles),
            "single_tokens": [s["tokens"] for s in singles]}


def main() -> None:
    a = parser().parse_args()
    import torch

    torch.set_num_threads(a.threads)
    from mindprint.outputs import adapter_dir

    adapter = Path(adapter_dir(a.run))
    n = max(a.repeats, a.streams)
    prompts = prompts_of(adapter, n)
    while len(prompts) < n:
        prompts += prompts
    with tempfile.TemporaryDirectory() as tmp:
        gguf = Path(a.gguf) if a.gguf else export_f16(adapter, Path(tmp) / "bench-f16.gguf")
        lc = llama_side(gguf, prompts, threads=a.threads, tokens=a.tokens, repeats=a.repeats,
                        streams=a.streams)
    mp = mindprint_side(adapter, prompts, threads=a.threads, tokens=a.tokens,
                        repeats=a.repeats, streams=a.streams, dtype=a.dtype)
    ratio = mp["decode_tok_s"] / lc["decode_tok_s"]
    print(f"| | llama.cpp (f16 GGUF) | Mindprint engine ({mp['decode_dtype']}) |")
    print("|---|---|---|")
    print(f"| decode tokens/s, 1 stream | {lc['decode_tok_s']:.1f} | {mp['decode_tok_s']:.1f} "
          f"({ratio:.2f}x) |")
    print(f"| time to first token (warm) | {lc['ttft_s']:.3f} s | {mp['ttft_s']:.3f} s |")
    print(f"| first request after load | | {mp['first_request_ttft_s']:.3f} s |")
    print(f"| {a.streams} streams, aggregate tokens/s | {lc['aggregate_tok_s']:.1f} (in turn) | "
          f"{mp['aggregate_tok_s']:.1f} (batched) |")
    print(json.dumps({"bench": "serve", "run": str(a.run), "threads": a.threads,
                      "tokens": a.tokens, "llama_cpp": lc, "mindprint": mp,
                      "decode_ratio": ratio, "machine": platform.machine(),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
    # llama.cpp's and torch's thread pools, both alive in this one process, abort in their C++
    # destructors at interpreter shutdown ("terminate called without an active exception", after
    # everything above was printed): leave without running them
    sys.stdout.flush()
    os._exit(0)
