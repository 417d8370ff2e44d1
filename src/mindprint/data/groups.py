"""A prompt group rendered for training: one prompt, several completions, each scored only on its
assistant tokens (preference pairs: two; KTO: a prompt's labelled completions). Data-level, so
``data stats`` counts what the preference methods will train on (:mod:`mindprint.methods.groups`
builds datasets of these and attaches reference log-probs).

Truncation keeps the prompt whole — its end, the generation prompt, is what the completion
continues — and cuts completions at their end to fit ``data.max_length`` (as TRL's default
``keep_start``). A prompt that leaves too little room for its completions, or a pair whose two
completions become identical once cut, is a problem the caller reports as ``file:line``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError
from .render import render_messages, render_prompt

MIN_ROOM = 8      # completion tokens a prompt must leave (fewer if the completion is shorter)


@dataclass
class Group:
    prompt: list[int]
    completions: list[list[int]]
    masks: list[list[int]]            # 1 on scored tokens
    labels: list[bool]                # pairs: [True, False]; KTO: desirable or not
    where: str = ""
    truncated: bool = False
    kl: "Group | None" = None         # KTO: this prompt with another group's completions
    ref: np.ndarray | None = field(default=None, repr=False)     # [K] reference log-prob sums
    source: tuple | None = field(default=None, repr=False)        # (prompt, completions) messages
    tools: tuple | None = field(default=None, repr=False)         # the record's tool list

    def packed(self):
        return self.prompt, list(zip(self.completions, self.masks))

    @property
    def n_tokens(self) -> int:
        """Tokens of the sequences this group stands for (prompt + completion, each)."""
        return sum(len(self.prompt) + len(c) for c in self.completions)

    @property
    def packed_length(self) -> int:
        return len(self.prompt) + sum(len(c) for c in self.completions)

    @property
    def target_tokens(self) -> list[int]:
        return [sum(m) for m in self.masks]



def _common_prefix(seqs: list[list[int]]) -> int:
    n = min(len(s) for s in seqs)
    for i in range(n):
        if any(s[i] != seqs[0][i] for s in seqs[1:]):
            return i
    return n


def render_group(tokenizer, prompt, completions, labels, max_length: int, where: str = "", *,
                 strict: bool = True, tools=None) -> tuple[Group | None, str | None]:
    """A :class:`Group`, or ``(None, problem)`` when it cannot be trained on within max_length.

    ``strict=False`` (KTO's mismatched KL groups) only cuts, and reports nothing but an empty
    completion. ``tools`` (the record's tool list) is rendered with the prompt and every
    completion, as the chat path renders it; a template that cannot render tool use is an error
    naming ``where``.
    """
    try:
        rendered = [render_messages(tokenizer, list(prompt) + list(c), tools=tools)
                    for c in completions]
        # the prompt is what every rendering shares with the prompt rendered alone (as TRL does
        # when a template or a token merge makes them differ at the boundary); what follows is
        # completion
        prompt_ids = render_prompt(tokenizer, prompt, tools)
    except DataError as err:
        raise DataError(f"{where}: {err}" if where else str(err)) from None
    rendered = [(r.input_ids, r.loss_mask) for r in rendered]
    P = _common_prefix([prompt_ids] + [ids for ids, _ in rendered])
    comps, masks = [], []
    for ids, m in rendered:
        c, cm = ids[P:], m[P:]
        while cm and not cm[-1]:            # template whitespace after the end-of-turn token
            c, cm = c[:-1], cm[:-1]
        comps.append(c)
        masks.append(cm)
    if P == 0:
        return None, f"{where}: the chat template renders an empty prompt"
    if any(sum(m) == 0 for m in masks):
        return None, f"{where}: a completion renders to no assistant tokens"
    room = max_length - P
    need = min(MIN_ROOM, min(len(c) for c in comps)) if strict else 1
    if room < need:
        return None, (f"{where}: the prompt is {P} tokens and leaves {max(room, 0)} of "
                      f"data.max_length={max_length} for the completion (at least {need} needed); "
                      f"shorten the prompt or raise data.max_length")
    truncated = any(len(c) > room for c in comps)
    if truncated:
        comps = [c[:room] for c in comps]
        masks = [m[:room] for m in masks]
        if strict and len(comps) == 2 and labels[0] != labels[1] and comps[0] == comps[1]:
            return None, (f"{where}: chosen and rejected are identical within the first {room} "
                          f"completion tokens that fit data.max_length={max_length}; raise "
                          f"data.max_length")
    g = Group(list(prompt_ids[:P]), comps, masks, list(labels), where, truncated, tools=tools)
    g.source = (prompt, completions)
    return g, None
