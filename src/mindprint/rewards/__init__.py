"""Reward functions for ``method: grpo``.

A reward function takes the step's ``(prompts, completions, records)`` — prompts as chat messages
(lists of ``{"role", "content"}``), completions as decoded text, records as the
:class:`~mindprint.data.records.PromptRecord` each prompt came from — and returns one float per
completion, or ``None`` where it does not apply (e.g. a record without ``answer``). A completion no
reward applies to gets advantage 0. A function that declares a ``finished`` parameter (or takes
``**kwargs``) is also given ``finished=``: one bool per completion, True when it ended with
end-of-turn, False when ``grpo.max_completion_length`` cut it off.

``grpo.rewards`` names built-ins (:data:`BUILTINS`, see :mod:`.builtin`) or user functions as
``"package.module:function"``; the current directory is importable, so a ``my_rewards.py`` next to
the config works. The names alone live in the leaf :mod:`mindprint.reward_names` (config validates
against it); the sentence-embedding model behind ``content_similarity`` loads on first use, and
``voice_match`` fits its voice verifier (about a second) when the rewards are built.
"""

from __future__ import annotations

import importlib
import inspect
import math
import numbers
import os
import sys
from dataclasses import dataclass
from typing import Callable

from ..errors import ConfigError, MindprintError
from ..reward_names import BUILTINS, check_name
from . import builtin

__all__ = ["BUILTINS", "Reward", "build", "check_name", "combine", "load_user_function", "score"]

def load_user_function(spec: str) -> Callable:
    mod_name, _, fn_name = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(mod_name)
    except Exception as e:  # noqa: BLE001 - any import failure is the user's to fix
        raise ConfigError(f"grpo.rewards: cannot import '{mod_name}' for reward '{spec}' "
                          f"({type(e).__name__}: {e})") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ConfigError(f"grpo.rewards: '{mod_name}' has no function '{fn_name}' (reward '{spec}')")
    return fn


@dataclass
class Reward:
    name: str
    fn: Callable
    weight: float = 1.0


def build(grpo_cfg, banned_phrases: list[str] | None = None) -> list[Reward]:
    """The configured rewards with their weights; user functions are imported here."""
    weights = grpo_cfg.reward_weights or [1.0] * len(grpo_cfg.rewards)
    out = []
    for name, w in zip(grpo_cfg.rewards, weights):
        if name in BUILTINS:
            fn = builtin.make(name, grpo_cfg, banned_phrases)
        else:
            fn = load_user_function(name)
        out.append(Reward(name, fn, float(w)))
    return out


def _check(name: str, got, n: int) -> list[float | None]:
    try:
        values = list(got)
    except TypeError:
        raise MindprintError(f"reward '{name}' returned {type(got).__name__}; expected a list of "
                             f"{n} numbers (or None)") from None
    if len(values) != n:
        raise MindprintError(f"reward '{name}' returned {len(values)} value(s) for {n} completions")
    out: list[float | None] = []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
            raise MindprintError(f"reward '{name}' returned {v!r} for completion {i}; expected a "
                                 "finite number or None")
        out.append(float(v))
    return out


def _takes_finished(fn) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):     # builtins / C callables without a signature
        return False
    return any(p.name == "finished" or p.kind is p.VAR_KEYWORD for p in params)


def score(rewards: list[Reward], prompts, completions: list[str], records,
          finished: list[bool] | None = None) -> list[list[float | None]]:
    """``[F][N]`` values of every reward function (None where one does not apply).

    ``finished`` (one bool per completion: ended with end-of-turn) is passed as a keyword to the
    functions that accept it. A function that raises, or returns the wrong number or kind of
    values, stops the run with a :class:`MindprintError` naming it.
    """
    if finished is not None and len(finished) != len(completions):
        raise ValueError(f"finished has {len(finished)} flags for {len(completions)} completions")
    table = []
    for r in rewards:
        kw = {"finished": list(finished)} if finished is not None and _takes_finished(r.fn) else {}
        try:
            got = r.fn(prompts, completions, records, **kw)
        except MindprintError:
            raise
        except Exception as e:  # noqa: BLE001 - a user function's bug must name the function
            raise MindprintError(f"reward '{r.name}' raised {type(e).__name__}: {e}") from e
        table.append(_check(r.name, got, len(completions)))
    return table


def combine(rewards: list[Reward], table) -> list[float | None]:
    """Weighted sum per completion over the functions that apply; None when none does."""
    out = []
    for i in range(len(table[0]) if table else 0):
        vals = [(r.weight, col[i]) for r, col in zip(rewards, table) if col[i] is not None]
        out.append(sum(w * v for w, v in vals) if vals else None)
    return out
