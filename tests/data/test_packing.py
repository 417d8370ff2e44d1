"""Best-fit-decreasing rows for SFT packing (data/packing.py): every example exactly once, none
split, no row over capacity, deterministic; and the padding accounting printed at setup."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mindprint.data.packing import MIN_SAVING, best_fit_decreasing, packing_stats, plan_rows


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 300), max_size=40), st.integers(1, 256))
def test_every_example_once_none_split_no_row_over_capacity(lengths, capacity):
    rows = best_fit_decreasing(lengths, capacity)
    flat = [i for r in rows for i in r]
    assert sorted(flat) == list(range(len(lengths)))          # each example exactly once
    for r in rows:
        assert r, "no empty row"
        fill = sum(lengths[i] for i in r)
        # an example longer than a row has a row to itself (never cut); otherwise rows fit
        assert fill <= capacity or len(r) == 1
    assert best_fit_decreasing(lengths, capacity) == rows      # a pure function of the lengths


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 64), min_size=1, max_size=30), st.integers(64, 256))
def test_best_fit_is_no_worse_than_first_fit_bound(lengths, capacity):
    """BFD opens a row only when nothing open fits its first example, so any two rows together
    overflow a row (the earlier one had less room than the later one's first example); hence
    fewer than 2·ceil(Σ / capacity) + 1 rows."""
    rows = best_fit_decreasing(lengths, capacity)
    fills = sorted(sum(lengths[i] for i in r) for r in rows)
    lower = -(-sum(lengths) // capacity)
    assert lower <= len(rows) < 2 * lower + 1
    if len(fills) >= 2:
        assert fills[0] + fills[1] > capacity


def test_best_fit_picks_the_tightest_row():
    # longest first: 7 opens row 0 (room 3); 6 does not fit there, opens row 1 (room 4); 4 fits
    # only row 1 (room 0 left); 3 fits row 0 exactly
    rows = best_fit_decreasing([3, 7, 4, 6], 10)
    assert rows == [[1, 0], [3, 2]]
    # ties in length keep index order
    assert best_fit_decreasing([5, 5, 5], 10) == [[0, 1], [2]]
    assert best_fit_decreasing([], 8) == []
    with pytest.raises(ValueError):
        best_fit_decreasing([1], 0)


def test_plan_packs_only_when_it_saves_positions():
    # a short and a long one: one row of 70 instead of 2 × 60 padded
    assert plan_rows([10, 60], 100) == [[1, 0]]
    # equal lengths: 1 × 100 is not fewer than 2 × 50; 2 rows × 100 is more than 3 × 50
    assert plan_rows([50, 50], 100) is None and plan_rows([50, 50, 50], 100) is None
    assert plan_rows([30], 100) is None                      # one example: nothing to pack
    # 4 × 50 = 200 padded: one row of 185 saves 7.5 % (< MIN_SAVING), one of 175 saves 12.5 %
    assert MIN_SAVING == 0.1
    assert plan_rows([50, 45, 45, 45], 200) is None
    assert plan_rows([50, 45, 45, 35], 200) == [[0, 1, 2, 3]]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 200), min_size=1, max_size=24), st.integers(16, 256))
def test_plan_never_adds_positions(lengths, capacity):
    rows = plan_rows(lengths, capacity)
    if rows is not None:
        width = max(sum(lengths[i] for i in r) for r in rows)
        assert len(rows) * width <= (1 - MIN_SAVING) * len(lengths) * max(lengths)
        assert rows == best_fit_decreasing(lengths, capacity)


def test_stats_count_padding_before_and_after():
    # one micro-batch of lengths 10, 30, 20 into rows of 64: unpacked 3 × 30 = 90 slots for 60
    # tokens (1/3 padding); packed: one row of 60 (no padding)
    s = packing_stats([[10, 30, 20]], 64)
    assert (s.examples, s.tokens, s.padded_slots, s.packed_slots, s.rows) == (3, 60, 90, 60, 1)
    assert s.padding_share == pytest.approx(1 / 3) and s.packed_padding_share == 0.0
    # rows of 40: [30, 10] and [20] -> 2 rows × 40 = 80 slots, 1/4 padding; the second
    # micro-batch (equal lengths) stays padded: 2 × 25, no padding
    s = packing_stats([[10, 30, 20], [], [25, 25]], 40)
    assert (s.rows, s.packed_slots, s.padded_slots) == (4, 130, 140)
    assert (s.packed_batches, s.batches) == (1, 2)
    assert s.packed_padding_share == pytest.approx(1 - 110 / 130)
    assert "110 tokens of 5 examples; 1 of 2 micro-batches packed, 4 rows" in s.line()


def _gpu_bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"
    spec = importlib.util.spec_from_file_location("gpu_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)        # importable without CUDA (and without importing torch)
    return mod


def test_gpu_benchmark_packing_variant_cpu_side(tmp_path):
    """benchmarks/gpu.py --methods sft_packing: the data it trains on and the row it reports
    (the GPU part itself is unmeasured here)."""
    g = _gpu_bench()
    out = g.short_turns_data(tmp_path, 500)
    rows = out.read_text(encoding="utf-8").splitlines()
    src = g.SHORT_TURNS.read_text(encoding="utf-8").splitlines()
    assert len(rows) == 500 and rows[:len(src)] == src and rows[len(src)] == src[0]
    # step ends: unpacked 2 s per step, packed 0.5 s per step, after one warm-up step
    unpacked = {"ends": [0.0, 5.0, 7.0, 9.0], "tokens": [400, 400, 400], "peak_mem_mb": 2048.0}
    packed = {"ends": [0.0, 3.0, 3.5, 4.0], "tokens": [400, 400, 400], "peak_mem_mb": 1024.0}
    r = g.packing_rows(unpacked, packed, 1, 10**9, None)
    assert r["packed_speedup"] == pytest.approx(4.0)
    assert r["tokens_per_s_packed"] == pytest.approx(800.0) and r["tokens_per_s_unpacked"] == 200
    assert r["peak_mem_gb_packed"] == 1.0 and r["mfu_packed"] is None
