"""train.epochs → optimizer steps (mindprint.schedule), checked against the batching it describes."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from mindprint import config as C
from mindprint.data.batching import StepSampler
from mindprint.schedule import MANY_EPOCHS, apply, resolve_steps, steps_per_epoch


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 400), batch=st.integers(1, 9), accum=st.integers(1, 4),
       world=st.integers(1, 4), seed=st.integers(0, 5))
def test_one_epoch_is_what_the_sampler_yields_before_reshuffling(n, batch, accum, world, seed):
    sampler = StepSampler([(i * 7) % 13 + 1 for i in range(n)], batch, accum, seed,
                          world_size=world)
    per = steps_per_epoch(n, batch, accum, world)
    assert per == sampler.steps_per_epoch()
    for _ in range(per):                      # exactly `per` steps stay in epoch 0
        sampler.next_step()
    assert sampler.epoch == 0
    sampler.next_step()
    assert sampler.epoch == 1


def test_epochs_round_up_like_the_hf_trainer():
    # 100 examples, 4 × 2 a step: 12 full steps an epoch (the last 4 examples wait for the next)
    assert resolve_steps(100, 4, 2, 1, 3, None).steps == 36
    # 0.5 epoch of 25 steps = 12.5 → 13 (HF: ceil(num_train_epochs × steps per epoch))
    assert resolve_steps(100, 4, 1, 1, 0.5, None).steps == 13
    # 2 processes halve the steps of an epoch
    assert resolve_steps(100, 4, 1, 2, 2, None).steps == 2 * 12
    # a file smaller than one step group still trains (one repeated group per epoch)
    r = resolve_steps(3, 4, 1, 1, 2, None)
    assert (r.steps, r.per_epoch) == (2, 1)


def test_explicit_max_steps_wins_and_says_so_when_they_disagree():
    r = resolve_steps(100, 4, 1, 1, 2, 30)
    assert r.steps == 30 and "train.max_steps 30 overrides train.epochs 2" in r.warning
    assert "50 steps" in r.warning
    # the same number both ways (a run's own config.yaml loaded back): nothing to say
    assert resolve_steps(100, 4, 1, 1, 2, 50).warning is None


def test_neither_given_uses_the_default_steps():
    r = resolve_steps(1000, 4, 1, 1, None, None, default_steps=200)
    assert (r.steps, r.warning) == (200, None) and math.isclose(r.epochs, 0.8)


def test_many_passes_over_a_small_file_are_warned_about():
    r = resolve_steps(14, 4, 1, 1, None, None, default_steps=200)      # 3 steps an epoch
    assert r.steps == 200 and r.epochs > MANY_EPOCHS
    assert "67 passes over the 14 training examples" in r.warning and "train.epochs" in r.warning
    assert resolve_steps(14, 4, 1, 1, 5, None).warning is None        # asked for 5 epochs: fine


def _train(raw_train: dict) -> C.TrainConfig:
    return C.from_dict({"data": {"train": "x.jsonl"}, "train": raw_train}).train


def test_apply_reads_whether_max_steps_was_given():
    logged = []
    t = _train({"epochs": 2, "batch_size": 4})            # max_steps left at its default
    assert apply(t, 40, 1, logged.append) == 20 and t.max_steps == 20 and not logged
    t = _train({"epochs": 2, "batch_size": 4, "max_steps": 7})
    assert apply(t, 40, 1, logged.append) == 7 and t.max_steps == 7
    assert logged and logged[0].startswith("warning: train.max_steps 7 overrides")
    t = _train({"batch_size": 4})                          # neither: the default 200 steps
    assert apply(t, 4000, 1, logged.append) == 200


def test_a_resolved_config_loads_back_to_the_same_steps(tmp_path):
    cfg = C.from_dict({"data": {"train": "x.jsonl"}, "train": {"epochs": 3, "batch_size": 2}})
    apply(cfg.train, 21, 1, lambda s: None)                 # 10 steps an epoch
    p = tmp_path / "config.yaml"
    p.write_text(C.dump_yaml(cfg))
    again = C.load(p, use_env=False)
    logged = []
    assert apply(again.train, 21, 1, logged.append) == 30 and not logged


def test_curriculum_topics_take_epochs_of_their_own_examples(tmp_path):
    from conftest import chat, write_jsonl
    from mindprint.curriculum import plan, topic_config

    rows = [chat(f"Question {i} about {t}?", f"Zoom out: {t} answer {i}.", t)
            for t, n in (("cycles", 22), ("risk", 9)) for i in range(n)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    cfg = C.from_dict({"data": {"train": str(train)}, "output_dir": str(tmp_path / "cur"),
                       "train": {"epochs": 2, "batch_size": 2},
                       "curriculum": {"eval_split": 0.1, "topics": [
                           {"name": "cycles"}, {"name": "risk", "steps": 5}]}})
    cycles, risk = plan(cfg)
    assert len(cycles.train) == 20                               # 2 of 22 held out
    assert cycles.steps == 2 * (20 // 2) and risk.steps == 5     # epochs, or the topic's steps
    tcfg = topic_config(cfg, cycles, tmp_path / "cur" / "topics" / "01-cycles")
    # the topic's run gets its steps, not epochs again (replayed examples would change the count)
    assert (tcfg.train.max_steps, tcfg.train.epochs) == (20, None)
