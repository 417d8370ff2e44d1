"""Direct Preference Optimization (sigmoid) and IPO losses.

Inputs are per-example *sequence-level* log-probs: the sum over completion tokens of log p(y_t | x, y_<t)
under the policy (π) and the frozen reference (ref), for the chosen (c) and rejected (r) completion.

DPO (Rafailov et al. 2023), with conservative label smoothing ε (cDPO, Mitchell 2023):

    Δ    = (πc − πr) − (refc − refr)
    loss = −(1 − ε)·log σ(β·Δ) − ε·log σ(−β·Δ)

IPO (Azar et al. 2023, Eq. 17) on per-token *averaged* log-ratios, as TRL 1.16 does for loss_type="ipo":

    Δ̄    = (πc − refc)/Lc − (πr − refr)/Lr          (L = completion token count, clipped to ≥ 1)
    loss = (Δ̄ − 1/(2β))²

Batch objective = mean of the per-example losses (what TRL does). Implicit rewards are β·(π − ref) on the
*summed* log-ratios for both losses (TRL logs the same, also for IPO).

Note: TRL 1.16's loss_type="sigmoid" ignores `label_smoothing` (only "robust", "exo_pair", "aot*" read it).
Our ε is the cDPO form above, which TRL 1.16 still computes in its "aot" branch for a batch of size 1 and
equals 2(1−ε)·"sigmoid" − (1−2ε)·"robust"; with ε = 0 it is exactly TRL's "sigmoid".
"""

from __future__ import annotations


def _reward_metrics(chosen_logratio, rejected_logratio, beta, xp):
    rc = beta * xp.stop_gradient(chosen_logratio)
    rr = beta * xp.stop_gradient(rejected_logratio)
    return {
        "rewards_chosen": rc,
        "rewards_rejected": rr,
        "reward_margin": rc - rr,
        "reward_accuracy": xp.astype_float(rc > rr),
    }


def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *,
             beta=0.1, label_smoothing=0.0, xp):
    """Sigmoid DPO; returns ``(per_example_loss, metrics)``.

    >>> # πc−refc = −1.0 − (−2.0) = 1.0, πr−refr = −3.0 − (−2.0) = −1.0, Δ = 2.0, β = 0.1
    >>> # loss = −log σ(0.2) = −log 0.549834 = 0.598139
    """
    chosen_logratio = policy_chosen_logps - ref_chosen_logps
    rejected_logratio = policy_rejected_logps - ref_rejected_logps
    z = beta * (chosen_logratio - rejected_logratio)
    loss = -(1.0 - label_smoothing) * xp.logsigmoid(z) - label_smoothing * xp.logsigmoid(-z)
    return loss, _reward_metrics(chosen_logratio, rejected_logratio, beta, xp)


def ipo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
             chosen_lengths, rejected_lengths, *, beta=0.1, xp):
    """IPO with per-token averaged log-ratios; returns ``(per_example_loss, metrics)``.

    >>> # πc−refc = 2.0 over Lc = 4 → 0.5; πr−refr = −1.0 over Lr = 2 → −0.5; Δ̄ = 1.0
    >>> # β = 0.25 → 1/(2β) = 2.0; loss = (1.0 − 2.0)² = 1.0
    """
    chosen_logratio = policy_chosen_logps - ref_chosen_logps
    rejected_logratio = policy_rejected_logps - ref_rejected_logps
    lc = xp.clip(xp.astype_float(chosen_lengths), 1.0)
    lr = xp.clip(xp.astype_float(rejected_lengths), 1.0)
    delta = chosen_logratio / lc - rejected_logratio / lr
    loss = (delta - 1.0 / (2.0 * beta)) ** 2
    metrics = _reward_metrics(chosen_logratio, rejected_logratio, beta, xp)
    metrics["ipo_delta"] = xp.stop_gradient(delta)
    return loss, metrics
