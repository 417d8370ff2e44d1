"""benchmarks/vs_trl.py's plumbing, without training: the settings each side is told and the JSON
line names, the arguments handed to each side's process, and the SFT token counter on TRL's own
collator output (padded and padding-free; the old counter read 0 tokens from padding-free
batches, which carry no attention mask)."""

import math
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import _vs_trl_setup as S  # noqa: E402
import vs_trl  # noqa: E402


def parse(*argv):
    return vs_trl.parser().parse_args(list(argv))


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_reference_methods_precompute_unless_trl_defaults(method):
    assert S.side_settings(parse("--method", method))["trl_precompute_ref_log_probs"] is True
    old = S.side_settings(parse("--method", method, "--trl-defaults"))
    assert old["trl_precompute_ref_log_probs"] is False and old["trl_baseline"] == "defaults"


def test_sft_packs_padding_free_and_says_what_tokens_it_counts():
    s = S.side_settings(parse("--method", "sft"))
    assert (s["trl_packing"], s["trl_padding_free"], s["trl_completion_only_loss"]) == (True, True, True)
    assert "labels != -100" in s["tokens_counted"]
    old = S.side_settings(parse("--method", "sft", "--trl-defaults"))
    assert (old["trl_packing"], old["trl_padding_free"]) == (False, False)
    assert "trl_packing" not in S.side_settings(parse("--method", "orpo"))


@pytest.mark.parametrize("precision,dtype", [("fp32", "float32"), ("bf16", "bfloat16")])
def test_grpo_samples_at_the_training_precision_on_both_sides(precision, dtype):
    s = S.side_settings(parse("--method", "grpo", "--precision", precision))
    assert s["mindprint_sampler_dtype"] == s["trl_sampler_dtype"] == dtype
    old = S.side_settings(parse("--method", "grpo", "--precision", precision, "--trl-defaults"))
    assert old["mindprint_sampler_dtype"] == "auto" and "TRL default" in old["trl_sampler_dtype"]
    forced = S.side_settings(parse("--method", "grpo", "--sampler-dtype", "bfloat16"))
    assert forced["mindprint_sampler_dtype"] == "bfloat16" and forced["trl_sampler_dtype"] == "float32"


def test_threads_default_to_every_core_and_are_pinned_in_each_side_env():
    assert parse("--method", "dpo").threads == S.default_threads()
    assert S.side_settings(parse("--method", "dpo", "--threads", "3"))["threads"] == 3
    assert S.thread_env(3) == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3"}


@settings(max_examples=40, deadline=None)
@given(method=st.sampled_from(sorted(S.SETTINGS)), steps=st.integers(1, 50),
       epochs=st.none() | st.sampled_from([0.5, 1.0, 2.0]), warmup=st.integers(0, 5),
       precision=st.sampled_from(["fp32", "bf16"]), threads=st.integers(1, 64),
       sampler=st.none() | st.sampled_from(["auto", "float32", "bfloat16"]),
       trl_defaults=st.booleans(), ckpt=st.booleans(), cache=st.sampled_from(["cold", "warm"]),
       mp_set=st.lists(st.sampled_from(["data.packing=true", "train.seed=3"]), max_size=2))
def test_each_side_gets_the_arguments_it_was_given(method, steps, epochs, warmup, precision,
                                                   threads, sampler, trl_defaults, ckpt, cache,
                                                   mp_set):
    argv = ["--method", method, "--steps", str(steps), "--warmup", str(warmup), "--precision",
            precision, "--threads", str(threads), "--ref-cache", cache]
    argv += (["--epochs", str(epochs)] if epochs else []) + (["--sampler-dtype", sampler] if sampler else [])
    argv += (["--trl-defaults"] if trl_defaults else []) + (["--gradient-checkpointing"] if ckpt else [])
    for kv in mp_set:
        argv += ["--mp-set", kv]
    a = parse(*argv)
    cmd = vs_trl.side_command("trl", a)
    assert cmd[1] == vs_trl.__file__
    b = parse(*cmd[2:])
    assert b._side == "trl"
    for key in (*vs_trl.PASSED, "trl_defaults", "gradient_checkpointing", "mp_set"):
        assert getattr(b, key) == getattr(a, key), key
    assert S.side_settings(b) == S.side_settings(a)


def side(s_per_step, e2e_s, examples, rss, tokens_per_s=None, **kw):
    return {"s_per_step": s_per_step, "e2e_s": e2e_s, "examples": examples, "steps": 8,
            "peak_rss_mb": rss, "peak_rss_setup_mb": rss / 2, "setup_s": 10.0,
            "tokens_per_s": tokens_per_s, "final_loss": 0.5, "eval_pref_acc": 1.0, "threads": 2,
            "load": "1.0", **kw}


def test_summary_names_settings_versions_and_takes_the_median_pair():
    a = parse("--method", "dpo", "--pairs", "3")
    # speedups 2.0, 3.0, 2.5: the median is the third pair
    pairs = [(side(2.0, 100.0, 32, 2000.0), side(4.0, 150.0, 32, 4000.0)),
             (side(2.0, 100.0, 32, 2000.0), side(6.0, 150.0, 32, 4000.0)),
             (side(2.0, 50.0, 32, 2000.0), side(5.0, 150.0, 32, 4000.0))]
    out = S.summary(a, pairs, "0.5")
    assert out["trl_precompute_ref_log_probs"] is True and out["trl_baseline"] == "fastest"
    assert out["threads"] == S.default_threads() and out["threads_seen"] == {"mindprint": 2, "trl": 2}
    assert {"torch", "transformers", "trl", "peft", "mindprint"} <= set(out["versions"])
    assert out["versions"]["mindprint"] is not None
    assert out["speedups"] == [2.0, 3.0, 2.5] and out["median_pair"] == 3
    assert out["speedup"] == 2.5 and out["e2e_speedup"] == 3.0     # 150 s / 50 s, same examples
    assert out["rss_ratio"] == 0.5 and out["mindprint_peak_rss_setup_mb"] == 1000.0


def test_sft_ratio_is_tokens_per_second_and_end_to_end_is_per_example():
    a = parse("--method", "sft")
    # TRL's packed steps are slower but hold more examples: 40 s for 120 examples vs 30 s for 60
    mp = side(2.0, 30.0, 60, 1000.0, tokens_per_s=300.0)
    trl = side(9.0, 40.0, 120, 2000.0, tokens_per_s=150.0)
    out = S.summary(a, [(mp, trl)], "1.0")
    assert out["speedup"] == 2.0
    assert math.isclose(out["e2e_speedup"], (40 / 120) / (30 / 60), rel_tol=1e-3)
    assert out["trl_packing"] is True and "speedups" not in out


# -- the SFT token counter on TRL's own collator -------------------------------------------------
sequence = st.tuples(st.integers(1, 6), st.integers(1, 6))     # (prompt tokens, answer tokens)


@settings(max_examples=30, deadline=None)
@given(rows=st.lists(st.lists(sequence, min_size=1, max_size=4), min_size=1, max_size=4),
       multiple=st.sampled_from([None, 8]))
def test_answer_tokens_counted_alike_padded_and_padding_free(rows, multiple):
    collator_cls = pytest.importorskip("trl.trainer.sft_trainer").DataCollatorForLanguageModeling
    # each row is a packed example of one or more (prompt, answer) sequences, as TRL's bfd packing
    # makes them: labels -100 on the prompt, seq_lengths giving the sequences
    examples = []
    for row in rows:
        ids, labels = [], []
        for p, c in row:
            ids += list(range(10, 10 + p + c))
            labels += [-100] * p + list(range(10 + p, 10 + p + c))
        examples.append({"input_ids": ids, "labels": labels, "seq_lengths": [p + c for p, c in row]})
    answers = sum(c for row in rows for _, c in row)
    free = collator_cls(pad_token_id=0, padding_free=True, pad_to_multiple_of=multiple)(examples)
    assert "attention_mask" not in free
    assert S.answer_tokens_and_examples(free) == (answers, sum(len(r) for r in rows))
    # unpacked: one sequence per row, right-padded with an attention mask
    flat = [{"input_ids": list(range(10, 10 + p + c)), "labels": [-100] * p + list(range(10 + p, 10 + p + c))}
            for row in rows for p, c in row]
    padded = collator_cls(pad_token_id=0, pad_to_multiple_of=multiple)(flat)
    assert S.answer_tokens_and_examples(padded) == (answers, len(flat))
