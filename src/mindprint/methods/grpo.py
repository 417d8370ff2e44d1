"""GRPO glue (``method: grpo``): prompts → sampled groups → rewards → advantages → clipped surrogate.

Each optimizer step takes ``train.batch_size × train.grad_accum`` prompts (the loop's sampler picks
them) and, before the micro-batches, :meth:`GRPOMethod.rollout` turns them into completions:

1. sample ``grpo.group_size`` completions per prompt with the policy (eval mode, adapter on,
   batched KV-cached ``generate``, seeded by ``train.seed`` and the step), stopping at end-of-turn;
2. score them with the reward functions (:mod:`mindprint.rewards`), weight and sum;
3. advantages within each prompt's group (:func:`mindprint.losses.grpo.group_advantages`);
4. without gradient: the reference log-probs with the adapter disabled when ``beta > 0``, and the
   old-policy log-probs when ``num_iterations > 1`` (with one iteration the policy that sampled is
   the policy being trained, so the ratio's denominator is the current log-probs, detached).

A micro-batch is then the completions of ``train.batch_size`` prompts; its loss is
:func:`mindprint.losses.grpo.grpo_loss` on the completion tokens, at the sampling temperature, scaled
so that the step's loss is the chosen aggregation over the whole step (grpo / dr_grpo: over all its
sequences; dapo: over all its tokens; bnpo: per micro-batch, averaged, as TRL does). With
``num_iterations = μ`` the same completions serve μ optimizer steps (the prompts the sampler picks
for the μ − 1 reuse steps are skipped).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..data.jsonl import load_many
from ..data.render import render_prompt
from ..errors import ConfigError, DataError
from ..losses import xp as xpmod
from ..losses.grpo import group_advantages, grpo_loss
from .base import Method


@dataclass
class PromptItem:
    ids: list[int]
    record: object              # PromptRecord
    where: str = ""

    @property
    def n_tokens(self) -> int:
        return len(self.ids)


@dataclass
class Sample:
    """One sampled completion, ready to train on."""

    prompt_len: int
    ids: list[int]              # prompt + completion
    n_completion: int
    advantage: float
    old: np.ndarray | None = field(default=None, repr=False)   # [n_completion] log-probs (host)
    ref: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_tokens(self) -> int:
        return len(self.ids)

    @property
    def mask(self) -> list[int]:
        return [0] * self.prompt_len + [1] * self.n_completion


@dataclass
class PromptData:
    train: list[PromptItem]
    eval: list[PromptItem]
    notes: list[str]

    @property
    def train_lengths(self) -> list[int]:
        return [p.n_tokens for p in self.train]


@dataclass
class Norm:
    """A micro-batch's share of the step's normalisers (summed by the loop)."""

    seqs: float = 0.0
    tokens: float = 0.0
    micros: float = 0.0

    def __add__(self, other):
        if isinstance(other, (int, float)) and other == 0:
            return self
        return Norm(self.seqs + other.seqs, self.tokens + other.tokens, self.micros + other.micros)

    __radd__ = __add__


def _per_sample(logps, mask, samples: list[Sample], xp) -> list[np.ndarray]:
    """Each sample's completion log-probs (float32, on the host), from ``[N, T]`` log-probs and
    their completion mask (row-major, one row per sample); any backend's arrays."""
    flat = xp.to_numpy(logps)[xp.to_numpy(mask) > 0.5]
    return np.split(flat, np.cumsum([s.n_completion for s in samples])[:-1])


def _stack(batch_mask, parts: list, xp, like):
    """The inverse of :func:`_per_sample`: ``parts`` laid out at ``batch_mask``'s positions
    (0 elsewhere), float32, as an array of ``like``'s backend."""
    m = xp.to_numpy(batch_mask) > 0.5
    out = np.zeros(m.shape, dtype=np.float32)
    out[m] = np.concatenate([np.asarray(p, dtype=np.float32).reshape(-1) for p in parts])
    return xp.asarray(out, like=xp.astype_float(like))


# -- the method --------------------------------------------------------------------------------


class GRPOMethod(Method):
    name = "grpo"

    def __init__(self, cfg):
        from .. import rewards

        self.cfg = cfg
        g = cfg.grpo
        if g.max_completion_length >= cfg.data.max_length:
            raise ConfigError(f"grpo.max_completion_length={g.max_completion_length} leaves no room "
                              f"for a prompt within data.max_length={cfg.data.max_length}")
        self.rewards = rewards.build(g, cfg.eval.banned_phrases)
        self._cache: list | None = None          # (micro-batches, metrics) reused by num_iterations
        self._rollout_metrics: dict = {}
        self.run_root = None

    # -- data ----------------------------------------------------------------------------------
    def _load(self, tokenizer, paths, what: str):
        cfg = self.cfg
        fmt = None if cfg.data.format == "auto" else cfg.data.format
        if fmt is not None and fmt != "prompt":
            raise DataError(f"data.format is '{fmt}' but method 'grpo' needs prompt data "
                            '({"prompt", "answer"?, "system"?} per line)')
        res = load_many(paths, fmt, system_prompt=cfg.data.system_prompt,
                        max_error_rate=cfg.data.max_error_rate, expect=("prompt",),
                        columns=cfg.data.columns or None)
        notes = []
        if res.problems:
            notes.append(f"{what}: skipped {len(res.problems)} bad line(s) (data.max_error_rate="
                         f"{cfg.data.max_error_rate}); first: {res.problems[0]}")
        room = cfg.data.max_length - cfg.grpo.max_completion_length
        items, problems = [], []
        for rec in res.records:
            ids = render_prompt(tokenizer, rec.prompt)
            if len(ids) > room:
                problems.append(f"{rec.where}: the prompt is {len(ids)} tokens, more than "
                                f"data.max_length − grpo.max_completion_length = {room}; shorten "
                                f"it or raise data.max_length")
            else:
                items.append(PromptItem(ids, rec, rec.where))
        if problems:
            if not items or len(problems) / len(res.records) > cfg.data.max_error_rate:
                raise DataError(f"{what}: {len(problems)} of {len(res.records)} prompts are too "
                                f"long", problems)
            notes.append(f"{what}: skipped {len(problems)} prompt(s) (data.max_error_rate="
                         f"{cfg.data.max_error_rate}); first: {problems[0]}")
        return items, notes

    def prepare(self, tokenizer) -> PromptData:
        from .groups import split_off_eval

        cfg = self.cfg
        train, notes = self._load(tokenizer, cfg.data.train, "data.train")
        ev: list = []
        if cfg.data.eval:
            ev, more = self._load(tokenizer, cfg.data.eval, "data.eval")
            notes += more
        elif cfg.data.eval_split > 0:
            train, ev = split_off_eval(train, cfg.data.eval_split, cfg.train.seed)
        needs_answer = {"content_similarity", "answer_similarity"} & set(cfg.grpo.rewards)
        if needs_answer and not any(p.record.answer for p in train):
            notes.append(f"data.train: no prompt has an `answer`, so {', '.join(sorted(needs_answer))} "
                         "score nothing")
        return PromptData(train, ev, notes)

    def on_setup(self, backend, data, log) -> None:
        self.log = log

    # -- rollout (before the micro-batches of a step) ------------------------------------------
    def _generate(self, backend, items: list[PromptItem], n: int, temperature: float, seed: int):
        g = self.cfg.grpo
        return backend.sample_completions([p.ids for p in items], n=n,
                                          max_new_tokens=g.max_completion_length,
                                          temperature=temperature, top_p=g.top_p, seed=seed,
                                          sampler_dtype=g.sampler_dtype)

    def _score(self, backend, items: list[PromptItem], outs, n: int):
        from .. import rewards

        tok = backend.tokenizer
        texts = [tok.decode(ids, skip_special_tokens=True).strip() for ids, _ in outs]
        recs = [p.record for p in items for _ in range(n)]
        prompts = [[m.as_dict() for m in r.prompt] for r in recs]
        table = rewards.score(self.rewards, prompts, texts, recs,
                              finished=[bool(f) for _, f in outs])
        return texts, table, rewards.combine(self.rewards, table)

    def _logps(self, backend, samples: list[Sample], *, entropy: bool = False):
        """``(log-probs, completion mask, entropy sum or None)`` of the samples' completion tokens
        (the backend packs a prompt's completions into one row where the model allows)."""
        return backend.completion_logps([s.ids[:s.prompt_len] for s in samples],
                                        [s.ids[s.prompt_len:] for s in samples],
                                        self.cfg.grpo.temperature, entropy=entropy)

    def _side_logps(self, backend, samples: list[Sample], *, reference: bool) -> list[np.ndarray]:
        # eval mode, no gradient, and the training forward's precision, so that old-policy
        # log-probs match it
        with backend.inference(), backend.autocast():
            if reference:
                with backend.disabled_adapter():
                    lp, mask, _ = self._logps(backend, samples)
            else:
                lp, mask, _ = self._logps(backend, samples)
        return _per_sample(lp, mask, samples, backend.xp)

    def rollout(self, backend, micro: list[list[PromptItem]], step: int) -> list[list[Sample]]:
        """The step's micro-batches of completions (see the module docstring)."""
        g = self.cfg.grpo
        if self._cache is not None and step % g.num_iterations != 0:
            self._rollout_metrics = self._cache[1]
            return self._cache[0]
        t0 = time.monotonic()
        G = g.group_size
        items = [p for m in micro for p in m]
        d = backend.dist                       # torchrun: each rank samples its own prompts
        rank_seed = 7919 * d.rank
        outs = self._generate(backend, items, G, g.temperature,       # the whole step at once
                              seed=self.cfg.train.seed * 1_000_003 + step * 1009 + rank_seed)
        t_gen = time.monotonic() - t0
        texts, table, total = self._score(backend, items, outs, G)
        # advantages on the host in float64, whatever the backend (the same numbers on torch and mlx)
        hx = xpmod.get("torch")
        valid = hx.float64([float(t is not None) for t in total])
        r = hx.float64([t if t is not None else 0.0 for t in total])
        adv, am = group_advantages(r, G, scale=g.scale_rewards, valid=valid, xp=hx)
        samples = [Sample(len(p.ids), list(p.ids) + list(ids), len(ids), float(a))
                   for p, (ids, _), a in zip((p for p in items for _ in range(G)), outs, adv.tolist())]
        batches, s = [], 0
        for m in micro:
            batches.append(samples[s:s + len(m) * G])
            s += len(m) * G
        for b in batches:
            if g.beta > 0:
                for smp, ref in zip(b, self._side_logps(backend, b, reference=True)):
                    smp.ref = ref
            if g.num_iterations > 1:
                for smp, old in zip(b, self._side_logps(backend, b, reference=False)):
                    smp.old = old
        lengths = [len(ids) for ids, _ in outs]
        metrics = {"reward": _mean(total), "reward_std": _std(total),
                   "advantage_std": float(adv.std()) if adv.numel() > 1 else 0.0,
                   "zero_std_groups": float(am["group_std_zero_frac"]),
                   "completion_len_mean": sum(lengths) / len(lengths),
                   "completion_len_max": max(lengths),
                   "truncated_frac": sum(not f for _, f in outs) / len(outs),
                   "generate_s": t_gen}
        for rw, col in zip(self.rewards, table):
            metrics[f"rewards/{rw.name}/mean"] = _mean(col)
            metrics[f"rewards/{rw.name}/std"] = _std(col)
        metrics = {k: v for k, v in metrics.items() if v is not None}   # a reward that scored nothing
        if d.world_size > 1:
            metrics = _across_ranks(d, metrics)
        self._rollout_metrics = metrics
        self._cache = (batches, metrics)
        if g.sample_every and (step == 0 or (step + 1) % g.sample_every == 0) \
                and d.is_main:
            self._write_samples(step + 1, items, texts, table, total, adv.tolist())
        return batches

    def _write_samples(self, step, items, texts, table, total, adv) -> None:
        from ..outputs import RunDir

        G = self.cfg.grpo.group_size
        path = RunDir(self.cfg.output_dir).root / "samples.jsonl"
        rows = []
        for i in range(min(len(texts), 2 * G)):       # the step's first two prompts, every completion
            rec = items[i // G].record
            rows.append({"step": step, "where": rec.where,
                         "prompt": rec.prompt[-1].content, "completion": texts[i],
                         "reward": total[i], "advantage": adv[i],
                         "rewards": {r.name: col[i] for r, col in zip(self.rewards, table)}})
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    # -- per micro-batch -----------------------------------------------------------------------
    @staticmethod
    def n_tokens(item) -> int:
        return item.n_tokens

    @staticmethod
    def weight(samples: list[Sample]) -> Norm:
        return Norm(len(samples), float(sum(s.n_completion for s in samples)), 1.0)

    def micro_loss(self, backend, samples: list[Sample], norm: Norm):
        g = self.cfg.grpo
        xp = backend.xp
        logps, mask, ent = self._logps(backend, samples, entropy=True)
        mask = xp.astype_float(mask)
        old = (_stack(mask, [s.old for s in samples], xp, logps) if g.num_iterations > 1
               else xp.stop_gradient(logps))
        ref = _stack(mask, [s.ref for s in samples], xp, logps) if g.beta > 0 else None
        adv = xp.asarray([s.advantage for s in samples], like=logps)
        loss, m = grpo_loss(logps, old, adv, mask, ref_logps=ref, beta=g.beta, epsilon=g.epsilon,
                            epsilon_high=g.epsilon_high, loss_type=g.loss_type,
                            importance_sampling_level=g.importance_sampling_level,
                            max_completion_length=g.max_completion_length,
                            num_items=norm.tokens, xp=xp)
        if g.loss_type in ("grpo", "dr_grpo"):
            loss = loss * (len(samples) / norm.seqs)
        elif g.loss_type == "bnpo":
            loss = loss / norm.micros
        tokens = xp.to_float(xp.sum(mask))
        sums = {f"{k}_sum": xp.to_float(v) * tokens for k, v in m.items()}
        sums.update(tokens=tokens, entropy_sum=ent or 0.0)
        return loss, sums

    def step_metrics(self, sums: dict) -> dict:
        n = max(sums.get("tokens", 0.0), 1.0)
        out = dict(self._rollout_metrics)
        for k in ("clip_low", "clip_high", "clip_region", "ratio_mean", "kl"):
            if f"{k}_sum" in sums:
                out[k] = sums[f"{k}_sum"] / n
        out["entropy"] = sums.get("entropy_sum", 0.0) / n
        return out

    # -- eval: greedy answers to held-out prompts, scored by the same rewards -------------------
    def eval_sums(self, backend, items: list[PromptItem]) -> dict:
        outs = self._generate(backend, items, 1, 0.0, seed=self.cfg.train.seed)
        _, _, total = self._score(backend, items, outs, 1)
        got = [t for t in total if t is not None]
        return {"reward_sum": float(sum(got)), "n": float(len(got))}

    @staticmethod
    def eval_metrics(sums: dict) -> dict:
        mean = sums["reward_sum"] / max(sums["n"], 1.0)
        return {"eval_loss": -mean, "eval_reward": mean}


def _across_ranks(d, metrics: dict) -> dict:
    """Rollout metrics of every rank (the same number of prompts each): maxima stay maxima,
    generation time is the slowest rank's, the rest are averaged."""
    parts = d.gather(metrics)
    out = {}
    for k in metrics:
        vals = [p[k] for p in parts if k in p]
        out[k] = max(vals) if k.endswith("_max") or k == "generate_s" else sum(vals) / len(vals)
    return out


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _std(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    if len(xs) < 2:
        return 0.0 if xs else None
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
