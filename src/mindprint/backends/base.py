"""The backend contract every method is written against.

A backend owns the model (base weights + adapter) and everything framework-specific: batching
token ids into arrays, log-probs (per token, per completion group, per sampled completion), the
KL to the adapter-free base, sampling and generation, precision and gradient contexts, adapter
I/O and the distributed world. Methods see only :class:`Backend` and ``backend.xp`` (the array
namespace of :mod:`mindprint.losses.xp`); they never import torch or mlx. Both
:class:`~mindprint.backends.torch.backend.TorchBackend` and
:class:`~mindprint.backends.mlx.model.MLXBackend` implement every member (tests/core/
test_backend_contract.py checks names and signatures).

Array shapes: ``B`` rows, ``T`` positions; ``R`` prompt groups of at most ``K`` completions; ``N``
sampled completions of at most ``L`` tokens. Log-probs are float32, 0 wherever nothing is scored.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

Array = Any          # a torch.Tensor or an mx.array: whatever ``backend.xp`` computes with
Groups = list[tuple[list[int], list[tuple[list[int], list[int]]]]]
"""``[(prompt ids, [(completion ids, completion loss mask), ...]), ...]``"""


@runtime_checkable
class Dist(Protocol):
    """The processes a run spans. A single process is a world of one
    (:class:`~mindprint.backends.common.LocalDist`); torchrun gives
    :class:`~mindprint.backends.torch.dist.DistContext`. Collectives are called by every rank in
    the same order."""

    world_size: int
    rank: int
    fsdp: bool

    @property
    def is_main(self) -> bool: ...

    def barrier(self) -> None: ...

    def sum_floats(self, values: list[float]) -> list[float]: ...

    def any_flags(self, *flags: bool) -> list[bool]: ...

    def gather(self, obj) -> list: ...

    def broadcast(self, obj): ...

    def sum_dicts(self, d: dict) -> dict: ...

    def share(self, items: list) -> list: ...


@runtime_checkable
class Backend(Protocol):
    name: str                 # "torch" | "mlx"
    tokenizer: Any            # the Hugging Face tokenizer (chat template, pad id)
    model: Any                # the adapted model (framework object; methods do not touch it)
    xp: Any                   # the array namespace the methods and losses compute with
    device: Any               # ``.type``: part of the reference cache key (numerics differ)
    dist: Dist                # the process world (a world of one outside torchrun)
    group_layout: str         # how group_logps packs: "shared_prompt" or "rows"

    # -- arrays and log-probs ------------------------------------------------------------------
    def batch(self, seqs: list[list[int]], masks: list[list[int]], *,
              pack_to: int | None = None) -> dict:
        """Right-padded arrays of ``seqs``; ``batch["loss_mask"]`` ``[B, T]`` is ``masks``. With
        ``pack_to`` and :meth:`can_pack`, the examples share rows of at most ``pack_to`` tokens
        where that saves positions (``data.packing``, :func:`~mindprint.data.packing.plan_rows`:
        block-diagonal causal attention, positions restarting per example); the log-probs of
        such a batch still come back ``[B, T]``, one row per example."""

    def can_pack(self) -> bool:
        """Whether ``batch(..., pack_to=n)`` packs rows and gives the padded rows' log-probs on
        this model (decided once); where it does not, ``pack_to`` is ignored."""

    def token_logps(self, batch: dict) -> Array:
        """``[B, T]`` log p(token_t | tokens_<t) where the loss mask is 1, else 0 (position 0
        is 0)."""

    def token_logps_and_kl(self, batch: dict, tau: float) -> tuple[Array, Array]:
        """``(log-probs, τ²·KL(base ‖ tuned))``, each ``[B, T]``, 0 where the loss mask is 0;
        the base is this model with its adapter off (no gradient through it)."""

    def group_logps(self, groups: Groups) -> tuple[Array, Array]:
        """``(sums, counts)``, each ``[R, K]``: summed log-probs and scored-token counts of each
        group's completions given its prompt (0 for missing completions)."""

    def completion_logps(self, prompts: list[list[int]], completions: list[list[int]],
                         temperature: float = 1.0, *, entropy: bool = False
                         ) -> tuple[Array, Array, float | None]:
        """``(log-probs, mask, entropy sum or None)`` of every completion token given its prompt,
        under softmax(logits / temperature). ``mask`` has the shape of the log-probs and is 1
        exactly at the completion tokens: read row-major, they are completion 0's tokens in
        order, then completion 1's, ... The entropy (summed over those tokens) has no gradient."""

    # -- sampling ------------------------------------------------------------------------------
    def sample_completions(self, prompts: list[list[int]], *, n: int, max_new_tokens: int,
                           temperature: float, top_p: float, seed: int,
                           sampler_dtype: str = "auto") -> list[tuple[list[int], bool]]:
        """``n`` completions per prompt, prompt after prompt: ``(ids up to and including the
        first end-of-turn token, finished)``; seeded without touching the global random stream;
        ``temperature = 0`` decodes greedily."""

    def generate(self, prompts: list[list[dict]], *, max_new_tokens: int = 200,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
                 stats: dict | None = None) -> list[str]:
        """Answer each chat prompt (messages ending in a user turn); ``stats["new_tokens"]``
        receives the tokens generated per prompt."""

    # -- contexts ------------------------------------------------------------------------------
    def disabled_adapter(self) -> AbstractContextManager:
        """Context in which the model is the base model (the reference for DPO/KTO/KL)."""

    def inference(self) -> AbstractContextManager:
        """Eval mode (no dropout) and no gradient; the training mode is restored after."""

    def no_grad(self) -> AbstractContextManager:
        """No gradient is recorded inside (a no-op where gradients are explicit, as on mlx)."""

    def autocast(self) -> AbstractContextManager:
        """The training passes' precision (``train.mixed_precision``), or nothing."""

    # -- weights -------------------------------------------------------------------------------
    def weights_hash(self) -> str:
        """sha256 of the adapter-free weights (the reference log-prob cache key)."""

    def save_adapter(self, path: Path, meta: dict) -> None:
        """Write the adapter atomically: nothing half-written is ever visible at ``path``."""

    def load_adapter(self, path: Path) -> None:
        """Copy a saved adapter's weights into this model's LoRA layers (same layout)."""
