"""The contract between the one training loop and a backend: :class:`Stepper`, and where each
backend's stepper lives (:data:`STEPPERS`, imported on use: an mlx run never imports torch, nor a
torch run mlx)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Protocol

STEPPERS = {
    "torch": "mindprint.backends.torch.train:TorchStepper",
    "mlx": "mindprint.backends.mlx.train:MLXStepper",
}


def stepper_class(backend: str) -> type:
    module, cls = STEPPERS[backend].split(":")
    return getattr(importlib.import_module(module), cls)


class Stepper(Protocol):
    """What a backend gives the loop (torch: ``backends.torch.train.TorchStepper``, mlx:
    ``backends.mlx.train.MLXStepper``). Built as ``Stepper(cfg, method, dist, log)`` after
    ``Stepper.world(cfg)`` gave the process world."""

    name: str        # "torch" | "mlx": the summary's backend
    dist: Any        # the process world (backends.base.Dist); LocalDist in one process
    device: Any      # where it trains (after load)
    model: Any       # the adapted model (after attach), for the voice probe and benchmarks

    def load(self, model_ref) -> Any:
        """Load the base model; return its tokenizer."""

    def attach(self, init_adapter: Path | None) -> Any:
        """Add LoRA adapters (with ``init_adapter``'s weights when given), build the optimizer;
        return the method's Backend."""

    def voice_probe(self, tokenizer, make: Callable[[Any, Any], Any]) -> Any:
        """``eval.every``'s voice probe, built by ``make(cfg, tokenizer)`` (the caller's, e.g.
        :class:`mindprint.evaluate.probe.VoiceProbe`: ``.due(step)``, ``probe(model) -> dict``),
        or None where this backend cannot run it (with a warning)."""

    def seed(self, seed: int) -> None:
        """Seed the framework's random streams (python's and numpy's are the loop's)."""

    def begin_step(self, step: int) -> None:
        """Before each step's rollout (mlx reseeds its global key from (seed, step) there)."""

    def step(self, groups: list, norm, check: Callable[[str, float], None]) -> dict:
        """One optimizer step over the micro-batches ``groups`` of this rank, each loss divided by
        ``norm`` (the step's normaliser summed over ranks); ``check(what, value)`` raises on a
        non-finite loss or gradient norm before the update. Returns ``loss``, ``lr``,
        ``grad_norm``, ``tokens`` and the method's metric ``sums``, all summed over ranks."""

    def save(self, path: Path, state: dict) -> None:
        """Write checkpoint ``path`` atomically (weights, optimizer, RNG, ``state`` as
        state.json); a collective: every rank calls it, rank 0 writes."""

    def load_checkpoint(self, path: Path) -> dict:
        """Restore weights, optimizer and RNG from checkpoint ``path``; return its state.json."""

    def save_adapter(self, path: Path, meta: dict, run_root: Path) -> dict:
        """Write the final adapter; return extra summary entries."""

    def peak_memory_mb(self) -> float: ...
