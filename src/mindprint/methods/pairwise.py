"""Pairwise preference methods: DPO, IPO (with a reference), ORPO, SimPO (reference-free).

Per micro-batch of pairs: one forward pass scores both completions of every pair (the backend
packs ``[prompt | chosen | rejected]`` into one row), giving summed log-probs and token counts;
the reference sums come from the on-disk cache (or a live adapter-off pass with
``dpo.reference: live``); a pure loss from :mod:`mindprint.losses` turns them into per-pair losses.

The step objective is the mean over the step's pairs, so the loop's normaliser is the number of
pairs of the whole accumulation cycle and batch b × accumulation k equals batch b·k × 1. ORPO's
NLL term is token-weighted over the step's NLL tokens (TRL's batch semantics, extended exactly
to accumulation). Which tokens, ``orpo.nll``:

* ``answer`` (default): the chosen answer's scored tokens — the sums the pair pass already has.
  For a voice, the prompts are the *other* person's words; training on them would teach the
  model to write questions in their style.
* ``prompt_and_answer``: every token of prompt + chosen after the first, TRL 1.16's
  ``ORPOTrainer`` (``concatenated_forward``: a cross-entropy over the attended chosen row).
  The prompt tokens' log-probs come from one more forward pass over the chosen rows
  (``backend.token_logps``, any backend); the odds-ratio term still uses answer tokens only.
"""

from __future__ import annotations

import math

from ..errors import DataError
from ..losses.dpo import dpo_loss, ipo_loss
from ..losses.orpo import orpo_loss
from ..losses.simpo import simpo_loss
from .base import Method
from .common import load_splits
from .groups import (GroupData, Norm, attach_reference, live_reference, pair_items, render_groups,
                     stacked_ref)

PREFERENCE = ("preference",)


# -- objectives: (policy sums, reference sums, token counts, step normaliser) → loss, metrics ----
def _dpo(cfg, pc, pr, rc, rr, lc, lr, norm, xp):
    return dpo_loss(pc, pr, rc, rr, beta=cfg.dpo.beta, label_smoothing=cfg.dpo.label_smoothing, xp=xp)


def _ipo(cfg, pc, pr, rc, rr, lc, lr, norm, xp):
    return ipo_loss(pc, pr, rc, rr, lc, lr, beta=cfg.dpo.beta, xp=xp)


def _orpo(cfg, pc, pr, rc, rr, lc, lr, norm, xp, full=None):
    # Token-weighted NLL over the whole step: giving every pair the step's mean token count makes
    # orpo_loss's B·nll_b/Σtokens equal N_step·nll_b/T_step, so Σ_b loss_b / N_step is exact.
    # ``full``: the chosen rows' log-prob sums over prompt + answer (orpo.nll: prompt_and_answer).
    tokens = xp.ones_like(lc) * (norm.tokens / max(norm.items, 1.0))
    nll_sum = -(pc if full is None else full)
    return orpo_loss(pc, pr, lc, lr, lam=cfg.orpo.lam, nll_sum=nll_sum, nll_tokens=tokens, xp=xp)


def _chosen_rows(groups) -> tuple[list[list[int]], list[list[int]]]:
    """Prompt + chosen rows, every token after the first scored (TRL's ORPO NLL tokens)."""
    seqs = [g.prompt + g.completions[0] for g in groups]
    return seqs, [[0] + [1] * (len(s) - 1) for s in seqs]


def _full_chosen_sums(backend, groups):
    """``[R]`` summed log-probs of each pair's prompt + chosen tokens (after the first)."""
    return backend.xp.sum(backend.token_logps(backend.batch(*_chosen_rows(groups))), axis=-1)


def _simpo(cfg, pc, pr, rc, rr, lc, lr, norm, xp):
    return simpo_loss(pc, pr, lc, lr, beta=cfg.simpo.beta, gamma=cfg.simpo.gamma,
                      label_smoothing=cfg.simpo.label_smoothing, xp=xp)


OBJECTIVES = {  # name: (objective, needs a reference model)
    "dpo": (_dpo, True),
    "ipo": (_ipo, True),
    "orpo": (_orpo, False),
    "simpo": (_simpo, False),
}

_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margin", "rewards/accuracy",
            "logps/chosen", "logps/rejected", "nll/chosen")


class PairMethod(Method):
    def __init__(self, cfg):
        self.cfg = cfg
        self.name = cfg.method
        self.objective, self.needs_reference = OBJECTIVES[cfg.method]
        self.live = self.needs_reference and cfg.dpo.reference == "live"
        self.full_nll = cfg.method == "orpo" and cfg.orpo.nll == "prompt_and_answer"
        self.eval_norm = Norm(1.0, 1.0)

    # -- data ----------------------------------------------------------------------------------
    def prepare(self, tokenizer) -> GroupData:
        cfg = self.cfg
        train, ev, notes = load_splits(cfg, PREFERENCE)
        args = (cfg.data.max_length, cfg.data.max_error_rate)
        train_g, more = render_groups(tokenizer, pair_items(train), *args, "data.train")
        notes += more
        eval_g: list = []
        if ev:
            eval_g, more = render_groups(tokenizer, pair_items(ev), *args, "data.eval")
            notes += more
        if not train_g:
            raise DataError("data.train: no preference pair left to train on")
        self.eval_norm = self.weight(eval_g) if eval_g else Norm(1.0, 1.0)
        return GroupData(train_g, eval_g, notes)

    def on_setup(self, backend, data, log) -> None:
        log(f"{self.name}: scoring pairs with the '{backend.group_layout}' layout")
        if not self.needs_reference or self.live:
            return
        weights = backend.weights_hash()
        attach_reference(backend, self.cfg, data.train, "data.train", log, weights=weights)
        attach_reference(backend, self.cfg, data.eval, "data.eval", log, weights=weights)

    # -- per step ------------------------------------------------------------------------------
    @staticmethod
    def n_tokens(group) -> int:
        return group.n_tokens

    def weight(self, groups) -> Norm:
        """Pairs and NLL tokens (ORPO's normaliser; the other objectives use the pairs only)."""
        if self.full_nll:
            return Norm(float(len(groups)), float(sum(len(g.prompt) + len(g.completions[0]) - 1
                                                      for g in groups)))
        return Norm(float(len(groups)), float(sum(g.target_tokens[0] for g in groups)))

    def _losses(self, backend, groups, norm):
        xp = backend.xp
        sums, counts = backend.group_logps([g.packed() for g in groups])
        pc, pr, lc, lr = sums[:, 0], sums[:, 1], counts[:, 0], counts[:, 1]
        rc = rr = None
        if self.needs_reference:
            ref = live_reference(backend, groups) if self.live else stacked_ref(groups, xp, sums)
            rc, rr = ref[:, 0], ref[:, 1]
        extra = {"full": _full_chosen_sums(backend, groups)} if self.full_nll else {}
        loss, m = self.objective(self.cfg, pc, pr, rc, rr, lc, lr, norm, xp, **extra)
        f = xp.to_float
        stats = {"pairs": float(len(groups)), "loss_sum": f(xp.sum(loss)),
                 "rewards/chosen": f(xp.sum(m["rewards_chosen"])),
                 "rewards/rejected": f(xp.sum(m["rewards_rejected"])),
                 "rewards/margin": f(xp.sum(m["reward_margin"])),
                 "rewards/accuracy": f(xp.sum(m["reward_accuracy"])),
                 "logps/chosen": f(xp.sum(pc)), "logps/rejected": f(xp.sum(pr)),
                 "nll/chosen": -f(xp.sum(pc)), "chosen_tokens": f(xp.sum(lc))}
        return loss, stats

    def micro_loss(self, backend, groups, norm: Norm):
        loss, stats = self._losses(backend, groups, norm)
        return backend.xp.sum(loss) / norm.items, stats

    @staticmethod
    def _means(sums: dict, prefix: str = "") -> dict:
        n = max(sums.get("pairs", 0.0), 1.0)
        out = {prefix + k: sums[k] / n for k in _METRICS if k in sums and k != "nll/chosen"}
        if "nll/chosen" in sums:
            out[prefix + "nll/chosen"] = sums["nll/chosen"] / max(sums["chosen_tokens"], 1.0)
        return out

    def step_metrics(self, sums: dict) -> dict:
        return {**self._means(sums), "pairs": int(sums.get("pairs", 0))}

    def eval_sums(self, backend, groups) -> dict:
        with backend.no_grad():
            return self._losses(backend, groups, self.eval_norm)[1]

    def eval_metrics(self, sums: dict) -> dict:
        n = max(sums["pairs"], 1.0)
        out = {"eval_loss": sums["loss_sum"] / n,
               "eval_pref_accuracy": sums["rewards/accuracy"] / n}
        out.update({k: v for k, v in self._means(sums, "eval_").items()
                    if k != "eval_rewards/accuracy"})
        out["eval_ppl_chosen"] = math.exp(min(out["eval_nll/chosen"], 50.0))
        return out
