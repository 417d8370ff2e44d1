"""The backend contract every training/eval path is written against.

A backend owns the model (base weights + adapter), turns token batches into per-token log-probs,
generates text, and saves/loads adapters. Methods and the training loop stay backend-agnostic
except for the optimizer step, which each backend's loop performs.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol


class Backend(Protocol):
    name: str
    tokenizer: Any

    def token_logps(self, input_ids: list[list[int]], loss_mask: list[list[int]]) -> Any:
        """Log-prob of every target token (``[B, T]``, zero where the mask is 0)."""

    def disabled_adapter(self) -> AbstractContextManager:
        """Context in which the model is the base model (the reference for DPO/KL)."""

    def generate(self, prompts: list[list[dict]], *, max_new_tokens: int, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int = 0) -> list[str]:
        """Answer each chat prompt (messages ending in a user turn)."""

    def save_adapter(self, path: Path, meta: dict) -> None:
        """Write the adapter atomically: nothing half-written is ever visible at ``path``."""
