"""Hand-derived values for dpo_loss / ipo_loss (arithmetic in the comments)."""

import math

import pytest
import torch

from mindprint.losses import xp as xp_mod
from mindprint.losses.dpo import dpo_loss, ipo_loss

xp = xp_mod.get("torch")


def t(*v, grad=False):
    return torch.tensor(v, dtype=torch.float64, requires_grad=grad)


def test_dpo_basic_value_and_metrics():
    # πc−refc = −1 − (−2) = 1;  πr−refr = −3 − (−2) = −1;  Δ = 1 − (−1) = 2;  β = 0.1
    # σ(0.1·2) = σ(0.2) = 0.549834;  loss = −log 0.549834 = 0.598139
    loss, m = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.1, xp=xp)
    assert loss.item() == pytest.approx(0.5981388694, abs=1e-9)
    # rewards β·(π − ref): 0.1·1 = 0.1 and 0.1·(−1) = −0.1; margin 0.2; chosen > rejected → 1.0
    assert m["rewards_chosen"].item() == pytest.approx(0.1)
    assert m["rewards_rejected"].item() == pytest.approx(-0.1)
    assert m["reward_margin"].item() == pytest.approx(0.2)
    assert m["reward_accuracy"].item() == 1.0


def test_dpo_label_smoothing():
    # z = 0.2; −log σ(−z) = −log σ(z) + z = 0.598139 + 0.2 = 0.798139
    # ε = 0.1: 0.9·0.598139 + 0.1·0.798139 = 0.538325 + 0.079814 = 0.618139  (= 0.598139 + ε·z)
    loss, _ = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.0), beta=0.1, label_smoothing=0.1, xp=xp)
    assert loss.item() == pytest.approx(0.6181388694, abs=1e-9)


def test_dpo_zero_margin_is_log2_for_any_smoothing():
    # Δ = 0 → both terms are −log σ(0) = log 2 = 0.693147; rewards tie → accuracy 0 (strict >)
    for eps in (0.0, 0.1, 0.3):
        loss, m = dpo_loss(t(-5.0), t(-7.0), t(-4.0), t(-6.0), beta=0.5, label_smoothing=eps, xp=xp)
        assert loss.item() == pytest.approx(math.log(2.0), abs=1e-12)
        assert m["reward_accuracy"].item() == 0.0


def test_dpo_gradient_sign_and_value():
    # d loss / d πc = −β·(1 − σ(βΔ)) = −0.1·(1 − 0.549834) = −0.0450166  (raise chosen → lower loss)
    # d loss / d πr = +0.0450166
    pc, pr = t(-1.0, grad=True), t(-3.0, grad=True)
    loss, m = dpo_loss(pc, pr, t(-2.0), t(-2.0), beta=0.1, xp=xp)
    loss.sum().backward()
    assert pc.grad.item() == pytest.approx(-0.0450166003, abs=1e-9)
    assert pr.grad.item() == pytest.approx(0.0450166003, abs=1e-9)
    assert not m["rewards_chosen"].requires_grad
    # with ε = 0.1: −β·((1 − ε) − σ(z)) = −0.1·(0.9 − 0.549834) = −0.0350166
    pc = t(-1.0, grad=True)
    loss, _ = dpo_loss(pc, t(-3.0), t(-2.0), t(-2.0), beta=0.1, label_smoothing=0.1, xp=xp)
    loss.sum().backward()
    assert pc.grad.item() == pytest.approx(-0.0350166003, abs=1e-9)


def test_dpo_is_per_example():
    # example 0 as above (0.598139); example 1 mirrored (Δ = −2): −log σ(−0.2) = 0.798139
    loss, m = dpo_loss(t(-1.0, -3.0), t(-3.0, -1.0), t(-2.0, -2.0), t(-2.0, -2.0), beta=0.1, xp=xp)
    assert loss.shape == (2,)
    assert loss.tolist() == pytest.approx([0.5981388694, 0.7981388694], abs=1e-9)
    assert m["reward_accuracy"].tolist() == [1.0, 0.0]


def test_ipo_value_and_gradient():
    # πc−refc = −6 − (−8) = 2 over Lc = 4 → 0.5;  πr−refr = −5 − (−4) = −1 over Lr = 2 → −0.5
    # Δ̄ = 0.5 − (−0.5) = 1.0;  β = 0.25 → 1/(2β) = 2.0;  loss = (1 − 2)² = 1.0
    pc, pr = t(-6.0, grad=True), t(-5.0, grad=True)
    loss, m = ipo_loss(pc, pr, t(-8.0), t(-4.0), torch.tensor([4]), torch.tensor([2]), beta=0.25, xp=xp)
    assert loss.item() == pytest.approx(1.0)
    assert m["ipo_delta"].item() == pytest.approx(1.0)
    # rewards stay on the summed log-ratios: 0.25·2 = 0.5 and 0.25·(−1) = −0.25
    assert m["rewards_chosen"].item() == pytest.approx(0.5)
    assert m["rewards_rejected"].item() == pytest.approx(-0.25)
    loss.sum().backward()
    # d/dπc = 2(Δ̄ − 2)·(1/Lc) = 2·(−1)·0.25 = −0.5;  d/dπr = 2·(−1)·(−1/2) = +1.0
    assert pc.grad.item() == pytest.approx(-0.5)
    assert pr.grad.item() == pytest.approx(1.0)


def test_ipo_at_target_margin_is_zero_and_zero_length_clipped():
    # Δ̄ = 1/(2β) = 5 with β = 0.1: chosen log-ratio 10 over 2 tokens → 5, rejected 0 → loss 0
    loss, _ = ipo_loss(t(0.0), t(-1.0), t(-10.0), t(-1.0), torch.tensor([2]), torch.tensor([3]), beta=0.1, xp=xp)
    assert loss.item() == pytest.approx(0.0)
    # zero tokens count as 1 (TRL clamps the same way): Δ̄ = 3/1 − 0 = 3, β = 0.5 → (3 − 1)² = 4
    loss, _ = ipo_loss(t(0.0), t(0.0), t(-3.0), t(0.0), torch.tensor([0]), torch.tensor([0]), beta=0.5, xp=xp)
    assert loss.item() == pytest.approx(4.0)
