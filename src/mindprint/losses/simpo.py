"""Simple Preference Optimization (Meng et al. 2024), reference-free with a target margin.

With completion log-prob sums S and token counts L (clipped to ≥ 1), a = S/L is the per-token average and
β·a the length-normalised implicit reward. With label smoothing ε:

    m    = β·(a_c − a_r) − γ
    loss = −(1 − ε)·log σ(m) − ε·log σ(−m)

γ here is the *absolute* reward margin of the SimPO paper (Eq. 6), the same number as TRL's
``CPOConfig.simpo_gamma``: TRL's CPO trainer (loss_type="simpo") subtracts γ/β from the log-prob margin and
then multiplies by β, so β·(a_c − a_r − γ/β) = m — identical for identical (beta, simpo_gamma).
Pure SimPO in TRL also needs ``cpo_alpha=0``: its default 1.0 adds a behaviour-cloning NLL term.
Rewards are β·a (as TRL logs them).
"""

from __future__ import annotations


def simpo_loss(chosen_logps_sum, rejected_logps_sum, chosen_lengths, rejected_lengths, *,
               beta=2.0, gamma=0.5, label_smoothing=0.0, xp):
    """SimPO; returns ``(per_example_loss, metrics)``.

    >>> # S_c = −3.0, L_c = 3 → a_c = −1.0;  S_r = −4.0, L_r = 2 → a_r = −2.0;  β = 2.0, γ = 0.5
    >>> # m = 2.0·(−1.0 + 2.0) − 0.5 = 1.5;  loss = −log σ(1.5) = −log 0.817574 = 0.201413
    """
    a_c = chosen_logps_sum / xp.clip(xp.astype_float(chosen_lengths), 1.0)
    a_r = rejected_logps_sum / xp.clip(xp.astype_float(rejected_lengths), 1.0)
    margin = beta * (a_c - a_r) - gamma
    loss = -(1.0 - label_smoothing) * xp.logsigmoid(margin) - label_smoothing * xp.logsigmoid(-margin)
    rc, rr = beta * xp.stop_gradient(a_c), beta * xp.stop_gradient(a_r)
    return loss, {
        "rewards_chosen": rc,
        "rewards_rejected": rr,
        "reward_margin": rc - rr,
        "reward_accuracy": xp.astype_float(rc > rr),
    }
