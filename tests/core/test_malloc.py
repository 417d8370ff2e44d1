"""keep_freed_memory: after it, a CPU step's freed blocks are reused instead of faulted in anew."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import json, resource, torch
    from mindprint.backends.torch.process import keep_freed_memory
    tuned = keep_freed_memory()
    def step():                        # a 64 MiB activation, written, then freed
        t = torch.empty(16 * 2**20, dtype=torch.float32); t.fill_(1.0); del t
    for _ in range(12):                # the heap settles: a freed block pinned by a later small
        step()                         # allocation coalesces with the next one freed beside it
                                       # (more steps the smaller the heap the imports left)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(6):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(json.dumps({"tuned": tuned, "faults": faults}))
""")

PAGES = 6 * 64 * 2**20 // 4096        # what six untuned steps fault in: 98,304 pages


def _probe(**env):
    e = {k: v for k, v in os.environ.items() if k not in ("MINDPRINT_MALLOC_TUNING", "GLIBC_TUNABLES")}
    e.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE], env=e, capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux-only: glibc malloc tuning")
def test_freed_blocks_are_reused_not_faulted_in_again():
    tuned = _probe()
    untouched = _probe(MINDPRINT_MALLOC_TUNING="0")
    assert tuned["tuned"] is True and untouched["tuned"] is False
    # stock glibc returns the 64 MiB block to the kernel on every free: each step faults it in
    assert untouched["faults"] >= PAGES * 0.9
    # tuned, the block stays in the heap: the steps touch memory already mapped
    assert tuned["faults"] < PAGES * 0.05


def test_user_malloc_tunables_are_left_alone():
    assert _probe(GLIBC_TUNABLES="glibc.malloc.arena_max=2")["tuned"] is False


CHOICE = textwrap.dedent("""
    import json, sys
    from mindprint import config as C
    from mindprint.backends.torch.process import KEEP_FREED_MEMORY, configure_process
    cfg = C.from_dict({"method": sys.argv[1], "model": {"device": "cpu"},
                       "data": {"train": "unused.jsonl"}})
    print(json.dumps({"set": configure_process(cfg), "listed": sys.argv[1] in KEEP_FREED_MEMORY,
                      "inference": configure_process(device="cpu")}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux-only: glibc malloc tuning")
@pytest.mark.parametrize("method", ["dpo", "grpo"])
def test_only_listed_methods_keep_freed_memory(method):
    """Per method: DPO's cold reference pass left a heap of holes with it (RESULTS.md), GRPO's
    steps are faster with it. Each in a fresh process: the setting is process-wide."""
    e = {k: v for k, v in os.environ.items() if k not in ("MINDPRINT_MALLOC_TUNING", "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", CHOICE, method], env=e, capture_output=True,
                         text=True, check=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got["listed"] is (method == "grpo")
    assert got["set"] == {"keep_freed_memory": got["listed"]}
    # a call without a config (generate, eval, serving) sets nothing
    assert got["inference"] == {"keep_freed_memory": False}
