"""Supervised fine-tuning loss.

Given per-token log-probs ``logp[b, t] = log p(y_t | y_<t)`` of the target tokens and a loss mask
``m[b, t]`` (1 on assistant tokens, 0 elsewhere), the per-example summed negative log-likelihood is

    nll_b = -Σ_t m[b,t] · logp[b,t]         tokens_b = Σ_t m[b,t]

The training objective is *token-weighted*: over a whole optimizer step (all micro-batches of a
gradient-accumulation cycle) the loss is Σ_b nll_b / Σ_b tokens_b. The loop therefore divides the
summed NLL of each micro-batch by the token count of the *whole* accumulation cycle, which makes
batch 4 × accum 1 and batch 1 × accum 4 give the same update.
"""

from __future__ import annotations


def sft_loss(logp, mask, xp):
    """Return ``(nll_per_example, metrics)``: summed NLL per example and token counts.

    >>> # one example, two target tokens with p = 0.5 and 0.25, third token masked out
    >>> # nll = -(ln 0.5 + ln 0.25) = 0.6931 + 1.3863 = 2.0794
    """
    m = xp.astype_float(mask)
    nll = -xp.sum(logp * m, axis=-1)
    tokens = xp.sum(m, axis=-1)
    return nll, {"tokens": tokens}
