"""KL-regularised SFT glue (``method: kl_sft``): SFT's data and normaliser, loss CE + λ·τ²·KL.

The base model is the trained model with its adapter switched off (no second copy); its
next-token distribution is computed at the assistant positions only, in chunks (see
``Backend.token_logps_and_kl``; torch: ``backends/torch/logps.py``), packed like SFT's rows
under ``data.packing`` (see :mod:`.sft`). CE and KL are logged
separately, per step and at eval, so a user sees how far the voice has pulled the model from its
base.
"""

from __future__ import annotations

from ..losses.kl import kl_sft_loss
from .sft import SFTMethod


class KLSFTMethod(SFTMethod):
    name = "kl_sft"

    def _terms(self, backend, examples):
        batch = backend.batch([r.input_ids for r in examples], [r.loss_mask for r in examples],
                              pack_to=self.pack_to)
        logps, kl = backend.token_logps_and_kl(batch, self.cfg.kl.tau)
        loss, m = kl_sft_loss(logps, kl, batch["loss_mask"], self.cfg.kl.lambda_, backend.xp)
        xp = backend.xp
        return xp.sum(loss), {"nll_sum": xp.to_float(xp.sum(m["nll"])),
                              "kl_sum": xp.to_float(xp.sum(m["kl"])),
                              "target_tokens": xp.to_float(xp.sum(m["tokens"]))}

    def micro_loss(self, backend, examples, norm: float):
        loss, sums = self._terms(backend, examples)
        return loss / norm, sums

    @staticmethod
    def step_metrics(sums: dict) -> dict:
        n = max(sums.get("target_tokens", 0.0), 1.0)
        return {"target_tokens": int(sums.get("target_tokens", 0)), "ce": sums["nll_sum"] / n,
                "kl": sums["kl_sum"] / n}

    def eval_sums(self, backend, examples) -> dict:
        return self._terms(backend, examples)[1]

    @staticmethod
    def eval_metrics(sums: dict) -> dict:
        out = SFTMethod.eval_metrics(sums)        # eval_loss = CE, so early stopping reads the same
        out["eval_kl"] = sums["kl_sum"] / max(sums["target_tokens"], 1.0)
        return out


def kl_to_base_on(backend, examples, tau: float = 1.0, batch_size: int = 8) -> float:
    """Mean τ²·KL(base ‖ model) per assistant token of ``examples`` (rendered chats), no grad.
    Works for any adapter, so plain SFT and KL-SFT can be compared on held-out data."""
    xp = backend.xp
    kl_sum = tokens = 0.0
    with backend.no_grad():
        for s in range(0, len(examples), batch_size):
            chunk = examples[s:s + batch_size]
            batch = backend.batch([r.input_ids for r in chunk], [r.loss_mask for r in chunk])
            _, kl = backend.token_logps_and_kl(batch, tau)
            kl_sum += xp.to_float(xp.sum(kl))
            tokens += xp.to_float(xp.sum(batch["loss_mask"][:, 1:]))
    return kl_sum / max(tokens, 1.0)
