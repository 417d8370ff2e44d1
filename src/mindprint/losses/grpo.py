"""Group-relative policy optimisation: GRPO (Shao et al. 2024) and its variants GSPO, Dr. GRPO, DAPO,
BNPO — one clipped surrogate, four ways to average it, two levels of importance ratio.

A prompt is answered G times; completion i gets a scalar reward r_i. Its advantage is the reward
relative to its group (or to the whole batch), with ε_std = 1e-4:

    A_i = (r_i − mean_group(r)) / (std_group(r) + ε_std)      scale = "group"
    A_i = (r_i − mean_group(r)) / (std_batch(r) + ε_std)      scale = "batch"
    A_i =  r_i − mean_group(r)                                scale = "none"

(std is the unbiased sample standard deviation.) With per-token log-probs ℓ_t under the policy and
ℓ_t^old under the policy that sampled the completion, the importance ratio is

    ρ_t = exp(ℓ_t − ℓ_t^old)                                  level = "token"
    ρ   = exp(Σ_t m_t (ℓ_t − ℓ_t^old) / Σ_t m_t)              level = "sequence" (GSPO)

and the per-token loss is the clipped surrogate plus an optional k3 KL estimate to the reference
(ℓ^ref, the adapter-disabled model):

    l_t = −min(ρ_t A, clip(ρ_t, 1 − ε_low, 1 + ε_high) A) + β (exp(ℓ^ref_t − ℓ_t) − (ℓ^ref_t − ℓ_t) − 1)

Aggregation over a batch of B completions with completion mask m (L = max_completion_length,
N = active tokens of the whole accumulated batch, ``num_items``):

    grpo     (1/B) Σ_i [Σ_t m_it l_it / Σ_t m_it]
    bnpo     Σ_it m_it l_it / Σ_it m_it
    dr_grpo  Σ_it m_it l_it / (B · L)
    dapo     Σ_it m_it l_it / N
"""

from __future__ import annotations

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
LEVELS = ("token", "sequence")
SCALES = ("group", "batch", "none")
STD_EPS = 1e-4


def group_advantages(rewards, group_size: int, *, scale: str = "group", valid=None, xp):
    """``(advantages [N], metrics)`` for rewards ``[N]`` laid out group after group.

    ``valid`` (``[N]``, 1/0) marks completions that have a reward; the others are left out of the
    means and standard deviations and get advantage 0 (their reward value is ignored).

    >>> # one group of 4: r = [1, 2, 3, 4] → mean 2.5, unbiased std = sqrt(5/3) = 1.290994
    >>> # A = [−1.5, −0.5, 0.5, 1.5] / 1.291094 = [−1.161806, −0.387269, 0.387269, 1.161806]
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    v = xp.ones_like(rewards) if valid is None else xp.astype_float(valid) * xp.ones_like(rewards)
    r = xp.where(v > 0, rewards, xp.zeros_like(rewards))
    grouped, vg = r.reshape(-1, group_size), v.reshape(-1, group_size)
    n = xp.sum(vg, axis=1)
    mean = xp.sum(grouped * vg, axis=1) / xp.clip(n, 1.0)
    centred = (grouped - mean[:, None]) * vg
    group_std = (xp.sum(centred * centred, axis=1) / xp.clip(n - 1.0, 1.0)) ** 0.5
    if scale == "group":
        adv = (centred / (group_std[:, None] + STD_EPS)).reshape(-1)
    elif scale == "batch":
        nb = xp.sum(v)
        mb = xp.sum(r * v) / xp.clip(nb, 1.0)
        std_b = (xp.sum(((r - mb) * v) ** 2) / xp.clip(nb - 1.0, 1.0)) ** 0.5
        adv = centred.reshape(-1) / (std_b + STD_EPS)
    else:
        adv = centred.reshape(-1)
    zero = xp.astype_float(xp.abs(group_std) <= 1e-8)
    return adv, {"group_std_zero_frac": xp.mean(zero)}


def grpo_loss(logps, old_logps, advantages, mask, *, ref_logps=None, beta: float = 0.0,
              epsilon: float = 0.2, epsilon_high: float | None = None, loss_type: str = "dapo",
              importance_sampling_level: str = "token", max_completion_length: int | None = None,
              num_items=None, xp):
    """Clipped surrogate (see the module docstring); returns ``(loss, metrics)``, loss a scalar.

    ``logps``, ``old_logps``, ``ref_logps``, ``mask``: ``[B, T]`` (mask 1 on completion tokens);
    ``advantages``: ``[B]``. ``num_items``: dapo's normaliser (default: this batch's active tokens).

    >>> # one sequence, two tokens, A = 1, ε = 0.2, log-ratios [log 1.5, log 0.5]
    >>> # token:    ρ = [1.5, 0.5] → −min(ρA, clip(ρ)A) = [−1.2, −0.5]; grpo → −0.85; high clip ½
    >>> # sequence: ρ = exp(½ (log 1.5 + log 0.5)) = sqrt(0.75) = 0.866025 → loss −0.866025
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if importance_sampling_level not in LEVELS:
        raise ValueError(f"importance_sampling_level must be one of {LEVELS}")
    eps_hi = epsilon if epsilon_high is None else epsilon_high
    m = xp.astype_float(mask)
    tokens = xp.clip(xp.sum(m, axis=-1), 1.0)                      # [B]
    log_ratio = logps - old_logps
    if importance_sampling_level == "sequence":
        log_ratio = (xp.sum(log_ratio * m, axis=-1) / tokens)[:, None]   # [B, 1]
    ratio = xp.exp(log_ratio)
    A = advantages[:, None]
    surrogate = -xp.minimum(ratio * A, xp.clip(ratio, 1.0 - epsilon, 1.0 + eps_hi) * A)
    per_token = surrogate
    kl = None
    if beta != 0.0:
        d = ref_logps - logps
        kl = xp.exp(d) - d - 1.0
        per_token = per_token + beta * kl
    masked = per_token * m                                          # broadcasts [B, 1] to [B, T]
    if loss_type == "grpo":
        loss = xp.mean(xp.sum(masked, axis=-1) / tokens)
    elif loss_type == "bnpo":
        loss = xp.sum(masked) / xp.clip(xp.sum(m), 1.0)
    elif loss_type == "dr_grpo":
        if not max_completion_length:
            raise ValueError("dr_grpo needs max_completion_length")
        loss = xp.sum(masked) / (m.shape[0] * max_completion_length)
    else:
        loss = xp.sum(masked) / (xp.clip(xp.sum(m), 1.0) if num_items is None else num_items)

    sg = xp.stop_gradient

    def token_mean(x):      # over active tokens, or over sequences for a per-sequence quantity
        if x.shape[-1] == 1:
            return xp.mean(x)
        return xp.sum(x * m) / xp.clip(xp.sum(m), 1.0)

    low = xp.astype_float((sg(ratio) < 1.0 - epsilon) & (A < 0))
    high = xp.astype_float((sg(ratio) > 1.0 + eps_hi) & (A > 0))
    metrics = {"clip_low": token_mean(low), "clip_high": token_mean(high),
               "clip_region": token_mean(low + high), "ratio_mean": token_mean(sg(ratio))}
    if kl is not None:
        metrics["kl"] = token_mean(sg(kl))
    return loss, metrics
