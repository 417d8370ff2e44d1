"""The torch implementation of :class:`~mindprint.backends.base.Backend` (transformers + PEFT).

Constructing a :class:`TorchBackend` changes nothing outside it: process tuning is
:func:`~.process.configure_process`, routing linears through oneDNN is model setup
(:func:`~.lora.add_lora`). Every pass goes through :meth:`TorchBackend.forward`, so under torchrun
the DDP/FSDP-wrapped runner (see dist.py) sees it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from ...data.packing import plan_rows
from ...losses import xp as xpmod
from ...reference import weights_hash as hash_weights
from ..common import LOCAL
from .adapters import load_adapter_weights, save_adapter
from .generate import generate, sample_completions
from .logps import completion_logps, decoder_and_head, to_batch, token_logps, token_logps_and_kl
from .packing import (group_batch, group_kind, group_logps, group_logps_by_rows,
                      packed_completion_logps, shared_prompt_works)
from .sampling import sampler_dtype as sampler_dtype_of
from .sft_packing import (packed_batch, packed_token_logps, packed_token_logps_and_kl,
                          packing_kind, packing_works)


class TorchBackend:
    """The model + tokenizer pair a method works through (see :class:`~..base.Backend`)."""

    name = "torch"

    def __init__(self, model, tokenizer, *, runner=None, dist=None, weights_hash: str | None = None):
        self.model, self.tokenizer = model, tokenizer
        # torchrun: every pass goes through the DDP/FSDP-wrapped runner (see dist.py)
        self.runner, self.dist, self._weights_hash = runner, dist or LOCAL, weights_hash
        self.device = next(model.parameters()).device
        self.xp = xpmod.get("torch")
        self._group_layout: str | None = None
        self._packed_completions: bool | None = None
        self._can_pack: bool | None = None
        self.amp_dtype: torch.dtype | None = None     # train.mixed_precision (set by the trainer)

    # -- contexts ------------------------------------------------------------------------------
    def autocast(self):
        """The training passes' precision context: bf16 autocast under ``train.mixed_precision``,
        else nothing."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def no_grad(self):
        return torch.no_grad()

    @contextlib.contextmanager
    def inference(self):
        """Eval mode and no gradient, the training mode restored after."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.model.train(was_training)

    def disabled_adapter(self):
        """The base model, for reference passes: the same weights, adapters switched off."""
        return self.model.disable_adapter()

    def forward(self, fn, *args, **kwargs):
        """``fn(model, *args, **kwargs)``, through DDP / FSDP when the run is distributed."""
        if self.runner is None:
            return fn(self.model, *args, **kwargs)
        return self.runner(fn, *args, **kwargs)

    # -- log-probs -----------------------------------------------------------------------------
    def batch(self, seqs: list[list[int]], masks: list[list[int]], *,
              pack_to: int | None = None) -> dict:
        """Padded rows, or packed ones (:func:`~.sft_packing.packed_batch`) with ``pack_to``
        where :meth:`can_pack` and packing saves positions (:func:`~mindprint.data.packing.
        plan_rows`); a packed batch carries ``packed_rows``."""
        rows = plan_rows([len(s) for s in seqs], pack_to) if pack_to and self.can_pack() else None
        if rows is not None:
            return packed_batch(seqs, masks, rows, self.tokenizer.pad_token_id, self.device,
                                packing_kind(self.model))
        return to_batch(seqs, masks, self.tokenizer.pad_token_id, self.device)

    def can_pack(self) -> bool:
        """Packed SFT rows give the padded rows' log-probs on this model (checked once, in
        float32 outside any autocast)."""
        if self._can_pack is None:
            with torch.autocast(self.device.type, enabled=False):
                self._can_pack = self.forward(packing_works, self.tokenizer.pad_token_id,
                                              self.device)
        return self._can_pack

    def token_logps(self, batch: dict) -> torch.Tensor:
        if "packed_rows" in batch:
            return self.forward(packed_token_logps, batch)
        return self.forward(token_logps, batch["input_ids"], batch["attention_mask"],
                            batch["loss_mask"])

    def token_logps_and_kl(self, batch: dict, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Target log-probs and τ²·KL(base ‖ tuned) per position (see :func:`token_logps_and_kl`)."""
        if "packed_rows" in batch:
            return self.forward(packed_token_logps_and_kl, batch, tau)
        return self.forward(token_logps_and_kl, batch["input_ids"], batch["attention_mask"],
                            batch["loss_mask"], tau)

    @property
    def group_layout(self) -> str:
        """"shared_prompt" (one row per group) or "rows" (one row per completion), decided once."""
        if self._group_layout is None:
            # the check compares float32 results: outside any autocast it may be called from
            with torch.autocast(self.device.type, enabled=False):
                ok = self.forward(shared_prompt_works, self.tokenizer.pad_token_id, self.device)
            self._group_layout = "shared_prompt" if ok else "rows"
        return self._group_layout

    def group_logps(self, groups) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed log-probs and token counts ``[R, K]`` of each group's completions given its prompt.

        ``groups`` = [(prompt_ids, [(completion_ids, completion_mask), ...]), ...]; only tokens whose
        mask is 1 count. One forward pass either way.
        """
        if self.group_layout == "shared_prompt":
            kind = group_kind(self.model)
            return self.forward(group_logps, group_batch(groups, self.tokenizer.pad_token_id,
                                                         self.device, kind))
        return self.forward(group_logps_by_rows, groups, self.tokenizer.pad_token_id, self.device)

    def completion_logps(self, prompts: list[list[int]], completions: list[list[int]],
                         temperature: float = 1.0, *, entropy: bool = False):
        """GRPO's completion log-probs (see :class:`~..base.Backend`): prompt-shared packed rows
        ``[N, L]`` where the model honours them (checked once), else one row per completion
        ``[N, T]`` over prompt and completion."""
        if self._packed_completions is None:
            self._packed_completions = (self.group_layout == "shared_prompt"
                                        and decoder_and_head(self.model)[0] is not None)
        if self._packed_completions:
            return self.forward(packed_completion_logps, prompts, completions,
                                self.tokenizer.pad_token_id, temperature, entropy=entropy)
        batch = self.batch([list(p) + list(c) for p, c in zip(prompts, completions)],
                           [[0] * len(p) + [1] * len(c) for p, c in zip(prompts, completions)])
        lp, ent = self.forward(completion_logps, batch, temperature, entropy=entropy)
        return lp, batch["loss_mask"], ent

    # -- sampling ------------------------------------------------------------------------------
    def sample_completions(self, prompts: list[list[int]], *, n: int, max_new_tokens: int,
                           temperature: float, top_p: float, seed: int,
                           sampler_dtype: str = "auto") -> list[tuple[list[int], bool]]:
        """``n`` completions per prompt (:func:`~.generate.sample_completions`); under FSDP every
        rank keeps stepping until all are done."""
        kw = {"synced": True} if self.dist.fsdp else {}
        return self.forward(sample_completions, self.tokenizer, prompts, n=n,
                            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                            seed=seed, dtype=sampler_dtype_of(sampler_dtype, self.model), **kw)

    def generate(self, prompts: list[list[dict]], *, max_new_tokens: int = 200,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
                 stats: dict | None = None) -> list[str]:
        return generate(self.model, self.tokenizer, prompts, max_new_tokens=max_new_tokens,
                        temperature=temperature, top_p=top_p, seed=seed, stats=stats)

    # -- weights -------------------------------------------------------------------------------
    def weights_hash(self) -> str:
        """sha256 of the adapter-free weights (the reference log-prob cache key)."""
        if self._weights_hash is None:
            self._weights_hash = hash_weights(self.model)
        return self._weights_hash

    def save_adapter(self, path: Path, meta: dict) -> None:
        save_adapter(self.model, path, meta)

    def load_adapter(self, path: Path) -> None:
        load_adapter_weights(self.model, path)
