"""SFT glue: chat records → rendered examples → token-weighted NLL.

A method object gives the training loop four things: the examples and their lengths, the
normaliser of an accumulation cycle (here: target tokens), the loss of a micro-batch, and the
eval metrics. The loop stays method-agnostic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..data.render import Rendered, render_chat_records
from ..errors import DataError
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

    # -- per step ------------------------------------------------------------------------------
    @staticmethod
    def n_tokens(example: Rendered) -> int:
        return len(example.input_ids)

    @staticmethod
    def weight(examples: list[Rendered]) -> float:
        """Normaliser contribution: loss is Σ NLL / Σ target tokens over the whole step."""
        return float(sum(r.n_target for r in examples))

    @staticmethod
    def _nll(backend, examples):
        batch = backend.batch([r.input_ids for r in examples], [r.loss_mask for r in examples])
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
