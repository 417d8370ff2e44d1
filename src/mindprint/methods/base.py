"""The contract between the training loop and a method: :class:`Method`.

A method turns records into examples and a micro-batch into a loss; the loop
(:mod:`mindprint.training.loop`) calls exactly these members, in this order: ``prepare`` once,
``on_setup`` once the backend exists (reference passes), then per step ``rollout`` (sampling
before the micro-batches: GRPO), ``weight`` of each micro-batch (the accumulation normaliser),
``micro_loss`` (through the stepper), ``step_metrics``; at each evaluation ``n_tokens``,
``eval_sums`` and ``eval_metrics``.

The two hooks most methods do not need have defaults here (``on_setup`` does nothing, ``rollout``
returns the micro-batches as they are): a method class subclasses :class:`Method` to take them,
so the loop calls every member unconditionally instead of probing for it. Methods compute through
the :class:`~mindprint.backends.base.Backend` Protocol and its ``xp`` only.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol


class Method(Protocol):
    """What the training loop needs from a method (``methods.sft.SFTMethod`` is the smallest)."""

    def prepare(self, tokenizer) -> Any:
        """Read and render the data: an object with ``train``, ``eval`` (lists of examples),
        ``train_lengths`` (tokens per train example, for length-grouped batches) and ``notes``
        (warnings for the user)."""

    def on_setup(self, backend, data, log: Callable[[str], None]) -> None:
        """Once the adapters and the backend exist, before the first step (e.g. reference
        log-probs with the adapter off). Default: nothing."""
        return None

    def rollout(self, backend, groups: list[list], step: int) -> list[list]:
        """Before each step: turn this rank's micro-batches of examples into what
        ``micro_loss`` trains on (GRPO samples completions and scores them here). Default: the
        micro-batches unchanged."""
        return groups

    def n_tokens(self, example) -> int:
        """An example's length in tokens (eval batching)."""

    def weight(self, group: list):
        """A micro-batch's share of the step's normaliser (a number, or a dataclass of numbers
        with ``+``), summed over the step's micro-batches and ranks."""

    def micro_loss(self, backend, group: list, norm):
        """The loss of one micro-batch divided by ``norm``, and its metric sums."""

    def step_metrics(self, sums: dict) -> dict:
        """The step's metrics from the summed metric sums."""

    def eval_sums(self, backend, group: list) -> dict:
        """Metric sums of one eval batch (no gradient)."""

    def eval_metrics(self, sums: dict) -> dict:
        """Eval metrics (``eval_loss`` at least) from the summed eval sums."""
