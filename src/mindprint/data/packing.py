"""Padding-free packing of SFT micro-batches: which examples share a row, and what it saves.

What a batch means under packing: the sampler (:mod:`.batching`) still decides which examples
form each micro-batch and each optimizer step, exactly as without packing. Packing only changes
how one micro-batch's examples are laid out in arrays: several examples share a row (each
attending causally to itself only, its positions restarting at 0), rows hold at most
``data.max_length`` tokens. The loss is still Σ NLL over answer tokens ÷ the step's answer
tokens, so a packed step is the same update as an unpacked one, and exact resume and
batch × accumulation equivalence carry over unchanged.

Rows are filled best-fit-decreasing (:func:`best_fit_decreasing`): examples longest first, each
into the open row with the least room that still fits it, else a new row. Invariants (tested as
properties): every example is in exactly one row, none is split, no row holds more than
``capacity`` tokens unless it is a single example longer than ``capacity`` (rendering truncates
to ``data.max_length``, so in training this never happens; such an example gets a row of its
own rather than being cut). The result is a pure function of the lengths: the same micro-batch
packs the same way in a resumed run.

When a micro-batch is packed: only when its rows hold at most ``1 − MIN_SAVING`` of the array
positions padding needs (:func:`plan_rows`: rows × fullest row vs examples × longest example).
The sampler's length grouping already keeps padding small (0.5-1 % on the bundled persona and on
short chat turns), a packed row is itself padded to its fullest row, and the packed forward has
a cost of its own (index gathers; measured on the bundled model, CPU: packing every micro-batch
ran at 0.85-0.98× the padded tokens/s, benchmarks/RESULTS.md), so a micro-batch is packed only
where that saves a tenth of the positions or more. Both layouts give the same loss and gradient,
so choosing per micro-batch changes no update.

Hand-written rather than a bin-packing library: the whole algorithm is the dozen lines below (a
sorted list of remaining room and ``bisect``), and the libraries on PyPI (``binpacking``,
``prtpy``) either use other heuristics or bring solver dependencies for a problem this small.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass


def best_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into rows of at most ``capacity`` tokens (see the module
    docstring). Rows come in the order they were opened (the first holds the longest example);
    inside a row, examples are longest first, ties by index."""
    if capacity < 1:
        raise ValueError(f"capacity must be positive, got {capacity}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    room: list[tuple[int, int]] = []      # (tokens still free, row index), sorted
    for i in order:
        n = lengths[i]
        k = bisect.bisect_left(room, (n, -1))     # the tightest row with room >= n
        if k < len(room):
            free, r = room.pop(k)
            rows[r].append(i)
            bisect.insort(room, (free - n, r))
        else:
            rows.append([i])
            if n < capacity:
                bisect.insort(room, (capacity - n, len(rows) - 1))
    return rows


MIN_SAVING = 0.1   # share of the padded positions packing must save (see the module docstring)


def plan_rows(lengths: list[int], capacity: int) -> list[list[int]] | None:
    """:func:`best_fit_decreasing` rows of a micro-batch when they hold at most
    ``1 − MIN_SAVING`` of the positions of one padded row per example, else None (pad)."""
    if len(lengths) < 2:
        return None
    rows = best_fit_decreasing(lengths, capacity)
    width = max(sum(lengths[i] for i in r) for r in rows)
    padded = len(lengths) * max(lengths)
    return rows if len(rows) * width <= (1 - MIN_SAVING) * padded else None


@dataclass(frozen=True)
class PackingStats:
    """Token accounting of a set of micro-batches, padded one example per row vs packed."""

    examples: int
    tokens: int              # real tokens
    padded_slots: int        # array slots without packing: Σ examples × longest example
    packed_slots: int        # array slots with packing (padded where plan_rows says so)
    rows: int                # rows with packing
    packed_batches: int      # micro-batches plan_rows packs
    batches: int

    @property
    def padding_share(self) -> float:
        return 1.0 - self.tokens / self.padded_slots if self.padded_slots else 0.0

    @property
    def packed_padding_share(self) -> float:
        return 1.0 - self.tokens / self.packed_slots if self.packed_slots else 0.0

    def line(self) -> str:
        return (f"{self.tokens:,} tokens of {self.examples:,} examples; {self.packed_batches} of "
                f"{self.batches} micro-batches packed, {self.rows:,} rows in all; padding "
                f"{self.padding_share:.0%} of the arrays unpacked, "
                f"{self.packed_padding_share:.0%} with packing "
                f"({self.padded_slots / max(self.packed_slots, 1):.2f}x fewer positions)")


def packing_stats(batches: list[list[int]], capacity: int) -> PackingStats:
    """:class:`PackingStats` of micro-batches given as lists of example lengths, each laid out as
    :func:`plan_rows` decides."""
    tokens = padded = packed = rows = examples = n_packed = n = 0
    for lens in batches:
        if not lens:
            continue
        n += 1
        examples += len(lens)
        tokens += sum(lens)
        padded += len(lens) * max(lens)
        plan = plan_rows(lens, capacity)
        if plan is None:
            rows += len(lens)
            packed += len(lens) * max(lens)
        else:
            n_packed += 1
            rows += len(plan)
            packed += len(plan) * max(sum(lens[i] for i in r) for r in plan)
    return PackingStats(examples, tokens, padded, packed, rows, n_packed, n)
