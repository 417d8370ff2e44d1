"""The names ``grpo.rewards`` may hold: the built-in rewards, and the rule for a user function.

A leaf (standard library only), so that :mod:`mindprint.config` can validate a config's reward
names without importing the reward functions (:mod:`mindprint.rewards.builtin`), which sit above
the backends (the content-similarity reward loads a sentence-embedding model). Add a built-in reward
here and in :data:`mindprint.rewards.builtin.MAKERS`; a test checks that the two agree.
"""

from __future__ import annotations

import difflib

BUILTINS = ("content_similarity", "voice_match", "answer_similarity", "length", "format",
            "banned_phrases")
# old name -> new name; config accepts the old name with a warning and stores the new one
RENAMED = {"voice_fidelity": "content_similarity"}


def check_name(name: str) -> None:
    """Refuse a name that is neither a built-in nor ``module:function`` (ValueError, for config)."""
    if name in BUILTINS:
        return
    if ":" in name:
        mod, _, fn = name.partition(":")
        if mod and fn and all(p.isidentifier() for p in mod.split(".")) and fn.isidentifier():
            return
        raise ValueError(f"'{name}' is not \"package.module:function\"")
    close = difflib.get_close_matches(name, BUILTINS, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ValueError(f"unknown reward '{name}'; {hint}built-ins: {', '.join(BUILTINS)}, or a "
                     f"function as \"package.module:function\"")
