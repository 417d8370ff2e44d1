"""KL-regularised SFT: learn the voice, stay close to the base model.

Per target position t (an assistant token), with temperature τ and p = softmax(z / τ):

    kl_t   = τ² · KL(p_base ‖ p_tuned) = τ² · Σ_v p_base(v) · (log p_base(v) − log p_tuned(v))

The τ² factor keeps the gradient size independent of τ (∂kl_t/∂z_tuned = τ · (p_tuned − p_base)).
The base ("teacher") is the same model with its adapter switched off, so it is never trained and
its logits carry no gradient. Per example b, with assistant mask m:

    nll_b  = −Σ_t m[b,t] · log p_tuned(y_t)         (τ = 1, the ordinary SFT term)
    kl_b   =  Σ_t m[b,t] · kl_t
    loss_b =  nll_b + λ · kl_b

and, as for SFT, a step's loss is Σ_b loss_b / Σ_b tokens_b. λ = 0 is plain SFT exactly.
KL(base ‖ tuned) is the "forward" direction: it penalises the tuned model for dropping mass where
the base model puts it (TRL's GKD with β = 0 computes the same KL, without the τ² factor).
"""

from __future__ import annotations


def kl_to_base(tuned_logits, base_logits, tau: float, xp):
    """``τ²·KL(softmax(base/τ) ‖ softmax(tuned/τ))`` over the last axis (one value per position).

    >>> # 2 tokens; base logits (0, 0) → p_base = (½, ½); tuned logits (ln 3, 0) → p_tuned = (¾, ¼)
    >>> # τ = 1: ½·ln(½/¾) + ½·ln(½/¼) = ½·ln(4/3) = 0.143841
    """
    lt = xp.log_softmax(tuned_logits / tau, axis=-1)
    lb = xp.log_softmax(xp.stop_gradient(base_logits) / tau, axis=-1)
    return (tau * tau) * xp.sum(xp.exp(lb) * (lb - lt), axis=-1)


def kl_sft_loss(logp, kl, mask, lam: float, xp):
    """Return ``(loss_per_example, metrics)`` from per-position target log-probs ``logp`` and
    per-position ``kl`` (both ``[B, T]``), and the assistant mask.

    >>> # one example, targets with p = 0.5 and 0.25, kl_t = 0.1 and 0.3, λ = 0.5:
    >>> # nll = ln 2 + ln 4 = 2.0794; kl = 0.4; loss = 2.0794 + 0.5·0.4 = 2.2794
    """
    m = xp.astype_float(mask)
    nll = -xp.sum(logp * m, axis=-1)
    kl_sum = xp.sum(kl * m, axis=-1)
    return nll + lam * kl_sum, {"nll": nll, "kl": kl_sum, "tokens": xp.sum(m, axis=-1)}
