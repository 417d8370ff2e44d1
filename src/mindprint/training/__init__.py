"""Training: the one loop (:mod:`.loop`) composed with a backend's stepper.

``run_training(cfg)`` is what the CLI, the curriculum and the tests call: it builds the method
(:func:`mindprint.methods.get_method`) and the loop with the stepper of ``cfg.backend``
(:data:`.loop.STEPPERS`, imported on use).
"""

from __future__ import annotations

from pathlib import Path

from .. import registry
from ..config import Config
from ..methods import get_method
from .loop import Interrupted, Trainer
from .stepper import STEPPERS, Stepper, stepper_class


def run_training(cfg: Config, *, resume: bool = False, overwrite: bool = False, log=print,
                 callbacks: list | None = None, init_adapter: Path | None = None) -> dict:
    registry.check_backend(cfg.method, cfg.backend)
    trainer = Trainer(cfg, get_method(cfg), resume=resume, overwrite=overwrite, log=log,
                      callbacks=callbacks, init_adapter=init_adapter)
    trainer.setup()
    summary = trainer.train()
    trainer.dist.barrier()     # rank 0 has written summary.json
    return summary


__all__ = ["Interrupted", "STEPPERS", "Stepper", "Trainer", "run_training", "stepper_class"]
