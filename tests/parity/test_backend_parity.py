"""Torch vs mlx on identical base weights, identical LoRA tensors and identical batches: the same
log-probs, the same loss per method (rtol 1e-4, fp32) and the same LoRA gradients (rtol 1e-3)."""

from __future__ import annotations

import numpy as np
import pytest

import mlx.core as mx  # noqa: E402
import mlx_lm  # noqa: E402,F401

from parity_helpers import lora_cfg, mlx_like, pref_file, sft_file, torch_pair  # noqa: E402,F401


def _cfg(model_dir, data, method, out, **over):
    from mindprint.config import from_dict

    raw = {"method": method, "model": model_dir, "output_dir": str(out),
           "data": {"train": data, "max_length": 96, "eval_split": 0.0},
           "train": {"batch_size": 4, "seed": 0},
           "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}
    for k, v in over.items():
        raw.setdefault(k, {}).update(v) if isinstance(v, dict) else raw.update({k: v})
    return from_dict(raw)


def _torch_grads(model):
    return {n.replace(".default", "").replace("magnitude_vector.weight", "magnitude_vector"):
            p.grad.detach().numpy().copy()
            for n, p in model.named_parameters() if p.requires_grad}


def _mlx_grads(grads):
    from mlx.utils import tree_flatten

    from mindprint.export.adapters import mlx_to_peft

    flat = {k: np.array(v) for k, v in tree_flatten(grads)}
    return mlx_to_peft(flat)


def _losses(cfg, model_dir, *, dora=False):
    """(torch loss, mlx loss, torch grads, mlx grads) of one micro-batch of ``cfg``'s method."""
    from mindprint.backends.mlx.train import MLXStepper
    from mindprint.methods import get_method

    lora = lora_cfg(dora=dora)
    tmodel, tb = torch_pair(model_dir, lora)
    mmodel, mb = mlx_like(model_dir, lora, tmodel)
    method = get_method(cfg)
    data = method.prepare(tb.tokenizer)
    if hasattr(method, "on_setup"):
        method.on_setup(tb, data, lambda s: None)
    examples = data.train[:4]
    norm = method.weight(examples)
    tloss, tm = method.micro_loss(tb, examples, norm)
    tloss.backward()

    if hasattr(method, "on_setup"):               # mlx's own reference pass (its own numbers)
        method_m = get_method(cfg)
        data_m = method_m.prepare(mb.tokenizer)
        method_m.on_setup(mb, data_m, lambda s: None)
        examples_m = data_m.train[:4]
    else:
        method_m, examples_m = method, examples
    trainer = MLXStepper.__new__(MLXStepper)        # only micro_grads is used
    trainer.model, trainer.method, trainer.backend = mmodel, method_m, mb
    mloss, mm, grads = trainer.micro_grads(examples_m, norm)
    return float(tloss.detach()), float(mloss), _torch_grads(tmodel), _mlx_grads(grads), tm, mm


def _check(tl, ml, tg, mg, tm, mm):
    assert ml == pytest.approx(tl, rel=1e-4)
    assert set(tg) == set(mg)
    scale = max(np.abs(g).max() for g in tg.values())
    for k in tg:
        np.testing.assert_allclose(mg[k], tg[k], rtol=1e-3, atol=1e-3 * scale, err_msg=k)
    for k, v in tm.items():
        # kl_sum is a sum over every position of Σ_v p·(log p − log q): a difference of large,
        # nearly equal float32 sums, so the two frameworks' summation orders show in it. Measured
        # gap 1.0e-4 relative (0.578773 mlx vs 0.578832 torch, both before and after the issue-24
        # refactor, with the packages of 2026-12-02); the other metrics agree within 1e-5
        rel = 2.5e-4 if k.startswith("kl") else 1e-4
        assert mm[k] == pytest.approx(v, rel=rel, abs=1e-5), k


def test_token_logps_match(tiny_model_dir):
    lora = lora_cfg()
    tmodel, tb = torch_pair(tiny_model_dir, lora)
    _, mb = mlx_like(tiny_model_dir, lora, tmodel)
    seqs = [[1, 5, 7, 9, 11, 13, 200, 17], [2, 4, 6, 8], [3, 3, 3, 900, 901]]
    masks = [[0, 0, 1, 1, 1, 1, 0, 1], [0, 1, 1, 1], [0, 0, 0, 0, 0]]
    t = tb.token_logps(tb.batch(seqs, masks)).detach().numpy()
    m = np.array(mb.token_logps(mb.batch(seqs, masks)))
    np.testing.assert_allclose(m, t, rtol=1e-4, atol=1e-5)
    assert (m[np.array([[0, 0, 1, 1, 1, 1, 0, 1], [0, 1, 1, 1, 0, 0, 0, 0],
                        [0] * 8]) == 0] == 0).all()
    groups = [(seqs[0][:3], [(seqs[0][3:], [1] * 5), (seqs[1], [1, 0, 1, 1])]),
              (seqs[2], [([7, 8, 9], [1, 1, 1]), ([10], [1])])]
    ts, tc = tb.group_logps(groups)
    ms, mc = mb.group_logps(groups)
    np.testing.assert_allclose(np.array(ms), ts.detach().numpy(), rtol=1e-4)
    np.testing.assert_array_equal(np.array(mc), tc.numpy())


def test_disabled_adapter_is_the_base(tiny_model_dir):
    lora = lora_cfg()
    tmodel, tb = torch_pair(tiny_model_dir, lora)
    _, mb = mlx_like(tiny_model_dir, lora, tmodel)
    b = mb.batch([[1, 5, 7, 9, 11]], [[0, 1, 1, 1, 1]])
    tb_batch = tb.batch([[1, 5, 7, 9, 11]], [[0, 1, 1, 1, 1]])
    with tb.disabled_adapter():
        t = tb.token_logps(tb_batch).detach().numpy()
    with mb.disabled_adapter():
        m = np.array(mb.token_logps(b))
    np.testing.assert_allclose(m, t, rtol=1e-4, atol=1e-5)
    assert not np.allclose(np.array(mb.token_logps(b)), m)      # and the adapter is back


@pytest.mark.parametrize("method", ["sft", "kl_sft"])
def test_sft_loss_and_grads_match(method, tiny_model_dir, sft_file, tmp_path):
    cfg = _cfg(tiny_model_dir, sft_file, method, tmp_path / "run")
    _check(*_losses(cfg, tiny_model_dir))


@pytest.mark.parametrize("method", ["dpo", "ipo", "orpo", "simpo", "kto"])
def test_preference_loss_and_grads_match(method, tiny_model_dir, pref_file, tmp_path,
                                         monkeypatch):
    monkeypatch.setenv("MINDPRINT_CACHE", str(tmp_path / "cache"))
    cfg = _cfg(tiny_model_dir, pref_file, method, tmp_path / "run")
    _check(*_losses(cfg, tiny_model_dir))


def test_dora_loss_and_grads_match(tiny_model_dir, sft_file, tmp_path):
    cfg = _cfg(tiny_model_dir, sft_file, "sft", tmp_path / "run", lora={"dora": True})
    _check(*_losses(cfg, tiny_model_dir, dora=True))


def _grpo_samples(seed: int = 5):
    """Two prompts × two completions of random ids (a prompt's completions share it, so the torch
    side packs them into one row), advantages of both signs."""
    from mindprint.methods.grpo import Sample

    rng = np.random.default_rng(seed)
    out = []
    for p_len, lens in ((6, (4, 2)), (3, (5, 3))):
        prompt = rng.integers(10, 500, p_len).tolist()
        for n in lens:
            out.append(Sample(p_len, prompt + rng.integers(10, 500, n).tolist(), n,
                              float(rng.normal())))
    return out


@pytest.mark.parametrize("loss_type,level", [("grpo", "token"), ("bnpo", "token"),
                                             ("dr_grpo", "token"), ("dapo", "token"),
                                             ("grpo", "sequence")])
def test_grpo_loss_and_grads_match(loss_type, level, tiny_model_dir, tmp_path):
    """GRPO / BNPO / Dr. GRPO / DAPO / GSPO: the same samples, advantages, old-policy and
    reference log-probs (the torch side's, handed to both) give the same loss, metrics and LoRA
    gradients on both backends; temperature 0.7, β 0.05, two iterations (so the ratio is not 1
    and clipping engages)."""
    from mindprint.backends.mlx.train import MLXStepper
    from mindprint.methods.grpo import GRPOMethod

    cfg = _cfg(tiny_model_dir, "x.jsonl", "grpo", tmp_path / "run",
               grpo={"loss_type": loss_type, "importance_sampling_level": level, "beta": 0.05,
                     "num_iterations": 2, "temperature": 0.7, "max_completion_length": 8,
                     "epsilon": 0.1})
    lora = lora_cfg()
    tmodel, tb = torch_pair(tiny_model_dir, lora)
    mmodel, mb = mlx_like(tiny_model_dir, lora, tmodel)
    method = GRPOMethod(cfg)
    samples = _grpo_samples()
    rng = np.random.default_rng(2)
    ref = method._side_logps(tb, samples, reference=True)
    old = method._side_logps(tb, samples, reference=False)
    mref = method._side_logps(mb, samples, reference=True)   # mlx's own passes agree too
    for a, b in zip(ref, mref):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    for s, r, o in zip(samples, ref, old):
        s.ref, s.old = r, o + rng.normal(0, 0.15, o.shape).astype(np.float32)
    norm = method.weight(samples[:2]) + method.weight(samples[2:])   # two micro-batches' share
    tloss, tm = method.micro_loss(tb, samples[:2], norm)
    tloss.backward()
    trainer = MLXStepper.__new__(MLXStepper)         # only micro_grads is used
    trainer.model, trainer.method, trainer.backend = mmodel, GRPOMethod(cfg), mb
    mloss, mm, grads = trainer.micro_grads(samples[:2], norm)
    assert tm["clip_region_sum"] > 0                  # the clipped branch is exercised
    _check(float(tloss.detach()), float(mloss), _torch_grads(tmodel), _mlx_grads(grads), tm, mm)
