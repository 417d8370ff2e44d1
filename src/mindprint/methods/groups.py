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

from dataclasses import dataclass

import numpy as np

from ..backends.common import padded_share
from ..data.groups import MIN_ROOM, Group, render_group  # noqa: F401  (re-exported for the methods)
from ..errors import DataError
from .common import load, split_off_eval  # noqa: F401  (re-exported for the methods)


@dataclass
class GroupData:
    train: list[Group]
    eval: list[Group]
    notes: list[str]

    @property
    def train_lengths(self) -> list[int]:
        return [g.packed_length for g in self.train]


# -- rendering (Group and render_group live in mindprint.data.groups: data stats uses them) ------


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
