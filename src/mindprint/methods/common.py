"""Data loading every method shares: records of data.train / data.eval in the formats the method
trains on, with the eval split carved out of train when data.eval is empty. An mlx-lm data
folder in data.train stands for its train.jsonl, and its valid.jsonl is the eval set when
data.eval is empty."""

from __future__ import annotations

import random

from ..data.jsonl import accepts, load_many
from ..data.sources import data_folder
from ..errors import DataError


def load(cfg, paths, what: str, expect: tuple[str, ...]):
    """Records of ``paths`` (one of ``expect`` formats) and notes about skipped lines."""
    fmt = None if cfg.data.format == "auto" else cfg.data.format
    if fmt is not None and not accepts(fmt, expect):
        raise DataError(f"data.format is '{fmt}' but method '{cfg.method}' needs "
                        f"{' or '.join(expect)} data")
    res = load_many(paths, fmt, system_prompt=cfg.data.system_prompt,
                    max_error_rate=cfg.data.max_error_rate, expect=expect,
                    columns=cfg.data.columns or None)
    notes = []
    if res.problems:
        notes.append(f"{what}: skipped {len(res.problems)} bad line(s) (data.max_error_rate="
                     f"{cfg.data.max_error_rate}); first: {res.problems[0]}")
    notes += [f"{what}: {w}" for w in res.warnings + res.hints]
    return res.records, res.format, notes


def split_off_eval(records: list, fraction: float, seed: int) -> tuple[list, list]:
    """A seeded ``fraction`` (at least one record) held out of ``records``: (train, eval)."""
    idx = list(range(len(records)))
    random.Random(seed).shuffle(idx)
    held = set(idx[:max(1, int(round(len(records) * fraction)))])
    return ([r for i, r in enumerate(records) if i not in held],
            [r for i, r in enumerate(records) if i in held])


def load_splits(cfg, expect: tuple[str, ...]) -> tuple[list, list, list[str]]:
    """(train records, eval records, notes): data.eval when given, else data.eval_split of train."""
    folders = [data_folder(p) for p in cfg.data.train]
    train, _, notes = load(cfg, [f for t, _ in folders for f in t], "data.train", expect)
    ev: list = []
    eval_paths = cfg.data.eval or [f for _, e in folders for f in e]
    if eval_paths:
        ev, _, more = load(cfg, eval_paths, "data.eval", expect)
        notes += more
    elif cfg.data.eval_split > 0:
        train, ev = split_off_eval(train, cfg.data.eval_split, cfg.train.seed)
    return train, ev, notes
