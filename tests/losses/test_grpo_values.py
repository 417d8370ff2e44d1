"""GRPO-family loss and advantages on hand-derived values (arithmetic in the comments)."""

import math

import pytest
import torch

from mindprint.losses import xp as xp_mod
from mindprint.losses.grpo import group_advantages, grpo_loss

xp = xp_mod.get("torch")
t = lambda *rows: torch.tensor(rows, dtype=torch.float64)  # noqa: E731


def test_group_advantages_group_batch_none():
    # group 1: r = [1, 2, 3, 4], mean 2.5, unbiased std sqrt(((1.5²+0.5²)·2)/3) = sqrt(5/3) = 1.2909944
    # group 2: r = [0, 0, 0, 0], mean 0, std 0 → A = 0 / (0 + 1e-4) = 0; zero-variance fraction ½
    r = torch.tensor([1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    adv, m = group_advantages(r, 4, scale="group", xp=xp)
    s = math.sqrt(5 / 3) + 1e-4
    torch.testing.assert_close(adv, torch.tensor([-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s, 0, 0, 0, 0],
                                                 dtype=torch.float64))
    assert float(m["group_std_zero_frac"]) == 0.5
    # none: just centred within the group
    adv, _ = group_advantages(r, 4, scale="none", xp=xp)
    torch.testing.assert_close(adv, t(-1.5, -0.5, 0.5, 1.5, 0.0, 0.0, 0.0, 0.0).reshape(-1))
    # batch: centred in the group, divided by the std of all 8 rewards
    # mean 1.25, Σ(r−1.25)² = 0.0625+0.5625+3.0625+7.5625 + 4·1.5625 = 17.5 → std sqrt(17.5/7) = 1.5811388
    adv, _ = group_advantages(r, 4, scale="batch", xp=xp)
    sb = math.sqrt(2.5) + 1e-4
    torch.testing.assert_close(adv, t(-1.5, -0.5, 0.5, 1.5, 0, 0, 0, 0).reshape(-1) / sb)


def _one_seq():
    # one sequence of two active tokens + one padding token; A = +1; ratios 1.5 and 0.5
    logps = t([math.log(1.5) - 1.0, math.log(0.5) - 2.0, 0.0])
    old = t([-1.0, -2.0, 0.0])
    mask = t([1.0, 1.0, 0.0])
    return logps, old, mask


def test_token_level_clip_and_aggregations():
    logps, old, mask = _one_seq()
    adv = t(1.0).reshape(1)
    # ρ = [1.5, 0.5]; clip to [0.8, 1.2] → [1.2, 0.8]; −min(ρA, clip(ρ)A) = [−1.2, −0.5]
    loss, m = grpo_loss(logps, old, adv, mask, epsilon=0.2, loss_type="grpo", xp=xp)
    assert float(loss) == pytest.approx(-0.85)           # (−1.2 − 0.5) / 2
    assert float(m["clip_high"]) == pytest.approx(0.5)    # 1.5 > 1.2 with A > 0
    assert float(m["clip_low"]) == 0.0                    # 0.5 < 0.8 but A > 0: not clipped
    loss, _ = grpo_loss(logps, old, adv, mask, loss_type="bnpo", xp=xp)
    assert float(loss) == pytest.approx(-0.85)           # one sequence: same as grpo
    loss, _ = grpo_loss(logps, old, adv, mask, loss_type="dr_grpo", max_completion_length=4, xp=xp)
    assert float(loss) == pytest.approx(-1.7 / 4)        # Σ / (B·L) = −1.7 / (1·4)
    loss, _ = grpo_loss(logps, old, adv, mask, loss_type="dapo", num_items=10.0, xp=xp)
    assert float(loss) == pytest.approx(-0.17)           # Σ / N = −1.7 / 10


def test_clip_higher_and_negative_advantage():
    logps, old, mask = _one_seq()
    # DAPO clip-higher ε_high = 0.6: clip(1.5) = 1.5 → −1.5; A = +1 → losses [−1.5, −0.5]
    loss, m = grpo_loss(logps, old, t(1.0).reshape(1), mask, epsilon=0.2, epsilon_high=0.6,
                        loss_type="grpo", xp=xp)
    assert float(loss) == pytest.approx(-1.0)
    assert float(m["clip_high"]) == 0.0
    # A = −1: −min(−ρ, −clip(ρ)) = max(ρ, clip ρ) = [max(1.5, 1.2), max(0.5, 0.8)] = [1.5, 0.8]
    loss, m = grpo_loss(logps, old, t(-1.0).reshape(1), mask, epsilon=0.2, loss_type="grpo", xp=xp)
    assert float(loss) == pytest.approx(1.15)
    assert float(m["clip_low"]) == pytest.approx(0.5)     # 0.5 < 0.8 with A < 0


def test_sequence_level_gspo():
    logps, old, mask = _one_seq()
    # ρ = exp(½(log 1.5 + log 0.5)) = sqrt(0.75) = 0.8660254, inside [0.8, 1.2]; A = 2 → −1.7320508
    loss, m = grpo_loss(logps, old, t(2.0).reshape(1), mask, importance_sampling_level="sequence",
                        loss_type="grpo", xp=xp)
    assert float(loss) == pytest.approx(-2 * math.sqrt(0.75))
    assert float(m["ratio_mean"]) == pytest.approx(math.sqrt(0.75))
    # bnpo with the sequence ratio: Σ_t m_t·l = 2·(−1.7320508) over 2 tokens → same value
    loss, _ = grpo_loss(logps, old, t(2.0).reshape(1), mask, importance_sampling_level="sequence",
                        loss_type="bnpo", xp=xp)
    assert float(loss) == pytest.approx(-2 * math.sqrt(0.75))


def test_k3_kl_term():
    # ℓ = old → ρ = 1, A = 0: only the KL term. d = ℓref − ℓ = [0.5, −1.0]
    # k3 = e^d − d − 1 = [1.6487213 − 1.5, 0.3678794 + 1 − 1] = [0.1487213, 0.3678794]
    logps, old, mask = t([-1.0, -2.0]), t([-1.0, -2.0]), t([1.0, 1.0])
    ref = t([-0.5, -3.0])
    loss, m = grpo_loss(logps, old, t(0.0).reshape(1), mask, ref_logps=ref, beta=0.1,
                        loss_type="grpo", xp=xp)
    k3 = [math.exp(0.5) - 1.5, math.exp(-1.0)]
    assert float(m["kl"]) == pytest.approx(sum(k3) / 2)
    assert float(loss) == pytest.approx(0.1 * sum(k3) / 2)


def test_grpo_mean_of_sequence_means_differs_from_bnpo():
    # seq 1: one token with ρ = 1, A = 1 → l = −1; seq 2: three tokens with ρ = 1, A = −1 → l = +1 each
    # grpo: mean(−1/1, 3/3) = 0;  bnpo: (−1 + 3) / 4 = 0.5;  dr_grpo (L = 4): 2 / (2·4) = 0.25
    logps = torch.zeros(2, 3, dtype=torch.float64)
    mask = t([1.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    adv = t(1.0, -1.0).reshape(-1)
    got = {lt: float(grpo_loss(logps, logps, adv, mask, loss_type=lt, max_completion_length=4,
                               xp=xp)[0]) for lt in ("grpo", "bnpo", "dr_grpo", "dapo")}
    assert got == pytest.approx({"grpo": 0.0, "bnpo": 0.5, "dr_grpo": 0.25, "dapo": 0.5})


def test_gradient_of_unclipped_token_term():
    # ρ = 1 at ℓ = ℓold: ∂(−ρA)/∂ℓ = −ρA = −A; grpo divides by the sequence's 2 tokens and B = 1
    logps = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    loss, _ = grpo_loss(logps, logps.detach(), t(3.0).reshape(1), t([1.0, 1.0]), loss_type="grpo", xp=xp)
    loss.backward()
    torch.testing.assert_close(logps.grad, t([-1.5, -1.5]))


def test_bad_options():
    logps, old, mask = _one_seq()
    with pytest.raises(ValueError):
        grpo_loss(logps, old, t(1.0).reshape(1), mask, loss_type="ppo", xp=xp)
    with pytest.raises(ValueError):
        grpo_loss(logps, old, t(1.0).reshape(1), mask, loss_type="dr_grpo", xp=xp)


def test_advantages_leave_out_unscored_completions():
    # group [1, ?, 3, 5] with the second unscored: mean of {1, 3, 5} = 3, std = sqrt((4+0+4)/2) = 2
    # A = [−2, 0, 0, 2] / (2 + 1e-4); the unscored one gets 0 whatever its placeholder value
    r = torch.tensor([1.0, 99.0, 3.0, 5.0], dtype=torch.float64)
    valid = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    adv, _ = group_advantages(r, 4, valid=valid, xp=xp)
    torch.testing.assert_close(adv, torch.tensor([-2.0, 0.0, 0.0, 2.0], dtype=torch.float64) / 2.0001)
    # batch scale with one group is the same number here
    adv_b, _ = group_advantages(r, 4, valid=valid, scale="batch", xp=xp)
    torch.testing.assert_close(adv_b, adv)
