"""Process-wide tuning for a torch run, as one explicit call at start-up.

:func:`configure_process` is called by the entry points that run a model (the CLI's train,
generate and eval commands, the web UI's job runner), never by constructing a model or a
backend: what it changes outlives any one object. Today that is glibc's malloc on a CPU run of a
method listed in :data:`KEEP_FREED_MEMORY` (:func:`keep_freed_memory`). Thread counts stay with
the training loop, which knows how many processes share the node (torchrun).
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys

import torch

# Methods whose CPU runs keep freed memory in the heap: those measured to gain from it. A GRPO step
# frees and re-allocates ~1 GB (rollout, logits chunks, autocast casts): 220-340 thousand page faults
# a step without it, ~10 % of a bf16 step. Not the others: a DPO step took 2.91 s with it against
# 3.01-3.14 s without (noise), and its cold reference pass in setup (length-sorted batches of
# growing size) left holes the heap never gave back: peak RSS by the end of setup 1.3 -> 3.8 GB,
# 2.9 -> 4.3 GB over the run (benchmarks/RESULTS.md, "Like for like (issue 25)"). Inference (no
# config: generate, eval, serving) is left alone too.
KEEP_FREED_MEMORY = frozenset({"grpo"})


def configure_process(cfg=None, *, device: str | None = None) -> dict:
    """Apply the process settings a run on ``cfg`` (a :class:`~mindprint.config.Config`) or on
    ``device`` ("auto", "cpu", "cuda", "mps") wants; returns what was set. Safe to call more than
    once. Only CPU training runs of the torch backend whose method is in :data:`KEEP_FREED_MEMORY`
    are tuned: that is where the kept memory pays off."""
    if cfg is not None:
        if cfg.backend != "torch":
            return {}
        device = cfg.model.device
    device = device or "auto"
    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if not cpu:
        return {}
    wanted = cfg is not None and cfg.method in KEEP_FREED_MEMORY
    return {"keep_freed_memory": keep_freed_memory() if wanted else False}


@functools.lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
    """Let glibc's malloc keep the memory a CPU run frees, for the next step to reuse.

    A training step on a CPU allocates and frees the same activations, logits chunks and casts
    each time. glibc hands every block over its mmap threshold straight back to the kernel on
    free, so each step page-faults that memory in again and the kernel zeroes it (the cost is in
    benchmarks/RESULTS.md, "Numbers behind code comments").
    With large blocks served from the heap (``M_MMAP_MAX`` 0; glibc still falls back to mmap if
    the heap cannot grow) and no trimming of its top, later steps fault almost nothing once the
    heap has settled (a few steps). The price: the process keeps its peak memory until it exits.
    Process-wide, so done once, and only where it is safe to assume glibc;
    ``MINDPRINT_MALLOC_TUNING=0``, or ``GLIBC_TUNABLES`` naming malloc settings, leave malloc as
    it is. Returns whether it was set."""
    if (not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc"
            or os.environ.get("MINDPRINT_MALLOC_TUNING", "1") == "0"
            or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4           # <malloc.h>
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
