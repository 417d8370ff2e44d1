"""The GRPO reward both sides of ``benchmarks/vs_trl.py`` train on.

A module of its own with no imports, so Mindprint's reward loader can import it by name
(``benchmarks._vs_trl_reward:length_reward``, from the repository root) and TRL gets the very
same function object passed in.
"""

GRPO_LENGTH = (5, 25)           # the length reward's target range in words


def length_reward(prompts, completions, records=None, **kwargs) -> list[float]:
    """1 inside GRPO_LENGTH words, n/lo below, falling to 0 at 2·hi above. TRL passes
    conversational completions as message lists, Mindprint as text."""
    lo, hi = GRPO_LENGTH
    out = []
    for c in completions:
        text = c[-1]["content"] if isinstance(c, list) else c
        n = len(text.split())
        out.append(1.0 if lo <= n <= hi else n / lo if n < lo else max(0.0, 1.0 - (n - hi) / hi))
    return out
