"""Hand-derived values for kto_loss / kto_kl_estimate (arithmetic in the comments)."""

import pytest
import torch

from mindprint.losses import xp as xp_mod
from mindprint.losses.kto import kto_kl_estimate, kto_loss

xp = xp_mod.get("torch")


def t(*v, grad=False):
    return torch.tensor(v, dtype=torch.float64, requires_grad=grad)


def test_kto_values_both_labels():
    # r = −1 − (−3) = 2 for both; z = 0.5; β = 0.1
    # desirable:   1 − σ(0.1·(2 − 0.5)) = 1 − σ(0.15) = 1 − 0.537430 = 0.462570
    # undesirable: 1 − σ(0.1·(0.5 − 2)) = 1 − σ(−0.15) = 1 − 0.462570 = 0.537430
    loss, m = kto_loss(t(-1.0, -1.0), t(-3.0, -3.0), torch.tensor([True, False]), t(0.5), beta=0.1, xp=xp)
    assert loss.tolist() == pytest.approx([0.4625701547, 0.5374298453], abs=1e-9)
    assert m["rewards"].tolist() == pytest.approx([0.2, 0.2])  # β·r
    assert m["desirable"].tolist() == [1.0, 0.0]
    assert m["kl"].item() == 0.5


def test_kto_weights_plain_mean():
    # w_d = 2: 2·0.462570 = 0.925140;  w_u = 0.5: 0.5·0.537430 = 0.268715
    # batch loss = plain mean over N = 2: (0.925140 + 0.268715)/2 = 0.596928  (not /Σw = 0.477542)
    loss, _ = kto_loss(t(-1.0, -1.0), t(-3.0, -3.0), t(1.0, 0.0), t(0.5), beta=0.1,
                       desirable_weight=2.0, undesirable_weight=0.5, xp=xp)
    assert loss.tolist() == pytest.approx([0.9251403093, 0.2687149227], abs=1e-9)
    assert loss.mean().item() == pytest.approx(0.5969276160, abs=1e-9)


def test_kto_gradient_signs():
    # desirable:   d/dπ [1 − σ(β(r − z))] = −β·σ(0.15)·(1 − σ(0.15)) = −0.1·0.248599 = −0.0248599
    # undesirable: d/dπ [1 − σ(β(z − r))] = +β·σ(−0.15)·(1 − σ(−0.15)) = +0.0248599 (push it down)
    pol, kl = t(-1.0, -1.0, grad=True), t(0.5, grad=True)
    loss, _ = kto_loss(pol, t(-3.0, -3.0), torch.tensor([1, 0]), kl, beta=0.1, xp=xp)
    loss.sum().backward()
    assert pol.grad.tolist() == pytest.approx([-0.0248599007, 0.0248599007], abs=1e-9)
    assert kl.grad is None  # z is a constant of the loss


def test_kto_zero_kl_float_and_larger_kl_hurts_desirable():
    # z = 0: desirable 1 − σ(0.2) = 0.450166;  z = 1: 1 − σ(0.1) = 0.475021 (larger z → larger loss)
    l0, _ = kto_loss(t(-1.0), t(-3.0), t(1.0), 0.0, beta=0.1, xp=xp)
    l1, _ = kto_loss(t(-1.0), t(-3.0), t(1.0), t(1.0), beta=0.1, xp=xp)
    assert l0.item() == pytest.approx(0.4501660027, abs=1e-9)
    assert l1.item() == pytest.approx(0.4750208125, abs=1e-9)


def test_kto_kl_estimate():
    # policy − ref = [1, −1] → mean 0 → z = 0;  [1, 0] → mean 0.5;  [−1, −2] → mean −1.5 → clamped to 0
    p = t(-3.0, -5.0, grad=True)
    z = kto_kl_estimate(p, t(-4.0, -4.0), xp=xp)
    assert z.item() == 0.0 and not z.requires_grad
    assert kto_kl_estimate(t(-3.0, -4.0), t(-4.0, -4.0), xp=xp).item() == pytest.approx(0.5)
    assert kto_kl_estimate(t(-5.0, -6.0), t(-4.0, -4.0), xp=xp).item() == 0.0
