"""Kahneman-Tversky Optimization (Ethayarajh et al. 2024, Eq. 7) on unpaired, labelled completions.

Per example: summed completion log-probs under the policy and the frozen reference, and a label y
(1 desirable, 0 undesirable). With r = π − ref and a detached batch KL estimate z ≥ 0:

    desirable:    loss = w_d·(1 − σ(β·(r − z)))
    undesirable:  loss = w_u·(1 − σ(β·(z − r)))

Batch objective (TRL 1.16 KTOTrainer): the *plain mean over all examples* of the weighted per-example
losses, i.e. Σ_i w_i·loss_i / N — the weights are not renormalised (not Σ w_i·loss_i / Σ w_i).

z comes from mismatched (prompt, completion) pairs: TRL rotates completions by one inside each batch,
(x_1, y_n), (x_2, y_1), ..., (x_n, y_{n−1}), scores them under policy and reference without gradient, and
uses z = max(0, mean(π_KL − ref_KL)). Under data parallelism TRL averages the unclamped mean across ranks
*before* clamping; a distributed caller should all-reduce the mean first and clamp after.
"""

from __future__ import annotations


def kto_kl_estimate(policy_kl_logps, ref_kl_logps, *, xp):
    """z = stop_gradient(max(0, mean_i(policy_kl_logps_i − ref_kl_logps_i))), a scalar.

    >>> # policy_kl = [−3, −5], ref_kl = [−4, −4] → differences [1, −1], mean 0.0 → z = 0.0
    >>> # policy_kl = [−3, −4], ref_kl = [−4, −4] → mean 0.5 → z = 0.5
    """
    return xp.clip(xp.mean(xp.stop_gradient(policy_kl_logps - ref_kl_logps)), 0.0)


def kto_loss(policy_logps, ref_logps, labels, kl, *, beta=0.1, desirable_weight=1.0,
             undesirable_weight=1.0, xp):
    """KTO; returns ``(per_example_loss, metrics)``; the batch loss is ``per_example_loss.mean()``.

    >>> # r = −1.0 − (−3.0) = 2.0, z = 0.5, β = 0.1
    >>> # desirable:   1 − σ(0.1·1.5)  = 1 − 0.537430 = 0.462570
    >>> # undesirable: 1 − σ(0.1·−1.5) = 1 − 0.462570 = 0.537430
    """
    y = xp.astype_float(labels)
    logratio = policy_logps - ref_logps
    z = kl if isinstance(kl, (int, float)) else xp.stop_gradient(kl)
    desirable = desirable_weight * (1.0 - xp.sigmoid(beta * (logratio - z)))
    undesirable = undesirable_weight * (1.0 - xp.sigmoid(beta * (z - logratio)))
    loss = y * desirable + (1.0 - y) * undesirable
    return loss, {
        "rewards": beta * xp.stop_gradient(logratio),
        "desirable": y,
        "kl": z,  # scalar
    }
