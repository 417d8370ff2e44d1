"""Odds Ratio Preference Optimization (Hong et al. 2024), reference-free.

With completion log-prob sums S and token counts L, the per-token averages a = S/L (L clipped to ≥ 1) give

    log-odds(y) = a − log(1 − exp(a))
    ℓ           = log-odds(yc) − log-odds(yr) = (a_c − a_r) − (log1p(−e^{a_c}) − log1p(−e^{a_r}))
    loss        = NLL(chosen) − λ·log σ(ℓ)

NLL term, two modes (the method passes ``nll_sum``/``nll_tokens`` always, over the tokens ``orpo.nll``
names: the chosen answer's, or the chosen row's prompt and answer as TRL does; methods/pairwise.py):
  * default: per-example mean over the chosen completion's tokens, nll_b = −a_c.
  * token-weighted (TRL's batch semantics): pass ``nll_sum`` (per-example summed −log p over the tokens the NLL should cover) and
    ``nll_tokens`` (their counts). The NLL is then token-weighted over the batch, nll_b = B·nll_sum_b / Σ nll_tokens,
    so mean_b(loss_b) = Σ nll_sum / Σ nll_tokens − λ·mean_b log σ(ℓ_b), which is TRL 1.16's ORPO objective.
    TRL computes that NLL with a plain cross-entropy over the chosen sequence's *prompt and completion* tokens
    (every attended position after the first), not only the completion; pass those sums to match it.

λ is TRL's ``beta`` (ORPOConfig.beta). Rewards are λ·a (TRL logs the same). Metric names vs TRL:
``log_odds_ratio`` (ℓ) is TRL's "log_odds_chosen"; ``log_sigmoid_odds`` (log σ(ℓ)) is TRL's "log_odds_ratio".
log(1 − e^a) is evaluated in the stable two-branch form (log1p(−e^a) below −ln 2, log(−expm1 a) above).
"""

from __future__ import annotations

_NEG_LN2 = -0.6931471805599453


def _log1mexp(a, xp):
    return xp.where(a < _NEG_LN2, xp.log1p(-xp.exp(a)), xp.log(-xp.expm1(a)))


def orpo_loss(chosen_logps_sum, rejected_logps_sum, chosen_lengths, rejected_lengths, *,
              lam=0.1, nll_sum=None, nll_tokens=None, xp):
    """ORPO; returns ``(per_example_loss, metrics)``.

    >>> # S_c = −2.0, L_c = 2 → a_c = −1.0;  S_r = −6.0, L_r = 3 → a_r = −2.0;  λ = 0.1
    >>> # log(1−e^−1) = log 0.632121 = −0.458675;  log(1−e^−2) = log 0.864665 = −0.145413
    >>> # ℓ = (−1 + 2) − (−0.458675 + 0.145413) = 1.313262;  log σ(ℓ) = −0.238183
    >>> # loss = 1.0 − 0.1·(−0.238183) = 1.023818
    """
    a_c = xp.astype_float(chosen_logps_sum) / xp.clip(xp.astype_float(chosen_lengths), 1.0)
    a_r = xp.astype_float(rejected_logps_sum) / xp.clip(xp.astype_float(rejected_lengths), 1.0)
    log_odds = (a_c - a_r) - (_log1mexp(a_c, xp) - _log1mexp(a_r, xp))
    log_sig = xp.logsigmoid(log_odds)
    if nll_sum is None:
        nll = -a_c
    else:
        batch = xp.sum(xp.ones_like(a_c))
        nll = batch * nll_sum / xp.sum(xp.astype_float(nll_tokens))
    loss = nll - lam * log_sig
    rc, rr = lam * xp.stop_gradient(a_c), lam * xp.stop_gradient(a_r)
    return loss, {
        "rewards_chosen": rc,
        "rewards_rejected": rr,
        "reward_margin": rc - rr,
        "reward_accuracy": xp.astype_float(rc > rr),
        "log_odds_ratio": xp.stop_gradient(log_odds),
        "log_sigmoid_odds": xp.stop_gradient(log_sig),
        "nll": xp.stop_gradient(nll),
    }
