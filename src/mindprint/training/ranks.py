"""The distributed world as the loop sees it: the step normaliser summed over ranks, and what
ranks other than 0 get (no log, a run directory they read but never write). In one process the
world has one rank and these are identities."""

from __future__ import annotations

import dataclasses

from ..outputs import RunDir


def sum_over_ranks(d, norm):
    """A step normaliser (a number or a dataclass of numbers) summed over ranks; itself in one
    process (no float round trip)."""
    if d.world_size == 1:
        return norm
    if dataclasses.is_dataclass(norm):
        names = [f.name for f in dataclasses.fields(norm)]
        return type(norm)(**dict(zip(names, d.sum_floats([float(getattr(norm, n)) for n in names]))))
    return type(norm)(d.sum_floats([float(norm)])[0])


def quiet(*args, **kwargs) -> None:
    """The log of ranks other than 0."""


class ReadOnlyRunDir(RunDir):
    """The run directory as ranks other than 0 see it: readable, never written."""

    def clear(self) -> None: ...
    def append_metrics(self, row: dict) -> None: ...
    def truncate_metrics(self, after_step: int) -> None: ...
    def write_metrics_csv(self) -> None: ...
    def write_json(self, name: str, data: dict) -> None: ...
    def prune_checkpoints(self, keep_last: int, best_step: int | None) -> None: ...
