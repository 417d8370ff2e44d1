"""Deterministic, resumable, length-grouped batching.

The order of examples is a pure function of ``(seed, epoch)``, so a run can resume from
``(epoch, step_in_epoch)`` alone and replay exactly the batches an uninterrupted run would see.

Each optimizer step consumes one *step group* of ``batch_size × grad_accum`` examples, split into
``grad_accum`` micro-batches. Grouping happens at the level of step groups, which is what makes
batch 4 × accum 1 and batch 1 × accum 4 see the same examples in the same step:

1. shuffle all indices with ``Random(seed * 1_000_003 + epoch)``;
2. cut into mega-chunks of ``group × 16`` indices and sort each by length (length grouping
   keeps padding small);
3. cut into step groups, shuffle their order, and sort each group's members by length so
   micro-batches within a step are homogeneous as well.

The last incomplete step group of an epoch is dropped (examples rotate across epochs).

Across ``world_size`` processes (torchrun) a step group holds ``batch_size × grad_accum ×
world_size`` examples — the same groups a single process with ``batch_size × world_size`` sees —
and global micro-batch ``i`` is split between the ranks by stride (rank ``r`` takes members
``r, r + world_size, …`` of the length-sorted micro-batch, so every rank gets similar lengths).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


def epoch_step_groups(lengths: list[int], group_size: int, seed: int, epoch: int,
                      mega: int = 16) -> list[list[int]]:
    n = len(lengths)
    if n == 0:
        return []
    rng = random.Random(seed * 1_000_003 + epoch)
    idx = list(range(n))
    rng.shuffle(idx)
    if n < group_size:
        # tiny datasets: repeat to fill one group rather than never training
        reps = -(-group_size // n)
        idx = (idx * reps)[:group_size]
        n = group_size
    chunk = group_size * mega
    ordered: list[int] = []
    for s in range(0, n, chunk):
        ordered.extend(sorted(idx[s:s + chunk], key=lambda i: lengths[i]))
    groups = [ordered[s:s + group_size] for s in range(0, len(ordered) - group_size + 1, group_size)]
    rng.shuffle(groups)
    return [sorted(g, key=lambda i: (lengths[i], i)) for g in groups]


@dataclass
class StepSampler:
    """Yields, per optimizer step, ``grad_accum`` lists of example indices."""

    lengths: list[int]
    batch_size: int
    grad_accum: int
    seed: int
    epoch: int = 0
    pos: int = 0          # step groups already consumed in this epoch
    world_size: int = 1   # processes sharing each step (torchrun)
    rank: int = 0

    def __post_init__(self) -> None:
        self._groups: list[list[int]] | None = None

    @property
    def group_size(self) -> int:
        return self.batch_size * self.grad_accum * self.world_size

    def _epoch_groups(self) -> list[list[int]]:
        if self._groups is None:
            self._groups = epoch_step_groups(self.lengths, self.group_size, self.seed, self.epoch)
        return self._groups

    def steps_per_epoch(self) -> int:
        return max(1, len(self._epoch_groups()))

    def next_step(self) -> list[list[int]]:
        groups = self._epoch_groups()
        if self.pos >= len(groups):
            self.epoch += 1
            self.pos = 0
            self._groups = None
            groups = self._epoch_groups()
        g = groups[self.pos]
        self.pos += 1
        if self.world_size == 1:
            return [g[i * self.batch_size:(i + 1) * self.batch_size] for i in range(self.grad_accum)]
        B = self.batch_size * self.world_size
        return [g[i * B:(i + 1) * B][self.rank::self.world_size] for i in range(self.grad_accum)]

    def state(self) -> dict:
        # the global position (examples consumed in this epoch) lets a resume with another
        # world size continue the same global order
        return {"epoch": self.epoch, "pos": self.pos, "group_size": self.group_size,
                "samples": self.pos * self.group_size}

    def load_state(self, state: dict) -> str | None:
        """Restore the position; a note when the global batch differs from the checkpoint's."""
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._groups = None
        old = int(state.get("group_size", self.group_size))
        if old == self.group_size:
            return None
        samples = int(state.get("samples", self.pos * old))
        self.pos = samples // self.group_size
        return (f"the global batch (batch_size × grad_accum × processes) was {old} and is now "
                f"{self.group_size}: continuing at example {self.pos * self.group_size} of epoch "
                f"{self.epoch} (of {samples} consumed), with this epoch regrouped; keep the global "
                f"batch to continue the exact same order")


def eval_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Length-sorted fixed batches for evaluation (order does not affect the result)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def pad_batch(seqs: list[list[int]], pad_value: int) -> list[list[int]]:
    width = max(len(s) for s in seqs)
    return [list(s) + [pad_value] * (width - len(s)) for s in seqs]
