"""What every backend's loop and model code share and nothing framework-specific: the learning-rate
schedule, LoRA target names, atomic directory writes, the single-process world
(:class:`LocalDist`)."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError

ATTN_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "query_key_value", "Wqkv",
              "c_attn", "out_proj", "dense")
MLP_NAMES = ("gate_proj", "up_proj", "down_proj", "gate_up_proj", "fc1", "fc2", "w1", "w2", "w3",
             "dense_h_to_4h", "dense_4h_to_h", "c_fc")
ADAPTER_META = "mindprint.json"


def lr_lambda(cfg) -> callable:
    """Multiplier of ``train.lr`` for optimizer step ``step`` (0-based): linear warmup, then
    constant, linear or cosine decay to ``min_lr_ratio``."""
    t = cfg.train
    warm = t.warmup_steps or int(round(t.warmup_ratio * t.max_steps))

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / (warm + 1)
        if t.schedule == "constant":
            return 1.0
        span = max(1, t.max_steps - warm)
        progress = min(1.0, (step - warm) / span)
        decay = 0.5 * (1 + math.cos(math.pi * progress)) if t.schedule == "cosine" else 1 - progress
        return t.min_lr_ratio + (1 - t.min_lr_ratio) * decay

    return f


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        raise ModelError(f"{path}: the tokenizer has no chat template; Mindprint renders every "
                         "record through one")
    return tok


def target_names(available: set[str], targets) -> list[str] | str:
    """``lora.targets`` → leaf module names, given the names of the model's linear layers
    (``lm_head`` excluded); "all_linear" stays the PEFT keyword ``"all-linear"``."""
    available = set(available) - {"lm_head"}
    if targets == "all_linear":
        return "all-linear"
    if isinstance(targets, str):
        wanted = ATTN_NAMES if targets == "attn" else ATTN_NAMES + MLP_NAMES
        found = [n for n in wanted if n in available]
        if targets == "attn" and "dense" in found and "o_proj" in found:
            found.remove("dense")
        if not found:
            raise ModelError(f"lora.targets '{targets}': no such modules in this model; "
                             f"its linear layers are {sorted(available)}")
        return found
    missing = [t for t in targets if t not in available]
    if missing:
        raise ModelError(f"lora.targets: {missing} not in this model; its linear layers are "
                         f"{sorted(available)}")
    return list(targets)


def lora_scale(r: int, alpha: float, rslora: bool = False) -> float:
    """PEFT's LoRA scale: alpha/r, or alpha/√r with rsLoRA (mlx-lm takes this number raw)."""
    return alpha / math.sqrt(r) if rslora else alpha / r


def atomic_dir(final: Path):
    """Context manager yielding a temp dir that replaces ``final`` only if the block succeeds."""
    @contextlib.contextmanager
    def cm():
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            yield tmp
            old = None
            if final.exists():
                old = final.parent / f".{final.name}.old-{os.getpid()}"
                os.replace(final, old)
            os.replace(tmp, final)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return cm()


def groups_as_rows(groups) -> tuple[list, list, list[int], int, list[list[float]]]:
    """Prompt groups laid out one row per completion (the unpacked fallback):
    ``(sequences, loss masks, flat index r·K + k of each row, K, trained-token counts [R][K])``."""
    K = max(len(b) for _, b in groups)
    seqs, masks, where = [], [], []
    for r, (p, branches) in enumerate(groups):
        for k, (c, m) in enumerate(branches):
            seqs.append(list(p) + list(c))
            masks.append([0] * len(p) + list(m))
            where.append(r * K + k)
    counts = [[float(sum(m)) for _, m in b] + [0.0] * (K - len(b)) for _, b in groups]
    return seqs, masks, where, K, counts


@dataclass(frozen=True)
class LocalDist:
    """The distributed world of a single process (see :class:`~.base.Dist`): every collective is
    the identity, so code written for torchrun runs unchanged without it."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    fsdp: bool = False

    @property
    def is_main(self) -> bool:
        return True

    def barrier(self) -> None:
        pass

    def sum_floats(self, values: list[float]) -> list[float]:
        return [float(v) for v in values]

    def any_flags(self, *flags: bool) -> list[bool]:
        return [bool(f) for f in flags]

    def gather(self, obj) -> list:
        return [obj]

    def broadcast(self, obj):
        return obj

    def sum_dicts(self, d: dict) -> dict:
        return dict(d)

    def share(self, items: list) -> list:
        return list(items)


LOCAL = LocalDist()


def padded_share(ctx, batches: list) -> tuple[list, list]:
    """``(this rank's batches, extra passes)`` of ``ctx`` (a :class:`~.base.Dist`). Under FSDP
    every forward is a collective, so a rank with fewer batches repeats one (results discarded)
    until all ranks made as many passes."""
    mine = ctx.share(batches)
    if not ctx.fsdp or not batches:
        return mine, []
    most = -(-len(batches) // ctx.world_size)
    return mine, [batches[0]] * (most - len(mine))
