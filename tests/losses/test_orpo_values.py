"""Hand-derived values for orpo_loss (arithmetic in the comments)."""

import math

import pytest
import torch

from mindprint.losses import xp as xp_mod
from mindprint.losses.orpo import orpo_loss

xp = xp_mod.get("torch")


def t(*v, grad=False):
    return torch.tensor(v, dtype=torch.float32, requires_grad=grad)


def test_orpo_value_and_metrics():
    # S_c = −2, L_c = 2 → a_c = −1;  S_r = −6, L_r = 3 → a_r = −2;  λ = 0.1
    # log(1 − e^−1) = log 0.632121 = −0.458675;  log(1 − e^−2) = log 0.864665 = −0.145413
    # ℓ = (−1 − (−2)) − (−0.458675 − (−0.145413)) = 1 + 0.313262 = 1.313262
    # log σ(1.313262) = −0.238183;  nll = −a_c = 1.0;  loss = 1.0 + 0.1·0.238183 = 1.023818
    loss, m = orpo_loss(t(-2.0), t(-6.0), torch.tensor([2]), torch.tensor([3]), lam=0.1, xp=xp)
    assert loss.item() == pytest.approx(1.0238183, abs=1e-6)
    assert m["log_odds_ratio"].item() == pytest.approx(1.3132617, abs=1e-6)
    assert m["log_sigmoid_odds"].item() == pytest.approx(-0.2381830, abs=1e-6)
    assert m["nll"].item() == pytest.approx(1.0)
    # rewards λ·a: −0.1 and −0.2, margin 0.1, accuracy 1
    assert m["rewards_chosen"].item() == pytest.approx(-0.1)
    assert m["rewards_rejected"].item() == pytest.approx(-0.2)
    assert m["reward_margin"].item() == pytest.approx(0.1)
    assert m["reward_accuracy"].item() == 1.0


def test_orpo_equal_averages_give_log2_penalty():
    # a_c = a_r = −1.5 → ℓ = 0, log σ(0) = −log 2;  loss = 1.5 + 0.2·0.693147 = 1.638629
    loss, m = orpo_loss(t(-3.0), t(-4.5), torch.tensor([2]), torch.tensor([3]), lam=0.2, xp=xp)
    assert loss.item() == pytest.approx(1.5 + 0.2 * math.log(2.0), abs=1e-6)
    assert m["reward_accuracy"].item() == 0.0


def test_orpo_gradient_wrt_chosen():
    # d loss/d S_c = (1/L_c)·(−1 − λ·(1 − σ(ℓ))·dℓ/da_c),  dℓ/da_c = 1 + e^a/(1 − e^a) = 1/(1 − e^a_c)
    # = (−1 − 0.1·(1 − 0.788058)·1.581977)/2 = (−1 − 0.033529)/2 = −0.516764   (raise chosen → lower loss)
    sc, sr = t(-2.0, grad=True), t(-6.0, grad=True)
    loss, _ = orpo_loss(sc, sr, torch.tensor([2]), torch.tensor([3]), lam=0.1, xp=xp)
    loss.sum().backward()
    assert sc.grad.item() == pytest.approx(-0.5167643, abs=1e-6)
    assert sr.grad.item() > 0  # raising rejected log-probs raises the loss


def test_orpo_token_weighted_nll_mode():
    # two pairs with a_c = a_r (ℓ = 0 → OR term λ·log 2 each);  nll_sum = [4, 2], nll_tokens = [3, 1]
    # token-weighted: per-example nll = B·nll_sum/Σtokens = 2·4/4 = 2.0 and 2·2/4 = 1.0; mean 1.5 = 6/4
    # (per-example means would give (4/3 + 2/1)/2 = 1.6667 instead)
    loss, m = orpo_loss(t(-2.0, -1.0), t(-2.0, -1.0), torch.tensor([2, 2]), torch.tensor([2, 2]),
                        lam=0.1, nll_sum=t(4.0, 2.0), nll_tokens=torch.tensor([3, 1]), xp=xp)
    assert m["nll"].tolist() == pytest.approx([2.0, 1.0])
    assert loss.mean().item() == pytest.approx(1.5 + 0.1 * math.log(2.0), abs=1e-6)


def test_orpo_log1mexp_stable_near_zero():
    # a_c = −1e−6 (p ≈ 1): log(1 − e^a) = log(−expm1(a)) ≈ log(1e−6) = −13.815511, finite with finite grads
    sc = t(-2e-6, grad=True)
    loss, m = orpo_loss(sc, t(-4.0), torch.tensor([2]), torch.tensor([2]), lam=0.1, xp=xp)
    # ℓ = (−1e−6 + 2) − (−13.815511 − log(1 − e^−2)) = 1.999999 + 13.815511 − 0.145413 = 15.670097
    assert m["log_odds_ratio"].item() == pytest.approx(15.670097, abs=1e-3)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(sc.grad).all()
