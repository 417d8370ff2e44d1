"""Batching: deterministic, resumable, and identical step groups for any batch × accum split."""

from __future__ import annotations

import random

from mindprint.data.batching import StepSampler, epoch_step_groups, eval_batches


def test_groups_cover_each_example_once_per_epoch():
    lengths = [random.Random(i).randint(5, 90) for i in range(37)]
    groups = epoch_step_groups(lengths, 4, seed=1, epoch=0)
    flat = [i for g in groups for i in g]
    assert len(flat) == 36 and len(set(flat)) == 36      # 37 // 4 groups of 4
    assert groups == epoch_step_groups(lengths, 4, seed=1, epoch=0)
    assert groups != epoch_step_groups(lengths, 4, seed=1, epoch=1)


def test_batch_times_accum_split_sees_same_examples():
    lengths = list(range(10, 50))
    a = StepSampler(lengths, batch_size=4, grad_accum=1, seed=7)
    b = StepSampler(lengths, batch_size=1, grad_accum=4, seed=7)
    for _ in range(25):   # crosses an epoch boundary
        sa, sb = a.next_step(), b.next_step()
        assert sa[0] == [m[0] for m in sb]


def test_resume_replays_the_same_order():
    lengths = list(range(30))
    a = StepSampler(lengths, 3, 2, seed=5)
    seen = [a.next_step() for _ in range(12)]
    b = StepSampler(lengths, 3, 2, seed=5)
    for _ in range(4):
        b.next_step()
    c = StepSampler(lengths, 3, 2, seed=5)
    c.load_state(b.state())
    assert [c.next_step() for _ in range(8)] == seen[4:]


def test_length_grouping_limits_padding():
    rng = random.Random(0)
    lengths = [rng.randint(10, 500) for _ in range(512)]
    groups = epoch_step_groups(lengths, 8, seed=0, epoch=0)
    padded = sum(max(lengths[i] for i in g) * len(g) for g in groups)
    real = sum(lengths[i] for g in groups for i in g)
    assert padded / real < 1.1


def test_tiny_dataset_still_fills_a_step():
    assert len(epoch_step_groups([5, 6], 4, seed=0, epoch=0)[0]) == 4


def test_eval_batches_cover_all():
    b = eval_batches([5, 1, 3, 9, 2], 2)
    assert sorted(i for g in b for i in g) == [0, 1, 2, 3, 4]
