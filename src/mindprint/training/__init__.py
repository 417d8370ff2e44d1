"""Training: the one loop (:mod:`.loop`) composed with a backend's stepper.

``run_training(cfg)`` is what the CLI, the curriculum and the tests call: it builds the method
(:func:`mindprint.methods.get_method`) and the loop with the stepper of ``cfg.backend``
(:data:`.loop.STEPPERS`, imported on use).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .. import registry
from ..config import Config
from ..methods import get_method
from .callbacks import default_callbacks
from .loop import Interrupted, Trainer
from .stepper import STEPPERS, Stepper, stepper_class


def run_training(cfg: Config, *, resume: bool = False, overwrite: bool = False, log=print,
                 callbacks: list | None = None, init_adapter: Path | None = None,
                 voice_probe: Callable | None = None) -> dict:
    """Train ``cfg`` and return the summary. ``voice_probe(cfg, tokenizer)`` builds
    ``eval.every``'s probe (the apps pass :class:`mindprint.evaluate.probe.VoiceProbe`; the
    training layer cannot import it); without it ``eval.every`` is skipped with a warning."""
    registry.check_backend(cfg.method, cfg.backend)
    trainer = Trainer(cfg, get_method(cfg), resume=resume, overwrite=overwrite, log=log,
                      callbacks=callbacks, init_adapter=init_adapter, voice_probe=voice_probe)
    trainer.setup()
    summary = trainer.train()
    trainer.dist.barrier()     # rank 0 has written summary.json
    return summary


__all__ = ["Interrupted", "STEPPERS", "Stepper", "Trainer", "default_callbacks", "run_training",
           "stepper_class"]
