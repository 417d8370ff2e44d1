"""KTO glue: unpaired desirable / undesirable completions against the adapter-free reference.

Data: ``kto`` records, or a ``preference`` file split into a desirable (chosen) and an
undesirable (rejected) completion per pair. Completions are grouped by prompt, so a prompt's
completions share one packed row and pairs of opposite labels give a preference accuracy.
``train.batch_size`` therefore counts prompts; the loss is the mean over completions (TRL).

KL estimate z: each group gets a fixed *mismatched* partner — its prompt with the completions of
the group before it in a seeded rotation (TRL also fixes its pairing once, rotating completions
within consecutive blocks of the dataset). Being fixed, the reference's share of z is cacheable
like every other reference log-prob; the policy's share is a no-grad pass per micro-batch, and
z = max(0, mean(π_KL − ref_KL)) over the micro-batch, detached.
"""

from __future__ import annotations

import json
import random

import numpy as np

from ..data.records import KTORecord
from ..errors import DataError
from ..losses.kto import kto_kl_estimate, kto_loss
from .base import Method
from .common import load_splits
from .groups import (GroupData, Norm, attach_reference, live_reference, render_group,
                     render_groups, stacked_ref)

KTO_FORMATS = ("kto", "preference")


def kto_items(records) -> list:
    """Group (prompt, completion, label) triples by prompt (and tool list), in order of first
    appearance: items (prompt, completions, labels, where, tools)."""
    by_prompt: dict = {}
    for r in records:
        triples = ([(r.completion, r.label)] if isinstance(r, KTORecord)
                   else [(r.chosen, True), (r.rejected, False)])
        # by value: messages with tool calls hold dicts, which do not hash
        key = json.dumps([[m.as_dict() for m in r.prompt], r.tools], sort_keys=True, default=str)
        item = by_prompt.setdefault(key, (r.prompt, [], [], r.where, r.tools))
        for completion, label in triples:
            item[1].append(completion)
            item[2].append(label)
    return list(by_prompt.values())


def _check_both_labels(items, what: str) -> None:
    desirable = sum(lab for _, _, labels, *_ in items for lab in labels)
    total = sum(len(labels) for _, _, labels, *_ in items)
    if desirable == 0 or desirable == total:
        have = "desirable (label true)" if desirable else "undesirable (label false)"
        lack = "undesirable (label false)" if desirable else "desirable (label true)"
        raise DataError(f"{what}: all {total} completions are {have}; KTO needs both desirable and "
                        f"undesirable completions (add some {lack} ones), or use method: sft for "
                        f"desirable-only data")


def add_kl_partners(tokenizer, groups, max_length: int, seed: int) -> None:
    """group.kl = its prompt with the completions of the group before it in a seeded rotation."""
    order = list(range(len(groups)))
    random.Random(seed).shuffle(order)
    for k, i in enumerate(order):
        partner = groups[order[k - 1]]
        prompt, _ = groups[i].source
        kl, _ = render_group(tokenizer, prompt, partner.source[1], [True] * len(partner.labels),
                             max_length, groups[i].where, strict=False, tools=groups[i].tools)
        groups[i].kl = kl if kl is not None else groups[i]


def _scored(groups) -> list[tuple[int, int]]:
    """(group, completion) of every completion with scored tokens, row-major."""
    return [(i, k) for i, g in enumerate(groups) for k, m in enumerate(g.masks) if sum(m) > 0]


def _flat(where, arr) -> list[int]:
    """Flat indices into ``arr`` (``[R, K]``) of the (row, column) pairs ``where``."""
    K = arr.shape[1]
    return [i * K + k for i, k in where]


class KTOMethod(Method):
    name = "kto"

    def __init__(self, cfg):
        self.cfg = cfg
        self.live = cfg.kto.reference == "live"

    def prepare(self, tokenizer) -> GroupData:
        cfg = self.cfg
        train, ev, notes = load_splits(cfg, KTO_FORMATS)
        train_items = kto_items(train)
        _check_both_labels(train_items, "data.train")
        args = (cfg.data.max_length, cfg.data.max_error_rate)
        train_g, more = render_groups(tokenizer, train_items, *args, "data.train")
        notes += more
        _check_both_labels([(None, None, g.labels, None) for g in train_g], "data.train")
        eval_g: list = []
        if ev:
            eval_g, more = render_groups(tokenizer, kto_items(ev), *args, "data.eval")
            notes += more
        for gs in (train_g, eval_g):
            add_kl_partners(tokenizer, gs, cfg.data.max_length, cfg.train.seed)
        return GroupData(train_g, eval_g, notes)

    def on_setup(self, backend, data, log) -> None:
        log(f"kto: scoring completions with the '{backend.group_layout}' layout")
        if self.live:
            return
        weights = backend.weights_hash()
        for split, what in ((data.train, "data.train"), (data.eval, "data.eval")):
            attach_reference(backend, self.cfg, split, what, log, weights=weights)
            attach_reference(backend, self.cfg, [g.kl for g in split], what + " KL pairs", log,
                             weights=weights)

    # -- per step ------------------------------------------------------------------------------
    @staticmethod
    def n_tokens(group) -> int:
        return group.n_tokens

    @staticmethod
    def weight(groups) -> Norm:
        return Norm(float(sum(len(g.completions) for g in groups)), 0.0)

    def _reference(self, backend, groups, like):
        if self.live:
            return live_reference(backend, groups)
        return stacked_ref(groups, backend.xp, like)

    def _losses(self, backend, groups, *, step_z: bool = False):
        xp, cfg = backend.xp, self.cfg.kto
        sums, _ = backend.group_logps([g.packed() for g in groups])
        kls = [g.kl for g in groups]
        with backend.no_grad():
            kl_sums, _ = backend.group_logps([g.packed() for g in kls])
        kl_sums = xp.stop_gradient(kl_sums)
        ref = self._reference(backend, groups, sums)
        kl_ref = self._reference(backend, kls, kl_sums)
        # scored completions, row-major (host-side index: mlx has no boolean-mask indexing)
        where, kl_where = _scored(groups), _scored(kls)
        z = kto_kl_estimate(xp.take(kl_sums, _flat(kl_where, kl_sums)),
                            xp.take(kl_ref, _flat(kl_where, kl_ref)), xp=xp)
        d = backend.dist
        if step_z and d.world_size > 1:   # torchrun: z over the global micro-batch (as TRL gathers it)
            diff = xp.stop_gradient(xp.take(kl_sums - kl_ref, _flat(kl_where, kl_sums)))
            total, n = d.sum_floats([xp.to_float(xp.sum(diff)), float(len(kl_where))])
            z = xp.asarray(max(total / max(n, 1.0), 0.0), like=diff)
        pol = xp.take(sums, _flat(where, sums))
        y = xp.asarray([groups[i].labels[k] for i, k in where], like=pol)
        loss, m = kto_loss(pol, xp.take(ref, _flat(where, ref)), y, z, beta=cfg.beta,
                           desirable_weight=cfg.desirable_weight,
                           undesirable_weight=cfg.undesirable_weight, xp=xp)
        yn = xp.to_numpy(y) > 0.5
        rw, lp = xp.to_numpy(m["rewards"]), xp.to_numpy(pol)
        n_tok = np.array([sum(groups[i].masks[k]) for i, k in where], dtype=np.float64)
        f = xp.to_float
        stats = {"items": float(len(where)), "loss_sum": f(xp.sum(loss)), "kl_sum": f(z),
                 "micro_batches": 1.0, "desirable": float(yn.sum()), "undesirable": float((~yn).sum()),
                 "rewards/chosen": float(rw[yn].sum()), "rewards/rejected": float(rw[~yn].sum()),
                 "logps/chosen": float(lp[yn].sum()), "logps/rejected": float(lp[~yn].sum()),
                 "nll/chosen": -float(lp[yn].sum()), "chosen_tokens": float(n_tok[yn].sum()),
                 "pairs": 0.0, "pairs_correct": 0.0}
        reward = {ik: float(r) for ik, r in zip(where, rw)}
        for i, g in enumerate(groups):     # preference accuracy on a prompt's opposite labels
            for a, la in enumerate(g.labels):
                for b, lb in enumerate(g.labels):
                    if la and not lb and (i, a) in reward and (i, b) in reward:
                        stats["pairs"] += 1
                        stats["pairs_correct"] += float(reward[i, a] > reward[i, b])
        return loss, stats

    def micro_loss(self, backend, groups, norm: Norm):
        loss, stats = self._losses(backend, groups, step_z=True)
        return backend.xp.sum(loss) / norm.items, stats

    @staticmethod
    def _means(sums: dict, prefix: str = "") -> dict:
        d, u = max(sums["desirable"], 1.0), max(sums["undesirable"], 1.0)
        out = {"rewards/chosen": sums["rewards/chosen"] / d,
               "rewards/rejected": sums["rewards/rejected"] / u,
               "logps/chosen": sums["logps/chosen"] / d, "logps/rejected": sums["logps/rejected"] / u,
               "nll/chosen": sums["nll/chosen"] / max(sums["chosen_tokens"], 1.0),
               "kl": sums["kl_sum"] / max(sums["micro_batches"], 1.0)}
        out["rewards/margin"] = out["rewards/chosen"] - out["rewards/rejected"]
        if sums["pairs"]:
            out["rewards/accuracy"] = sums["pairs_correct"] / sums["pairs"]
        return {prefix + k: v for k, v in out.items()}

    def step_metrics(self, sums: dict) -> dict:
        return self._means(sums)

    def eval_sums(self, backend, groups) -> dict:
        with backend.no_grad():
            return self._losses(backend, groups)[1]

    def eval_metrics(self, sums: dict) -> dict:
        out = {"eval_loss": sums["loss_sum"] / max(sums["items"], 1.0)}
        if sums["pairs"]:
            out["eval_pref_accuracy"] = sums["pairs_correct"] / sums["pairs"]
        out.update({k: v for k, v in self._means(sums, "eval_").items()
                    if k != "eval_rewards/accuracy"})
        return out
