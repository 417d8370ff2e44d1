"""GRPO on the mlx backend: the batched KV-cached sampler (greedy equals an unbatched decode and
torch's sampler on the same weights; seeded; stops at end-of-turn; top-p / temperature
frequencies), a tiny-model run with every output of a torch GRPO run, and a short run on the
bundled model. Loss and gradient parity with torch is in test_backend_parity.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import write_jsonl

import mlx.core as mx  # noqa: E402
import mlx_lm  # noqa: E402,F401

from parity_helpers import lora_cfg, mlx_like, torch_pair  # noqa: E402

PROMPTS = [[1, 2, 3, 4, 5, 6, 7], [5, 6], [9, 10, 11]]      # different lengths: left padding


@pytest.fixture(scope="module")
def pair(tiny_model_dir):
    """(torch backend, mlx backend) with the same non-zero LoRA weights."""
    lora = lora_cfg()
    tmodel, tb = torch_pair(tiny_model_dir, lora, b_scale=0.5)
    _, mb = mlx_like(tiny_model_dir, lora, tmodel)
    return tb, mb


def _unbatched_greedy(model, prompt, n_tokens, eos):
    """Greedy decode of one prompt through mlx-lm's own generate_step (no batching)."""
    from mlx_lm.generate import generate_step

    out = []
    for tok, _ in generate_step(mx.array(prompt), model, max_tokens=n_tokens,
                                sampler=lambda lp: mx.argmax(lp, axis=-1)):
        out.append(int(tok))
        if out[-1] in eos:
            break
    return out


def test_batched_greedy_equals_unbatched_and_torch(pair):
    from mindprint.backends.torch.generate import sample_completions

    tb, mb = pair
    kw = dict(n=2, max_new_tokens=12, temperature=0.0, top_p=1.0, seed=0)
    got = mb.sample_completions(PROMPTS, **kw)
    assert len(got) == 6 and got[0] == got[1] and got[2] == got[3]
    eos = set(mb.eos_ids())
    for i, p in enumerate(PROMPTS):
        want = _unbatched_greedy(mb.model, p, 12, eos)
        assert got[2 * i][0] == want
        assert got[2 * i][1] == (want[-1] in eos)
    assert got == sample_completions(tb.model, tb.tokenizer, PROMPTS, **kw)   # torch's sampler


def test_rows_leaving_the_batch_leave_the_others_unchanged(pair):
    """Greedy with many end-of-turn ids: prompts finish at different steps, their rows leave the
    batch cache, and every row still equals its unbatched decode."""
    from mindprint.backends.mlx.sampling import sample_completions

    _, mb = pair
    greedy = [_unbatched_greedy(mb.model, p, 12, set()) for p in PROMPTS]
    # end-of-turn: each prompt's greedy token at a different step (a prompt's later tokens kept)
    stops = {greedy[0][1], greedy[1][4], greedy[2][7]} - {greedy[0][0], greedy[1][0], greedy[2][0]}
    got = sample_completions(mb.model, PROMPTS, n=2, max_new_tokens=12, temperature=0.0,
                             top_p=1.0, seed=0, eos=sorted(stops))
    for i, p in enumerate(PROMPTS):
        want = _unbatched_greedy(mb.model, p, 12, stops)
        assert got[2 * i] == got[2 * i + 1] == (want, want[-1] in stops)
    assert len({len(ids) for ids, _ in got}) > 1


def test_sampling_is_seeded_and_stops_at_end_of_turn(pair):
    from mindprint.backends.mlx.sampling import sample_completions

    _, mb = pair
    kw = dict(n=3, max_new_tokens=10, temperature=1.0, top_p=0.9)
    mx.random.seed(0)
    before = mx.random.uniform(shape=(2,))
    mx.random.seed(0)
    a = mb.sample_completions(PROMPTS[:2], seed=7, **kw)
    assert np.array_equal(np.array(mx.random.uniform(shape=(2,))), np.array(before))  # global stream
    b = mb.sample_completions(PROMPTS[:2], seed=7, **kw)
    c = mb.sample_completions(PROMPTS[:2], seed=8, **kw)
    assert a == b and a != c and len(a) == 6
    # the random tiny model seldom ends a turn: with half the vocabulary counted as end-of-turn,
    # rows stop at different steps and leave the batch while the others go on
    eos = set(range(0, len(mb.tokenizer) // 2))
    d = sample_completions(mb.model, PROMPTS, seed=1, eos=sorted(eos), **kw)
    assert len({len(ids) for ids, _ in d}) > 2 and any(f for _, f in d)
    for rows, e in ((a + c, set(mb.eos_ids())), (d, eos)):
        for ids, finished in rows:
            assert 1 <= len(ids) <= 10
            assert (ids[-1] in e) == finished and not e & set(ids[:-1])


def test_pick_frequencies():
    """pick draws with the softmax's frequencies and never outside the top-p nucleus (the same
    numbers as the torch sampler's test)."""
    from mindprint.backends.mlx.sampling import pick

    p = np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32)
    logits = mx.array(np.tile(np.log(p), (20000, 1)))

    def freq(t, top_p, seed):
        idx = np.array(pick(logits, t, top_p, mx.random.key(seed)))
        return np.bincount(idx, minlength=4) / len(idx)

    def close(got, want):
        # a frequency of 20000 draws has std sqrt(q(1-q)/20000) (0.0035 at q = 0.5): within 4.5
        # std per token, and exactly 0 for a token outside the nucleus
        want = np.asarray(want, dtype=np.float64)
        tol = 4.5 * np.sqrt(want * (1 - want) / 20000)
        assert (np.abs(got - want) <= tol).all(), (got, want, tol)

    close(freq(1.0, 1.0, 0), p)
    # top_p 0.7: the smallest prefix reaching 0.7 is {0, 1}, renormalised to 0.625 / 0.375
    close(freq(1.0, 0.7, 1), [0.625, 0.375, 0, 0])
    # temperature 0.5 squares the odds: p² / Σp²
    close(freq(0.5, 1.0, 2), p ** 2 / (p ** 2).sum())
    assert np.array_equal(np.array(pick(logits[:3], 0.0, 1.0, mx.random.key(0))), [0, 0, 0])


def _prompts(n):
    qs = ["Where is the tide going", "What is a cycle", "How do crowds move", "Why do booms end"]
    return [{"prompt": f"{qs[i % len(qs)]}?", "answer": "Zoom out. Patience is a position."}
            for i in range(n)]


def _grpo_cfg(model_dir, train, out, grpo=None, **train_over):
    from mindprint.config import from_dict

    t = {"max_steps": 4, "batch_size": 2, "grad_accum": 1, "lr": 5e-3, "seed": 3, "eval_every": 4,
         "save_every": 0, "warmup_steps": 0, "eval_at_start": False}
    t.update(train_over)
    g = {"group_size": 4, "max_completion_length": 8, "rewards": ["length", "banned_phrases"],
         "length_range": [1, 3], "sample_every": 1, "beta": 0.05, "num_iterations": 2}
    g.update(grpo or {})
    return from_dict({"method": "grpo", "backend": "mlx", "model": model_dir, "output_dir": out,
                      "data": {"train": train, "max_length": 64}, "train": t, "grpo": g,
                      "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targets": "attn_mlp"}})


FEW_WORDS = """
def few_words(prompts, completions, records):
    return [-float(len(c.split())) for c in completions]
"""


def test_grpo_run_on_tiny_model(tmp_path, tiny_model_dir, monkeypatch):
    """A GRPO run on mlx writes what a torch GRPO run writes: the per-step reward, advantage,
    clipping, KL, entropy and length metrics, per-reward columns, samples.jsonl at the sampling
    steps, a greedy eval scored by the same rewards, and both adapter formats."""
    from mindprint.training import run_training

    (tmp_path / "mlx_tiny_rewards.py").write_text(FEW_WORDS)   # a reward the tiny model varies on
    monkeypatch.chdir(tmp_path)
    train = write_jsonl(tmp_path / "p.jsonl", _prompts(8))
    out = tmp_path / "run"
    cfg = _grpo_cfg(tiny_model_dir, str(train), str(out),
                    {"loss_type": "dapo", "epsilon_high": 0.28,
                     "rewards": ["mlx_tiny_rewards:few_words", "banned_phrases"]})
    cfg.data.eval = [str(write_jsonl(tmp_path / "e.jsonl", _prompts(3)))]
    summary = run_training(cfg, log=lambda *a: None)
    assert summary["steps"] == 4 and summary["backend"] == "mlx"
    ev = summary["final_eval_metrics"]
    assert ev["eval_loss"] == pytest.approx(-ev["eval_reward"])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "reward" in r]
    assert len(train_rows) == 4
    for key in ("reward", "reward_std", "advantage_std", "zero_std_groups", "clip_low", "clip_high",
                "kl", "entropy", "completion_len_mean", "completion_len_max", "truncated_frac",
                "generate_s", "rewards/mlx_tiny_rewards:few_words/mean",
                "rewards/banned_phrases/std"):
        assert key in train_rows[0], key
    assert all(np.isfinite(r["loss"]) for r in train_rows)
    assert all(r["completion_len_max"] <= 8 and r["entropy"] > 0 for r in train_rows)
    assert train_rows[0]["reward"] == train_rows[1]["reward"]    # num_iterations=2 reuses step 1's
    assert train_rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)   # the adapter starts as the base
    assert train_rows[0]["reward_std"] > 0 and train_rows[0]["loss"] != 0
    assert train_rows[1]["kl"] > 0                                # and has moved after a step
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {1, 3} and len(samples) == 2 * 2 * 4   # sampling steps
    assert {"prompt", "completion", "reward", "advantage", "rewards"} <= set(samples[0])
    for f in ("adapter/adapter_model.safetensors", "adapter-mlx/adapters.safetensors",
              "summary.json", "metrics.csv"):
        assert (out / f).exists(), f


@pytest.mark.parametrize("loss_type,level", [("grpo", "sequence"), ("dr_grpo", "token"),
                                             ("bnpo", "token")])
def test_grpo_variants_run_on_tiny_model(tmp_path, tiny_model_dir, loss_type, level):
    """GSPO, Dr. GRPO and BNPO train too (two steps, two micro-batches each)."""
    from mindprint.training import run_training

    train = write_jsonl(tmp_path / "p.jsonl", _prompts(4))
    cfg = _grpo_cfg(tiny_model_dir, str(train), str(tmp_path / "run"),
                    {"loss_type": loss_type, "importance_sampling_level": level, "group_size": 2,
                     "beta": 0.0, "num_iterations": 1, "sample_every": 0},
                    max_steps=2, batch_size=1, grad_accum=2, eval_every=0)
    s = run_training(cfg, log=lambda *a: None)
    assert s["steps"] == 2 and np.isfinite(s["final_train_metrics"]["reward"])
    assert not (tmp_path / "run" / "samples.jsonl").exists()


@pytest.mark.slow
def test_grpo_on_bundled_model(tmp_path, bundled_model_dir):
    """Two GRPO steps on the bundled model on mlx (groups of 2, 8-token completions): real
    end-of-turn stops and text through the rewards, a finite loss, an adapter."""
    from mindprint.training import run_training

    train = write_jsonl(tmp_path / "p.jsonl", _prompts(2))
    out = tmp_path / "run"
    cfg = _grpo_cfg(bundled_model_dir, str(train), str(out),
                    {"group_size": 2, "max_completion_length": 8, "sample_every": 1,
                     "num_iterations": 1, "beta": 0.0, "temperature": 0.9},
                    max_steps=2, batch_size=1, eval_every=0)
    s = run_training(cfg, log=lambda *a: None)
    assert s["steps"] == 2
    m = s["final_train_metrics"]
    assert m["completion_len_max"] <= 8 and np.isfinite(m["reward"])
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 * 2 and all(s["completion"] for s in samples)
    assert (out / "adapter" / "adapter_model.safetensors").exists()
