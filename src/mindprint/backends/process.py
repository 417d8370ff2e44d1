"""Process-wide tuning for a run, as one explicit call at start-up, whatever the backend.

:func:`configure_process` dispatches on the backend name to that backend's own call (imported on
use, so an mlx run never imports torch nor a torch run mlx): torch tunes glibc's malloc for CPU
runs (:mod:`.torch.process`); mlx loads an optimised BLAS ahead of ``mlx.core``
(:func:`.mlx.fast_blas`). Entry points call it (``mindprint.train``, ``mindprint.load``,
``mindprint.evaluate``, the CLI commands that run a model); constructing a model or a backend
never does. Safe to call more than once.
"""

from __future__ import annotations

import importlib

PROCESS = {
    "torch": "mindprint.backends.torch.process:configure_process",
    "mlx": "mindprint.backends.mlx:configure_process",
}


def configure_process(cfg=None, *, backend: str | None = None, device: str | None = None) -> dict:
    """Apply the process settings a run on ``cfg`` (a :class:`~mindprint.config.Config`) wants,
    or those of ``backend`` (default "torch") on ``device``; returns what was set."""
    name = cfg.backend if cfg is not None else (backend or "torch")
    module, func = PROCESS[name].split(":")
    return getattr(importlib.import_module(module), func)(cfg, device=device)
