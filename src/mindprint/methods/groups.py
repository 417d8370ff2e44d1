"""Prompt groups: the data shape every preference method trains on.

A *group* is one prompt with several completions: a preference pair is a group of two (chosen,
rejected); KTO groups a prompt's labelled completions. Each completion is rendered through the
chat template after the prompt; only its assistant tokens are scored. The backend packs a group
into one row (prompt computed once, see ``TorchBackend.group_logps``).

Truncation keeps the prompt whole — its end, the generation prompt, is what the completion
continues — and cuts completions at their end to fit ``data.max_length`` (as TRL's default
``keep_start``). A prompt that leaves too little room for its completions, or a pair whose two
completions become identical once cut, is a ``file:line`` problem, counted against
``data.max_error_rate`` like a bad JSON line.

Reference log-probs (DPO, IPO, KTO) are computed here with the adapter disabled, once per split,
and cached through :mod:`mindprint.reference`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..backends.common import padded_share
from ..data.render import render_messages, render_prompt
from ..errors import DataError
from .common import load, split_off_eval  # noqa: F401  (re-exported for the methods)

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


@dataclass
class GroupData:
    train: list[Group]
    eval: list[Group]
    notes: list[str]

    @property
    def train_lengths(self) -> list[int]:
        return [g.packed_length for g in self.train]


# -- rendering ---------------------------------------------------------------------------------


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


def _note_truncation(groups: list[Group], what: str, max_length: int) -> list[str]:
    n = sum(g.truncated for g in groups)
    if not n:
        return []
    return [f"{what}: {n} of {len(groups)} prompts had completions longer than data.max_length="
            f"{max_length} allows; they were cut at the end"]


def render_groups(tokenizer, items, max_length: int, max_error_rate: float, what: str
                  ) -> tuple[list[Group], list[str]]:
    """Render ``items`` = [(prompt, completions, labels, where, tools)]; refuse or note
    problems."""
    groups, problems = [], []
    for prompt, completions, labels, where, tools in items:
        g, problem = render_group(tokenizer, prompt, completions, labels, max_length, where,
                                  tools=tools)
        if problem:
            problems.append(problem)
        else:
            groups.append(g)
    notes = _note_truncation(groups, what, max_length)
    if problems:
        if not groups or len(problems) / len(items) > max_error_rate:
            raise DataError(f"{what}: {len(problems)} of {len(items)} records do not fit "
                            f"data.max_length={max_length}", problems)
        notes.append(f"{what}: skipped {len(problems)} record(s) (data.max_error_rate="
                     f"{max_error_rate}); first: {problems[0]}")
    return groups, notes


# -- loading -----------------------------------------------------------------------------------


def pair_items(records) -> list:
    return [(r.prompt, [r.chosen, r.rejected], [True, False], r.where, r.tools) for r in records]


# -- reference log-probs -----------------------------------------------------------------------


def _batches(groups: list[Group], size: int):
    order = sorted(range(len(groups)), key=lambda i: groups[i].packed_length)
    for s in range(0, len(order), size):
        yield order[s:s + size]


def reference_logps(backend, groups: list[Group], batch_size: int) -> np.ndarray:
    """``[N, K]`` float64 summed log-probs of every completion under the adapter-free model (eval
    mode). Under torchrun each rank scores its share, then all ranks share all (a world of one
    scores everything)."""
    K = max(len(g.completions) for g in groups)
    out = np.zeros((len(groups), K), dtype=np.float64)
    d = backend.dist
    mine, extra = padded_share(d, list(_batches(groups, batch_size)))
    with backend.no_grad():
        done = [(idx, _host64(backend, live_reference(backend, [groups[i] for i in idx])))
                for idx in mine]
        for idx in extra:     # FSDP: as many passes on every rank
            live_reference(backend, [groups[i] for i in idx])
    for part in d.gather(done):
        for idx, sums in part:
            out[idx, :sums.shape[1]] = sums
    return out


def live_reference(backend, groups: list[Group]):
    """Reference log-prob sums ``[B, K]`` for one batch: adapter off, dropout off, no gradient."""
    with backend.inference(), backend.disabled_adapter():
        sums, _ = backend.group_logps([g.packed() for g in groups])
    return backend.xp.stop_gradient(sums)


def _host64(backend, x) -> np.ndarray:
    """A float64 host copy of a backend array (the cache stores float64)."""
    return np.asarray(backend.xp.to_numpy(x), dtype=np.float64)


def attach_reference(backend, cfg, groups: list[Group], what: str, log, *, weights: str) -> None:
    """Give every group its cached reference sums (``group.ref``), computing them once."""
    if not groups:
        return
    from .. import reference

    parts = {"weights": weights, "max_length": cfg.data.max_length,
             "device": backend.device.type, "layout": backend.group_layout,
             "data": reference.data_hash([[g.prompt, g.completions, g.masks] for g in groups])}
    size = max(cfg.train.eval_batch_size or cfg.train.batch_size, 1)
    d = backend.dist
    table = reference.cached(parts, lambda: reference_logps(backend, groups, size),
                             what=f"reference log-probs for {what} ({len(groups)} prompts)", log=log,
                             dist=d if d.world_size > 1 else None)
    for g, row in zip(groups, table):
        g.ref = np.asarray(row[:len(g.completions)], dtype=np.float32)


def stacked_ref(groups: list[Group], xp, like):
    """The groups' reference sums ``[N, K]`` (0 for missing completions), an array of ``xp``
    on ``like``'s device."""
    K = max(len(g.completions) for g in groups)
    out = np.zeros((len(groups), K), dtype=np.float32)
    for i, g in enumerate(groups):
        out[i, :len(g.ref)] = g.ref
    return xp.asarray(out, like=like)


@dataclass
class Norm:
    """What a micro-batch contributes to its step's normaliser: items (pairs or KTO completions)
    and chosen target tokens (ORPO's token-weighted NLL). Summable, as the loop sums weights."""

    items: float = 0.0
    tokens: float = 0.0

    def __add__(self, other):
        if isinstance(other, (int, float)) and other == 0:
            return self
        return Norm(self.items + other.items, self.tokens + other.tokens)

    __radd__ = __add__
