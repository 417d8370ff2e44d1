"""Every loss in mindprint.losses gives the same value, metrics and input gradients on torch and
mlx for the shared vectors in vectors.json (fp32, rtol 1e-5): the losses are written once against
``xp``, and this checks that the two namespaces mean the same ops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import mlx.core as mx  # noqa: E402
import torch  # noqa: E402

from mindprint.losses import xp as xpmod  # noqa: E402
from mindprint.losses.dpo import dpo_loss, ipo_loss  # noqa: E402
from mindprint.losses.grpo import group_advantages, grpo_loss  # noqa: E402
from mindprint.losses.kl import kl_sft_loss, kl_to_base  # noqa: E402
from mindprint.losses.kto import kto_kl_estimate, kto_loss  # noqa: E402
from mindprint.losses.orpo import orpo_loss  # noqa: E402
from mindprint.losses.sft import sft_loss  # noqa: E402
from mindprint.losses.simpo import simpo_loss  # noqa: E402

V = json.loads((Path(__file__).parent / "vectors.json").read_text())
PAIR = ("pi_c", "pi_r", "ref_c", "ref_r")

CASES = {
    # name: (vector keys the loss differentiates, other vector keys, fn(xp, *args) -> (loss, metrics))
    "sft": (("logp",), ("mask",), lambda xp, lp, m: sft_loss(lp, m, xp)),
    "kl_to_base": (("tuned_logits",), ("base_logits",),
                   lambda xp, t, b: (kl_to_base(t, b, 1.7, xp), {})),
    "kl_sft": (("logp", "kl"), ("mask",), lambda xp, lp, kl, m: kl_sft_loss(lp, kl, m, 0.3, xp)),
    "dpo": (PAIR, (), lambda xp, a, b, c, d: dpo_loss(a, b, c, d, beta=0.1, xp=xp)),
    "dpo_smoothed": (PAIR, (), lambda xp, a, b, c, d: dpo_loss(a, b, c, d, beta=0.5,
                                                               label_smoothing=0.2, xp=xp)),
    "ipo": (PAIR, ("len_c", "len_r"),
            lambda xp, a, b, c, d, lc, lr: ipo_loss(a, b, c, d, lc, lr, beta=0.25, xp=xp)),
    "orpo": (("pi_c", "pi_r"), ("len_c", "len_r"),
             lambda xp, a, b, lc, lr: orpo_loss(a, b, lc, lr, lam=0.1, xp=xp)),
    "orpo_token_nll": (("pi_c", "pi_r"), ("len_c", "len_r"),
                       lambda xp, a, b, lc, lr: orpo_loss(a, b, lc, lr, lam=0.2, nll_sum=-a,
                                                          nll_tokens=lc, xp=xp)),
    "simpo": (("pi_c", "pi_r"), ("len_c", "len_r"),
              lambda xp, a, b, lc, lr: simpo_loss(a, b, lc, lr, beta=2.0, gamma=0.5,
                                                  label_smoothing=0.1, xp=xp)),
    "grpo_advantages": (("pi_c",), (), lambda xp, r: group_advantages(r, 3, xp=xp)),
    **{f"grpo_{lt}_{lvl}": (("logp",), ("kl", "mask"),
                            lambda xp, lp, old, m, lt=lt, lvl=lvl: _grpo(xp, lp, old, m, lt, lvl))
       for lt in ("grpo", "bnpo", "dr_grpo", "dapo") for lvl in ("token", "sequence")},
    "kto": (("pi_c",), ("ref_c", "labels", "pi_r", "ref_r"),
            lambda xp, p, r, y, kp, kr: kto_loss(p, r, y, kto_kl_estimate(kp, kr, xp=xp), beta=0.2,
                                                 desirable_weight=1.5, undesirable_weight=0.7,
                                                 xp=xp)),
}


def _grpo(xp, logp, old, mask, loss_type, level):
    """GRPO on the shared per-token vectors: ``kl`` as the old policy's offset, two sequences."""
    adv = xp.astype_float(mask[:, 1]) * 1.5 - 0.5          # [+1, -0.5]
    loss, m = grpo_loss(logp, logp - old, adv, mask, ref_logps=logp + 0.1 * old, beta=0.04,
                        epsilon=0.2, epsilon_high=0.28, loss_type=loss_type,
                        importance_sampling_level=level, max_completion_length=5, xp=xp)
    return loss * xp.ones_like(adv[:1]), m


def _torch(v, key):
    a = np.asarray(v)
    if a.dtype == bool:
        return torch.tensor(a)
    return torch.tensor(a, dtype=torch.float32 if key not in ("len_c", "len_r", "mask") else torch.long)


def _mlx(v, key):
    a = np.asarray(v)
    if a.dtype == bool:
        return mx.array(a)
    return mx.array(a.astype(np.float32) if key not in ("len_c", "len_r", "mask") else a.astype(np.int64))


def _run_torch(name):
    diff, other, fn = CASES[name]
    xs = [_torch(V[k], k).requires_grad_() for k in diff]
    loss, metrics = fn(xpmod.get("torch"), *xs, *[_torch(V[k], k) for k in other])
    loss.sum().backward()
    return (loss.detach().numpy(), {k: v.detach().float().numpy() for k, v in metrics.items()},
            [x.grad.numpy() for x in xs])


def _run_mlx(name):
    diff, other, fn = CASES[name]
    xp = xpmod.get("mlx")
    rest = [_mlx(V[k], k) for k in other]
    out = {}

    def f(*xs):
        loss, metrics = fn(xp, *xs, *rest)
        out["loss"], out["metrics"] = loss, metrics
        return loss.sum()

    grads = mx.grad(f, argnums=list(range(len(diff))))(*[_mlx(V[k], k) for k in diff])
    grads = grads if isinstance(grads, (list, tuple)) else [grads]   # one argnum: a bare array
    return (np.array(out["loss"]), {k: np.array(v.astype(mx.float32)) for k, v in out["metrics"].items()},
            [np.array(g) for g in grads])


@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_matches_between_torch_and_mlx(name):
    t_loss, t_metrics, t_grads = _run_torch(name)
    m_loss, m_metrics, m_grads = _run_mlx(name)
    assert np.isfinite(t_loss).all()
    np.testing.assert_allclose(m_loss, t_loss, rtol=1e-5, atol=1e-6)
    assert set(m_metrics) == set(t_metrics)
    for k in t_metrics:
        np.testing.assert_allclose(m_metrics[k], t_metrics[k], rtol=1e-5, atol=1e-6, err_msg=k)
    for tg, mg in zip(t_grads, m_grads):
        np.testing.assert_allclose(mg, tg, rtol=1e-4, atol=1e-6)


def test_every_loss_module_is_covered():
    import mindprint.losses as pkg

    modules = {p.stem for p in Path(pkg.__file__).parent.glob("*.py")} - {"__init__", "xp"}
    covered = {"sft", "kl", "dpo", "orpo", "simpo", "kto", "grpo"}
    assert modules <= covered, f"add {modules - covered} to CASES above"


def test_namespaces_expose_the_same_ops():
    t, m = vars(xpmod.get("torch")), vars(xpmod.get("mlx"))
    assert set(t) == set(m)
    assert xpmod.of(mx.zeros(1)) is xpmod.get("mlx")
