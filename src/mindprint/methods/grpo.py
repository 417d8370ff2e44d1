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

import contextlib
import json
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..backends.torch.sampling import fast_sampler, sampler_dtype
from ..data.jsonl import load_many
from ..data.render import end_of_turn_ids, render_prompt
from ..errors import ConfigError, DataError
from ..losses import xp as xpmod
from ..losses.grpo import group_advantages, grpo_loss


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


# -- model passes ------------------------------------------------------------------------------


def completion_logps(model, batch: dict, temperature: float = 1.0, *, entropy: bool = False):
    """``([B, T] log-probs at loss_mask positions (0 elsewhere), entropy sum or None)`` of the
    tokens under softmax(logits / temperature). Only completion rows reach the LM head (chunked);
    the entropy, when asked for, is computed from the same rows without gradient."""
    from ..backends.torch.model import _decoder_and_head, _scatter_targets, _selected_logps

    ids, att = batch["input_ids"], batch["attention_mask"]
    target_mask = batch["loss_mask"][:, 1:].bool()
    tgt = ids[:, 1:][target_mask]
    body, head = _decoder_and_head(model)
    ent = None
    if body is None:     # unusual heads: the model's own logits
        logits = model(input_ids=ids, attention_mask=att).logits[:, :-1][target_mask].float()
        lp = torch.log_softmax(logits / temperature, -1)
        sel = lp.gather(-1, tgt[:, None]).squeeze(-1)
        if entropy:
            with torch.no_grad():
                ent = float(-(lp.exp() * lp).sum())
        return _scatter_targets(target_mask, sel), ent
    rows = body(input_ids=ids, attention_mask=att).last_hidden_state[:, :-1][target_mask]
    w, b = head.weight, head.bias
    if temperature != 1.0:
        rows = rows / temperature
        b = None if b is None else b / temperature
    sel = _selected_logps(rows, w, b, tgt)
    if entropy:
        with torch.no_grad():
            ent = 0.0
            for s in range(0, rows.shape[0], 512):
                lp = torch.log_softmax(F.linear(rows[s:s + 512].detach(), w, b).float(), -1)
                ent += float(-(lp.exp() * lp).sum())
    return _scatter_targets(target_mask, sel), ent


def _prompt_groups(samples: list[Sample]) -> list[tuple[list[int], list[int]]]:
    """Consecutive samples with the same prompt: ``[(prompt ids, [sample index, ...]), ...]``."""
    out: list[tuple[list[int], list[int]]] = []
    for i, s in enumerate(samples):
        p = s.ids[:s.prompt_len]
        if out and out[-1][0] == p:
            out[-1][1].append(i)
        else:
            out.append((p, [i]))
    return out


def packed_completion_logps(model, samples: list[Sample], pad_id: int, temperature: float = 1.0,
                            *, entropy: bool = False):
    """``([N, L] log-probs, [N, L] mask, entropy sum or None)`` of each sample's completion tokens
    (L = the longest completion), with the completions of one prompt packed into one row after a
    single copy of the prompt: each attends to the prompt and to itself only and continues the
    prompt's positions (:func:`~mindprint.backends.torch.model.group_batch`), so the prompt is
    computed once per group instead of once per completion and nothing is padded to the longest
    completion of the group. Same values as one row per completion."""
    from ..backends.torch.model import (_decoder_and_head, _selected_logps, group_batch, group_hidden,
                                         group_kind)

    groups = _prompt_groups(samples)
    dev = next(model.parameters()).device
    gb = group_batch([(p, [(samples[i].ids[samples[i].prompt_len:], [1] * samples[i].n_completion)
                           for i in idx]) for p, idx in groups], pad_id, dev, group_kind(model))
    si, sj = [], []
    for _, idx in groups:
        for i in idx:
            si += [i] * samples[i].n_completion
            sj += range(samples[i].n_completion)
    body, head = _decoder_and_head(model)
    hidden = group_hidden(model, gb, body)
    rows = hidden[gb["rows"], gb["pred"]]
    w, b = head.weight, head.bias
    if temperature != 1.0:
        rows = rows / temperature
        b = None if b is None else b / temperature
    ent = torch.empty(rows.shape[0], dtype=torch.float32, device=dev) if entropy else None
    sel = _selected_logps(rows, w, b, gb["targets"], entropy_out=ent)
    L = max(s.n_completion for s in samples)
    si_t = torch.tensor(si, dtype=torch.long, device=dev)
    sj_t = torch.tensor(sj, dtype=torch.long, device=dev)
    logps = torch.zeros((len(samples), L), dtype=sel.dtype, device=dev).index_put((si_t, sj_t), sel)
    lens = torch.tensor([s.n_completion for s in samples], device=dev)
    mask = (torch.arange(L, device=dev)[None] < lens[:, None]).long()
    return logps, mask, (float(ent.sum()) if entropy else None)


@torch.no_grad()
def sample_completions(model, tok, prompts: list[list[int]], *, n: int, max_new_tokens: int,
                       temperature: float, top_p: float, seed: int,
                       synced: bool = False, fast: bool = True,
                       dtype: torch.dtype | None = None) -> list[tuple[list[int], bool]]:
    """``n`` completions per prompt (prompt after prompt): ``(ids, finished)`` with the ids cut
    after the first end-of-turn token (kept: the model learns to stop); ``finished`` is False when
    max_new_tokens ran out first. One batch for all prompts × n, static KV cache, adapter merged
    (:mod:`mindprint.backends.torch.sampling`); models it does not cover use ``generate`` on a
    left-padded batch (also with ``fast=False``); ``dtype`` casts the fast sampler's weights
    (``grpo.sampler_dtype``: bfloat16 halves the memory read per decoded token; ``generate`` keeps
    the model's dtype). Seeded without disturbing the global random stream. ``temperature = 0``
    decodes greedily. ``synced``: under FSDP every rank keeps stepping until all ranks are done
    (each step is a collective)."""
    dev = next(model.parameters()).device
    pad = tok.pad_token_id
    width = max(len(p) for p in prompts)
    rows = [p for p in prompts for _ in range(n)]
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    att = torch.zeros((len(rows), width), dtype=torch.long)
    for i, p in enumerate(rows):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        att[i, width - len(p):] = 1
    eos = end_of_turn_ids(tok)
    sampler = fast_sampler(model, dtype) if fast and not synced else None
    if sampler is not None:
        return sampler.sample(prompts, n=n, max_new_tokens=max_new_tokens, temperature=temperature,
                           top_p=top_p, seed=seed, eos=eos, pad=pad)
    kw = dict(max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad, use_cache=True)
    if synced:
        kw["synced_gpus"] = True
    if temperature > 0:
        kw.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
    else:
        kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    was_training = model.training
    model.eval()
    devices = [dev] if dev.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = model.generate(input_ids=ids.to(dev), attention_mask=att.to(dev), **kw)
    finally:
        model.train(was_training)
    result = []
    eos_set = set(eos)
    for row in out[:, width:].tolist():
        end = next((j for j, t in enumerate(row) if t in eos_set), None)
        result.append((row[:end + 1], True) if end is not None else (row, False))
    return result


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


class GRPOMethod:
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
        self._packed: bool | None = None      # prompt-shared packed rows (decided on first use)
        self.run_root = None

    # -- data ----------------------------------------------------------------------------------
    def _load(self, tokenizer, paths, what: str):
        cfg = self.cfg
        fmt = None if cfg.data.format == "auto" else cfg.data.format
        if fmt is not None and fmt != "prompt":
            raise DataError(f"data.format is '{fmt}' but method 'grpo' needs prompt data "
                            '({"prompt", "answer"?, "system"?} per line)')
        res = load_many(paths, fmt, system_prompt=cfg.data.system_prompt,
                        max_error_rate=cfg.data.max_error_rate, expect=("prompt",))
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
        needs_answer = {"voice_fidelity", "answer_similarity"} & set(cfg.grpo.rewards)
        if needs_answer and not any(p.record.answer for p in train):
            notes.append(f"data.train: no prompt has an `answer`, so {', '.join(sorted(needs_answer))} "
                         "score nothing")
        return PromptData(train, ev, notes)

    def on_setup(self, backend, data, log) -> None:
        self.log = log

    # -- rollout (before the micro-batches of a step) ------------------------------------------
    def _generate(self, backend, items: list[PromptItem], n: int, temperature: float, seed: int):
        g = self.cfg.grpo
        if hasattr(backend, "sample_completions"):      # backends with their own sampler (mlx)
            return backend.sample_completions([p.ids for p in items], n=n,
                                              max_new_tokens=g.max_completion_length,
                                              temperature=temperature, top_p=g.top_p, seed=seed)
        d = getattr(backend, "dist", None)
        kw = {"synced": True} if d is not None and d.fsdp else {}
        return _forward(backend, sample_completions, backend.tokenizer, [p.ids for p in items], n=n,
                        max_new_tokens=g.max_completion_length, temperature=temperature,
                        top_p=g.top_p, seed=seed, dtype=sampler_dtype(g.sampler_dtype, backend.model),
                        **kw)

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
        """``(log-probs, completion mask, entropy sum or None)`` of the samples' completion tokens:
        prompt-shared packed rows where the model honours them (the backend checks once), else one
        row per sample."""
        from ..backends.torch.model import _decoder_and_head

        t = self.cfg.grpo.temperature
        if hasattr(backend, "completion_logps"):         # backends that score rows themselves (mlx)
            return backend.completion_logps([s.ids for s in samples], [s.mask for s in samples], t,
                                            entropy=entropy)
        if self._packed is None:
            self._packed = (getattr(backend, "group_layout", "rows") == "shared_prompt"
                            and _decoder_and_head(backend.model)[0] is not None)
        if self._packed:
            return _forward(backend, packed_completion_logps, samples, backend.tokenizer.pad_token_id,
                            t, entropy=entropy)
        batch = backend.batch([s.ids for s in samples], [s.mask for s in samples])
        lp, ent = _forward(backend, completion_logps, batch, t, entropy=entropy)
        return lp, batch["loss_mask"], ent

    @torch.no_grad()
    def _side_logps(self, backend, samples: list[Sample], *, reference: bool) -> list[np.ndarray]:
        model = backend.model
        was_training = model.training
        model.eval()
        # the training forward's precision, so that old-policy log-probs match it
        amp = backend.autocast() if hasattr(backend, "autocast") else contextlib.nullcontext()
        try:
            with amp:
                if reference:
                    with backend.disabled_adapter():
                        lp, mask, _ = self._logps(backend, samples)
                else:
                    lp, mask, _ = self._logps(backend, samples)
        finally:
            model.train(was_training)
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
        d = getattr(backend, "dist", None)      # torchrun: each rank samples its own prompts
        rank_seed = 7919 * d.rank if d is not None else 0
        outs = self._generate(backend, items, G, g.temperature,       # the whole step at once
                              seed=self.cfg.train.seed * 1_000_003 + step * 1009 + rank_seed)
        t_gen = time.monotonic() - t0
        texts, table, total = self._score(backend, items, outs, G)
        valid = torch.tensor([t is not None for t in total], dtype=torch.float64)
        r = torch.tensor([t if t is not None else 0.0 for t in total], dtype=torch.float64)
        # advantages on the host in float64, whatever the backend (the same numbers on torch and mlx)
        adv, am = group_advantages(r, G, scale=g.scale_rewards, valid=valid, xp=xpmod.get("torch"))
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
        if d is not None:
            metrics = _across_ranks(d, metrics)
        self._rollout_metrics = metrics
        self._cache = (batches, metrics)
        if g.sample_every and (step == 0 or (step + 1) % g.sample_every == 0) \
                and (d is None or d.is_main):
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


def _forward(backend, fn, *args, **kwargs):
    """``fn(model, ...)`` through the backend (DDP / FSDP under torchrun)."""
    if hasattr(backend, "forward"):
        return backend.forward(fn, *args, **kwargs)
    return fn(backend.model, *args, **kwargs)


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
