"""Hand-derived values for simpo_loss (arithmetic in the comments)."""

import math

import pytest
import torch

from mindprint.losses import xp as xp_mod
from mindprint.losses.simpo import simpo_loss

xp = xp_mod.get("torch")


def t(*v, grad=False):
    return torch.tensor(v, dtype=torch.float64, requires_grad=grad)


def test_simpo_value_and_metrics():
    # S_c = −3, L_c = 3 → a_c = −1;  S_r = −4, L_r = 2 → a_r = −2;  β = 2, γ = 0.5
    # m = 2·(−1 + 2) − 0.5 = 1.5;  σ(1.5) = 0.817574;  loss = −log 0.817574 = 0.201413
    loss, m = simpo_loss(t(-3.0), t(-4.0), torch.tensor([3]), torch.tensor([2]), beta=2.0, gamma=0.5, xp=xp)
    assert loss.item() == pytest.approx(0.2014132780, abs=1e-9)
    # rewards β·a: −2 and −4, margin 2, accuracy 1
    assert m["rewards_chosen"].item() == pytest.approx(-2.0)
    assert m["rewards_rejected"].item() == pytest.approx(-4.0)
    assert m["reward_margin"].item() == pytest.approx(2.0)
    assert m["reward_accuracy"].item() == 1.0


def test_simpo_gamma_is_trl_simpo_gamma():
    # TRL: logits = (a_c − a_r) − γ/β = 1 − 0.25 = 0.75; −log σ(β·0.75) = −log σ(1.5): same m as ours
    loss, _ = simpo_loss(t(-3.0), t(-4.0), torch.tensor([3]), torch.tensor([2]), beta=2.0, gamma=0.5, xp=xp)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-2.0 * (1.0 - 0.5 / 2.0)))), abs=1e-12)


def test_simpo_label_smoothing_and_zero_margin():
    # ε = 0.2: 0.8·0.201413 + 0.2·(−log σ(−1.5)) = 0.8·0.201413 + 0.2·(0.201413 + 1.5) = 0.501413
    loss, _ = simpo_loss(t(-3.0), t(-4.0), torch.tensor([3]), torch.tensor([2]), beta=2.0, gamma=0.5,
                         label_smoothing=0.2, xp=xp)
    assert loss.item() == pytest.approx(0.5014132780, abs=1e-9)
    # a_c = a_r → m = −γ = −0.5;  −log σ(−0.5) = 0.974077 (the margin still pushes chosen up)
    loss, m = simpo_loss(t(-2.0), t(-3.0), torch.tensor([2]), torch.tensor([3]), beta=2.0, gamma=0.5, xp=xp)
    assert loss.item() == pytest.approx(0.9740769842, abs=1e-9)
    assert m["reward_accuracy"].item() == 0.0


def test_simpo_gradient_sign_and_value():
    # d loss/d S_c = −(1 − σ(m))·β/L_c = −(1 − 0.817574)·2/3 = −0.121617;  d/d S_r = +(0.182426)·2/2 = +0.182426
    sc, sr = t(-3.0, grad=True), t(-4.0, grad=True)
    loss, _ = simpo_loss(sc, sr, torch.tensor([3]), torch.tensor([2]), beta=2.0, gamma=0.5, xp=xp)
    loss.sum().backward()
    assert sc.grad.item() == pytest.approx(-0.1216170159, abs=1e-9)
    assert sr.grad.item() == pytest.approx(0.1824255238, abs=1e-9)
