"""KL-regularised SFT loss: hand-derived values, TRL GKD parity (β = 0), and the chunked backend
function against the pure formula (value and gradient)."""

from __future__ import annotations

import math

import pytest
import torch

from mindprint.losses import xp as xp_mod
from mindprint.losses.kl import kl_sft_loss, kl_to_base

xp = xp_mod.get("torch")


def test_kl_two_tokens_tau_1():
    # p_base = (1/2, 1/2); p_tuned = (3/4, 1/4)
    # KL = 1/2·ln((1/2)/(3/4)) + 1/2·ln((1/2)/(1/4)) = 1/2·(ln 2/3 + ln 2) = 1/2·ln(4/3)
    tuned = torch.tensor([[math.log(3.0), 0.0]])
    base = torch.tensor([[0.0, 0.0]])
    got = kl_to_base(tuned, base, 1.0, xp)
    assert got.item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)   # 0.143841


def test_kl_two_tokens_tau_2_scaled_by_tau_squared():
    # τ = 2: tuned logits/τ = (ln 3 / 2, 0) → p_tuned = (√3, 1)/(1+√3); p_base stays (1/2, 1/2)
    # KL = 1/2·ln((1+√3)/(2√3)) + 1/2·ln((1+√3)/2) = 1/2·ln((1+√3)²/(4√3)) = 1/2·ln(1.077350)
    #    = 1/2 · 0.0745046 = 0.0372523; × τ² = 4 → 0.149009
    s3 = math.sqrt(3.0)
    expected = 4 * 0.5 * math.log((1 + s3) ** 2 / (4 * s3))
    got = kl_to_base(torch.tensor([math.log(3.0), 0.0]), torch.tensor([0.0, 0.0]), 2.0, xp)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.149009, abs=1e-6)


def test_kl_zero_when_equal_and_gradient_is_tau_times_difference():
    z = torch.tensor([[1.0, -2.0, 0.5]], requires_grad=True)
    base = torch.tensor([[1.0, -2.0, 0.5]])
    assert kl_to_base(z, base, 1.0, xp).item() == pytest.approx(0.0, abs=1e-7)
    # gradient at a different point: ∂/∂z = τ·(softmax(z/τ) − softmax(b/τ))
    z2 = torch.tensor([[0.3, 1.2, -0.7]], requires_grad=True)
    tau = 1.5
    kl_to_base(z2, base, tau, xp).sum().backward()
    want = tau * (torch.softmax(z2.detach() / tau, -1) - torch.softmax(base / tau, -1))
    torch.testing.assert_close(z2.grad, want, rtol=1e-5, atol=1e-7)


def test_kl_sft_loss_combines_terms():
    # targets p = 0.5 and 0.25 (third position masked), kl_t = 0.1, 0.3, (9.0 masked), λ = 0.5
    # nll = ln 2 + ln 4 = 2.079442; kl = 0.4; loss = 2.079442 + 0.2 = 2.279442
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.1]]))
    kl = torch.tensor([[0.1, 0.3, 9.0]])
    mask = torch.tensor([[1, 1, 0]])
    loss, m = kl_sft_loss(logp, kl, mask, 0.5, xp)
    assert loss.item() == pytest.approx(math.log(2) + math.log(4) + 0.2, rel=1e-6)
    assert m["nll"].item() == pytest.approx(2.079442, rel=1e-6)
    assert m["kl"].item() == pytest.approx(0.4, rel=1e-6)
    assert m["tokens"].item() == 2
    loss0, _ = kl_sft_loss(logp, kl, mask, 0.0, xp)
    assert loss0.item() == m["nll"].item()          # λ = 0 is plain SFT, exactly


def test_trl_gkd_beta0_parity():
    """TRL's GKD generalized_jsd_loss with β = 0 is KL(teacher ‖ student) per token, averaged over
    unmasked tokens, without the τ² factor: ours / τ² must equal it, value and gradient."""
    import trl  # noqa: F401
    from trl.experimental.gkd import GKDTrainer

    torch.manual_seed(0)
    B, T, V, tau = 2, 5, 11, 1.7
    student = torch.randn(B, T, V, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(B, T, V, dtype=torch.float64)
    labels = torch.randint(0, V, (B, T))
    labels[0, :2] = -100
    labels[1, 4] = -100
    mask = labels != -100
    theirs = GKDTrainer.generalized_jsd_loss(student, teacher, labels=labels, beta=0.0,
                                             temperature=tau, reduction="batchmean")
    (g_theirs,) = torch.autograd.grad(theirs, student)
    kl = kl_to_base(student, teacher, tau, xp)
    ours = (kl * mask).sum() / mask.sum() / tau**2
    (g_ours,) = torch.autograd.grad(ours, student)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-10)
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_chunked_row_kl_matches_formula(tau):
    """The backend's chunked KL (hand-written backward, no [rows, vocab] kept) equals the pure
    formula on full logits, in value and in the gradients wrt hidden states and the head."""
    from mindprint.backends.torch.logps import _RowKL

    torch.manual_seed(1)
    N, H, V = 37, 8, 50
    h = torch.randn(N, H, dtype=torch.float64, requires_grad=True)
    hb = torch.randn(N, H, dtype=torch.float64)
    W = torch.randn(V, H, dtype=torch.float64, requires_grad=True)
    b = torch.randn(V, dtype=torch.float64, requires_grad=True)
    g = torch.randn(N, dtype=torch.float64)
    ours = _RowKL.apply(h, hb, W, b, tau, 8)          # 5 chunks, the last one partial
    ref = kl_to_base(h @ W.T + b, hb @ W.T + b, tau, xp)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-6)
    ga = torch.autograd.grad((ours * g).sum(), (h, W, b))
    gr = torch.autograd.grad((ref * g).sum(), (h, W, b))
    for a, r in zip(ga, gr):
        torch.testing.assert_close(a.double(), r, rtol=1e-4, atol=1e-6)
