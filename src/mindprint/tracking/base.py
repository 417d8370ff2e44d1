"""The hooks a training loop calls, and the list that calls them safely.

A callback has four hooks, all optional:

    on_start(info)          after setup, before the first step (``info``: :class:`RunInfo`)
    on_log(row)             a training row, exactly as appended to metrics.jsonl
    on_eval(row)            an eval row, exactly as appended to metrics.jsonl
    on_end(summary, status) once: status is completed | interrupted | failed

Backends call them through :class:`CallbackList`, which never lets a callback break a training:
an exception in a hook is reported once as a warning and that callback is dropped for the rest of
the run. Nothing here imports a backend, so the torch and MLX loops share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

STATUSES = ("completed", "interrupted", "failed")


@dataclass
class RunInfo:
    """What a backend knows once it is set up; everything a manifest or tracker needs."""

    config: Any                          # mindprint.config.Config
    run_dir: Path
    backend: str                         # torch | mlx
    device: str                          # cpu, cuda:0, mps, gpu ...
    model_spec: str                      # what the user wrote (alias, dir, .gguf, hub id)
    model_kind: str                      # alias | gguf | local | hub
    model_path: str                      # the directory (or hub id) the weights were loaded from
    train: Sequence = ()                 # prepared (tokenized) training examples
    eval: Sequence = ()                  # prepared eval examples
    resumed: bool = False
    step: int = 0                        # first step this session runs (> 0 when resumed)
    log: Callable[[str], None] = print
    extra: dict = field(default_factory=dict)


class Callback(Protocol):
    def on_start(self, info: RunInfo) -> None: ...
    def on_log(self, row: dict) -> None: ...
    def on_eval(self, row: dict) -> None: ...
    def on_end(self, summary: dict, status: str) -> None: ...


def _name(cb) -> str:
    return getattr(cb, "name", type(cb).__name__)


class CallbackList:
    """Calls every callback's hook in order (``on_end`` in reverse, like nested ``with`` blocks,
    so the manifest, first in, is the last to close and sees what the trackers recorded)."""

    def __init__(self, callbacks: Sequence | None = None, log: Callable[[str], None] = print):
        self.callbacks = list(callbacks or [])
        self.log = log
        self._ended = False

    def _call(self, hook: str, *args, reverse: bool = False) -> None:
        for cb in list(reversed(self.callbacks) if reverse else self.callbacks):
            fn = getattr(cb, hook, None)
            if fn is None:
                continue
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 - a tracker must never stop a training
                self.log(f"warning: {_name(cb)}: {hook} failed ({type(e).__name__}: {e}); "
                         f"{_name(cb)} is off for the rest of this run")
                self.callbacks.remove(cb)

    def on_start(self, info: RunInfo) -> None:
        self.log = info.log
        self._call("on_start", info)

    def on_log(self, row: dict) -> None:
        self._call("on_log", row)

    def on_eval(self, row: dict) -> None:
        self._call("on_eval", row)

    def on_end(self, summary: dict, status: str) -> None:
        if self._ended:
            return
        self._ended = True
        self._call("on_end", summary, status, reverse=True)

    def fail(self, error: BaseException, step: int) -> None:
        """The loop died: close every callback with what is known."""
        status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        message = str(error) or type(error).__name__
        self.on_end({"steps": step, "stopped": status, "error": message}, status)


def numeric(row: dict) -> dict[str, float]:
    """The finite-or-not numbers of a metrics row, without its step (trackers log these)."""
    out = {}
    for k, v in row.items():
        if k == "step" or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        out[k] = float(v)
    return out


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-4}}`` → ``{"train.lr": 1e-4}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
