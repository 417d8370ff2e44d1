"""SFT glue: chat records → rendered examples → token-weighted NLL.

A method object gives the training loop four things: the examples and their lengths, the
normaliser of an accumulation cycle (here: target tokens), the loss of a micro-batch, and the
eval metrics. The loop stays method-agnostic.

Packing (``data.packing``, :mod:`mindprint.data.packing`): the sampler still chooses the examples
of every micro-batch and step; packing only lays a micro-batch's examples out several to a row of
at most ``data.max_length`` tokens (``backend.batch(..., pack_to=...)``), and the backend returns
their log-probs one row per example, so the loss, the normaliser and the update are those of the
unpacked batch. The backend packs a micro-batch only where that saves a tenth of its array
positions (:func:`~mindprint.data.packing.plan_rows`). "auto" packs where the backend reproduces
the padded log-probs on this model (``backend.can_pack``: torch with SDPA or eager attention and a
plain LM head; mlx-lm bodies of the usual shape) and says so at setup, with the first epoch's
padding share without and with packing; ``true`` is an error where the backend cannot pack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..data.batching import epoch_step_groups
from ..data.packing import packing_stats
from ..data.render import Rendered, render_chat_records
from ..errors import ConfigError, DataError
from ..losses.sft import sft_loss
from .base import Method
from .common import load_splits

SFT_FORMATS = ("chat", "alpaca", "text")  # and every format of their record types


@dataclass
class PreparedData:
    train: list[Rendered]
    eval: list[Rendered]
    notes: list[str]            # warnings to show the user (truncation, skipped lines)

    @property
    def train_lengths(self) -> list[int]:
        return [len(r.input_ids) for r in self.train]


class SFTMethod(Method):
    name = "sft"

    def __init__(self, cfg):
        self.cfg = cfg
        self.pack_to: int | None = None     # rows of this many tokens once on_setup packs

    def prepare(self, tokenizer) -> PreparedData:
        cfg = self.cfg
        train_recs, eval_recs, notes = load_splits(cfg, SFT_FORMATS)
        train, st = render_chat_records(tokenizer, train_recs, cfg.data.max_length)
        ev, se = render_chat_records(tokenizer, eval_recs, cfg.data.max_length)
        for s, what in ((st, "data.train"), (se, "data.eval")):
            w = s.warning(cfg.data.max_length)
            if w:
                notes.append(f"{what}: {w}")
        if not train:
            raise DataError(f"data.train: no trainable example left after rendering with "
                            f"data.max_length={cfg.data.max_length}")
        return PreparedData(train, ev, notes)

    def on_setup(self, backend, data, log) -> None:
        """Decide ``data.packing`` now the backend exists, and show what it saves."""
        cfg = self.cfg
        want = cfg.data.packing
        if want is False:
            return
        if not backend.can_pack():
            why = (f"the {backend.name} backend cannot reproduce unpacked log-probs with packed "
                   f"rows on this model (attention '{cfg.model.attn_implementation}', or an unusual "
                   "body or head)")
            if want is True:
                raise ConfigError(f"data.packing: true, but {why}; set data.packing: auto or false")
            log(f"data.packing: off: {why}; one example per row")
            return
        self.pack_to = cfg.data.max_length
        log(f"data.packing: on, rows of up to {self.pack_to} tokens; epoch 1: "
            + _epoch_stats(data.train_lengths, cfg.train, self.pack_to).line())

    # -- per step ------------------------------------------------------------------------------
    @staticmethod
    def n_tokens(example: Rendered) -> int:
        return len(example.input_ids)

    @staticmethod
    def weight(examples: list[Rendered]) -> float:
        """Normaliser contribution: loss is Σ NLL / Σ target tokens over the whole step."""
        return float(sum(r.n_target for r in examples))

    def _nll(self, backend, examples):
        batch = backend.batch([r.input_ids for r in examples], [r.loss_mask for r in examples],
                              pack_to=self.pack_to)
        logps = backend.token_logps(batch)
        nll, m = sft_loss(logps, batch["loss_mask"], backend.xp)
        return backend.xp.sum(nll), backend.xp.sum(m["tokens"])

    def micro_loss(self, backend, examples, norm: float):
        """Loss to backpropagate for one micro-batch (already divided by the step's normaliser)."""
        nll, tokens = self._nll(backend, examples)
        xp = backend.xp
        return nll / norm, {"nll_sum": xp.to_float(nll), "target_tokens": xp.to_float(tokens)}

    @staticmethod
    def step_metrics(sums: dict) -> dict:
        return {"target_tokens": int(sums.get("target_tokens", 0))}

    def eval_sums(self, backend, examples) -> dict:
        nll, tokens = self._nll(backend, examples)
        return {"nll_sum": backend.xp.to_float(nll), "target_tokens": backend.xp.to_float(tokens)}

    @staticmethod
    def eval_metrics(sums: dict) -> dict:
        loss = sums["nll_sum"] / max(sums["target_tokens"], 1.0)
        return {"eval_loss": loss, "eval_ppl": math.exp(min(loss, 50.0))}


def _epoch_stats(lengths: list[int], t, capacity: int):
    """:func:`~mindprint.data.packing.packing_stats` of the first epoch's micro-batches (as the
    sampler forms them in one process)."""
    groups = epoch_step_groups(lengths, t.batch_size * t.grad_accum, t.seed, 0)
    return packing_stats([[lengths[i] for i in g[s:s + t.batch_size]]
                          for g in groups for s in range(0, len(g), t.batch_size)], capacity)
