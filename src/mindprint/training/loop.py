"""The one training loop, for every backend.

The loop owns what does not depend on the framework: the run directory (existing runs, resume),
data preparation through the method, the step sampler, the evaluation cadence, early stopping,
the time cap, clean interrupts (Ctrl-C / SIGTERM save and stop), NaN stops, metrics rows,
checkpoint cadence and pruning, the summary and the callbacks. Everything framework-specific is
a *stepper* (:class:`~.stepper.Stepper`: loading, adapters, the optimizer step, eval mode,
checkpoint files, the final adapter), composed in, as mlx-lm's tuner injects its loss and
iterator and torchtune writes its recipes against Protocols; a method (:mod:`mindprint.methods`)
is injected the same way.

A single process is the distributed world of one (``backends.common.LocalDist``): every
collective the loop calls (``any_flags``, ``sum_dicts``, ``broadcast``, ``barrier``) is then the
identity, so there is one code path, not a single-process one and a torchrun one.

Order of setup (it fixes the random streams, so exact resume depends on it): load the base and
its tokenizer → the method prepares data → ``train.epochs`` becomes steps → adapters, backend
and optimizer → voice probe → the method's own setup (reference passes) → sampler → restore a
checkpoint, or seed python / numpy / the framework → ``config.yaml`` → callbacks.
"""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .. import __version__, schedule
from ..backends.common import padded_share
from ..config import Config, dump_yaml
from ..data.batching import StepSampler, eval_batches
from ..errors import MindprintError, TrainingStopped
from ..models import resolve
from ..outputs import RunDir, write_atomic
from ..progress import progress_bar
from ..tracking import CallbackList, RunInfo
from .callbacks import default_callbacks
from .ranks import ReadOnlyRunDir, quiet, sum_over_ranks
from .stepper import stepper_class
from .stop import Interrupted, StopFlag


class Trainer:
    """The loop for ``cfg`` and ``method`` with ``stepper_cls`` (default: ``cfg.backend``'s)."""

    def __init__(self, cfg: Config, method, *, stepper_cls: type | None = None,
                 resume: bool = False, overwrite: bool = False, log=print,
                 callbacks: list | None = None, init_adapter: Path | None = None,
                 voice_probe: Callable | None = None):
        self.cfg, self.method = cfg, method
        # eval.every's probe, made by the caller (it generates and scores text: an app's job)
        self.make_voice_probe = voice_probe
        self.init_adapter = init_adapter     # start from these LoRA weights (a curriculum's last topic)
        stepper_cls = stepper_cls or stepper_class(cfg.backend)
        # torchrun / accelerate launch: rank 0 alone speaks and writes the run directory
        self.dist = stepper_cls.world(cfg)
        if not self.dist.is_main:
            log, callbacks = quiet, []
        self.log = log
        self.stepper = stepper_cls(cfg, method, self.dist, log)
        self.run = RunDir(cfg.output_dir) if self.dist.is_main else ReadOnlyRunDir(cfg.output_dir)
        # manifest.json + report_to trackers (mindprint.tracking); never able to stop a run
        self.callbacks = CallbackList(default_callbacks(cfg, log) if callbacks is None
                                      else callbacks, log)
        self.resume = resume
        problem = self._check_run_dir(resume, overwrite) if self.dist.is_main else None
        problem = self.dist.broadcast(problem)
        if problem:
            raise MindprintError(problem)

    def _check_run_dir(self, resume: bool, overwrite: bool) -> str | None:
        cfg = self.cfg
        if self.run.has_run() and not resume:
            if not overwrite:
                return (f"{cfg.output_dir} already holds a run: pass --resume to continue it, "
                        "--overwrite to replace it, or choose another output_dir")
            self.run.clear()
        if resume and self.run.latest_checkpoint() is None:
            return f"--resume: no checkpoint in {cfg.output_dir}/checkpoints"
        return None

    @property
    def model(self):
        return self.stepper.model

    # -- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg, st = self.cfg, self.stepper
        t0 = time.monotonic()
        self.model_ref = resolve(cfg.model.name)
        self.tok = st.load(self.model_ref)
        self.data = self.method.prepare(self.tok)
        for note in self.data.notes:
            self.log(f"warning: {note}")
        # train.epochs → steps (schedule.resolve_steps)
        schedule.apply(cfg.train, len(self.data.train_lengths), self.dist.world_size, self.log)
        self.backend = st.attach(self.init_adapter)
        self.voice = self._voice_probe() if cfg.eval.every else None
        self.method.on_setup(self.backend, self.data, self.log)
        t = cfg.train
        self.sampler = StepSampler(self.data.train_lengths, t.batch_size, t.grad_accum, t.seed,
                                   world_size=self.dist.world_size, rank=self.dist.rank)
        self.step = 0
        self.best = (math.inf, None)          # (eval_loss, step)
        self.bad_evals = 0
        self.first_eval = self.last_eval = None
        self.last_step_metrics: dict = {}
        self.last_eval_metrics: dict = {}
        self.elapsed_before = 0.0
        self.tokens_seen = 0
        if self.resume:
            path = self.run.latest_checkpoint()
            self._restore(st.load_checkpoint(path), path)
        else:
            random.seed(t.seed)
            np.random.seed(t.seed)
            st.seed(t.seed)
        if self.dist.is_main:
            self.run.root.mkdir(parents=True, exist_ok=True)
            write_atomic(self.run.root / "config.yaml", dump_yaml(cfg))
        self.setup_s = time.monotonic() - t0
        self.callbacks.on_start(RunInfo(
            config=cfg, run_dir=self.run.root, backend=st.name, device=str(st.device),
            model_spec=cfg.model.name, model_kind=self.model_ref.kind, model_path=self.model_ref.path,
            train=self.data.train, eval=self.data.eval, resumed=self.resume, step=self.step,
            log=self.log))

    def _voice_probe(self):
        if self.make_voice_probe is None:
            self.log("warning: eval.every: this run was started without a voice probe (pass "
                     "voice_probe= to run_training; mindprint.train and the CLI do); skipped")
            return None
        return self.stepper.voice_probe(self.tok, self.make_voice_probe)

    def _restore(self, state: dict, path: Path) -> None:
        self.step = state["step"]
        note = self.sampler.load_state(state["sampler"])
        if note:
            self.log(f"warning: {note}")
        self.best = (state["best"][0], state["best"][1])
        self.bad_evals = state["bad_evals"]
        self.first_eval = state["first_eval"]
        self.last_eval = state["last_eval"]
        self.tokens_seen = state["tokens_seen"]
        self.elapsed_before = state["elapsed_s"]
        self.run.truncate_metrics(self.step)
        self.log(f"resumed from {path} (step {self.step})")

    # -- one step ------------------------------------------------------------------------------
    def train_step(self) -> dict:
        """One optimizer step: this rank's share of every global micro-batch (all of it in one
        process), the method's rollout (RL), the normaliser summed over ranks, the stepper's
        update."""
        self.stepper.begin_step(self.step)
        groups = [[self.data.train[i] for i in m] for m in self.sampler.next_step()]
        # RL samples here, each rank for its own prompts; other methods return groups as they are
        groups = self.method.rollout(self.backend, groups, self.step)
        norm = sum_over_ranks(self.dist, sum(self.method.weight(g) for g in groups))
        out = self.stepper.step(groups, norm, self._check_finite)
        self.step += 1
        self.tokens_seen += out["tokens"]
        return {"loss": out["loss"], "lr": out["lr"], "grad_norm": out["grad_norm"],
                "tokens": out["tokens"], "metrics": self.method.step_metrics(out["sums"])}

    def _check_finite(self, what: str, value: float) -> None:
        if not math.isfinite(value):
            last = self.run.latest_checkpoint()
            keep = f"; the last good checkpoint is {last}" if last else \
                "; no checkpoint was written yet"
            raise TrainingStopped(f"{what} became {value} at step {self.step + 1}: training "
                                  f"stopped{keep}. Lower train.lr (now {self.cfg.train.lr}) or "
                                  "check the data")

    def evaluate(self) -> dict:
        """The method's eval metrics over data.eval: each rank its share of the batches (FSDP
        ranks make equal pass counts), sums added over ranks."""
        if not self.data.eval:
            return {}
        lengths = [self.method.n_tokens(r) for r in self.data.eval]
        batches, extra = padded_share(self.dist,
                                      eval_batches(lengths, self.cfg.train.eval_batch_size))
        sums: dict = {}
        with self.backend.inference():     # eval mode, no gradient; training mode after
            for idx in extra:
                self.method.eval_sums(self.backend, [self.data.eval[i] for i in idx])
            for idx in batches:
                for k, v in self.method.eval_sums(self.backend,
                                                  [self.data.eval[i] for i in idx]).items():
                    sums[k] = sums.get(k, 0.0) + v
        return self.method.eval_metrics(self.dist.sum_dicts(sums))

    # -- checkpoints ---------------------------------------------------------------------------
    def _state(self) -> dict:
        return {"step": self.step, "sampler": self.sampler.state(), "best": list(self.best),
                "bad_evals": self.bad_evals, "first_eval": self.first_eval,
                "last_eval": self.last_eval, "tokens_seen": self.tokens_seen,
                "elapsed_s": self.elapsed_before + (time.monotonic() - self.t_start),
                "mindprint_version": __version__}

    def save_checkpoint(self) -> Path:
        path = self.run.checkpoint_path(self.step)
        self.stepper.save(path, self._state())
        self.run.prune_checkpoints(self.cfg.train.keep_last, self.best[1])
        self.run.write_metrics_csv()
        self.dist.barrier()
        return path

    # -- the loop ------------------------------------------------------------------------------
    def _record_eval(self, metrics: dict) -> bool:
        """Store an eval; return True when early stopping says stop."""
        loss = metrics["eval_loss"]
        self.last_eval_metrics = metrics
        if self.first_eval is None:
            self.first_eval = loss
        self.last_eval = loss
        es = self.cfg.train.early_stopping
        if loss < self.best[0] - es.min_delta:
            self.best = (loss, self.step)
            self.bad_evals = 0
        elif self.step > 0:
            self.bad_evals += 1
        return bool(es.patience and self.step >= es.min_steps and self.bad_evals >= es.patience)

    def _eval_row(self, progress) -> bool:
        """Evaluate, record and log; True when early stopping says stop."""
        ev = self.evaluate()
        if not ev:
            return False
        stop = self._record_eval(ev)
        self.run.append_metrics({"step": self.step, **ev})
        self.callbacks.on_eval({"step": self.step, **ev})
        progress.note(f"step {self.step}: {_eval_line(ev)}")
        return stop

    def train(self) -> dict:
        cfg = self.cfg.train
        self.t_start = time.monotonic()
        progress = progress_bar(cfg.max_steps, self.step, desc=f"{self.cfg.method} train",
                                **({} if self.dist.is_main else {"stream": open(os.devnull, "w")}))
        reason = "max_steps"
        window_t, window_tok = time.monotonic(), 0
        # a resumed run's earlier steps count too (resumed at its last step, none runs here)
        losses = [r["loss"] for r in self.run.read_metrics() if "loss" in r]
        try:
            with StopFlag() as stop:
                if cfg.eval_at_start and self.step == 0:
                    self._eval_row(progress)
                    if self.voice is not None:
                        self._probe_voice(progress)
                while self.step < cfg.max_steps:
                    m = self.train_step()
                    losses.append(m["loss"])
                    self.last_step_metrics = m["metrics"]
                    window_tok += m["tokens"]
                    now = time.monotonic()
                    tps = window_tok / max(now - window_t, 1e-9)
                    if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                        row = {"step": self.step, "loss": m["loss"], "lr": m["lr"],
                               "grad_norm": m["grad_norm"], "tokens_per_s": tps,
                               "epoch": self.sampler.epoch, "elapsed_s": self._elapsed(),
                               **m["metrics"]}
                        self.run.append_metrics(row)
                        self.callbacks.on_log(row)
                        window_t, window_tok = now, 0
                    is_last = self.step == cfg.max_steps
                    stop_now = False
                    if (cfg.eval_every and self.step % cfg.eval_every == 0) or is_last:
                        stop_now = self._eval_row(progress)
                        if stop_now:
                            reason = "early_stopping"
                    if self.voice is not None and (self.voice.due(self.step) or is_last):
                        self._probe_voice(progress)
                    progress.update(self.step, m["loss"], tps)
                    timed_out = cfg.max_minutes and self._elapsed() >= cfg.max_minutes * 60
                    # one decision for every rank
                    timed_out, stop.requested = self.dist.any_flags(timed_out, stop.requested)
                    if timed_out and not stop_now:
                        reason = "time_cap"
                    if stop.requested:
                        reason = "interrupted"
                    new_best = self.best[1] == self.step     # keep the best eval restorable
                    if (cfg.save_every and self.step % cfg.save_every == 0) or is_last \
                            or new_best or stop_now or timed_out or stop.requested:
                        self.save_checkpoint()
                    if stop_now or timed_out or stop.requested:
                        break
        except BaseException as e:
            self.callbacks.fail(e, self.step)     # manifest: failed / interrupted
            raise
        finally:
            progress.close()
        summary = self.finish(reason, losses)
        if reason == "interrupted":
            raise Interrupted(summary)
        return summary

    def _probe_voice(self, progress) -> None:
        row = {"step": self.step, **self.voice(self.stepper.model)}
        self.run.append_metrics(row)
        vm = row.get("voice_match")
        progress.note(f"step {self.step}: content similarity {row['content_similarity']:.4f}"
                      + (f", voice match {vm:.3f}" if vm is not None else ""))

    def _elapsed(self) -> float:
        return self.elapsed_before + (time.monotonic() - self.t_start)

    def finish(self, reason: str, losses: list[float]) -> dict:
        name = self.stepper.name
        meta = {"base_model": self.cfg.model.name, "base_model_path": self.model_ref.path,
                "method": self.cfg.method, "step": self.step, "mindprint_version": __version__}
        if name != "torch":
            meta["backend"] = name
        extra = self.stepper.save_adapter(self.run.adapter, meta, self.run.root)
        self.run.write_metrics_csv()
        wall = self._elapsed()
        tail = losses[-10:]
        summary = {
            "method": self.cfg.method, "backend": name, "model": self.cfg.model.name,
            "steps": self.step, "stopped": reason,
            "train_loss": losses[-1] if losses else None,
            "train_loss_last10": sum(tail) / len(tail) if tail else None,
            "first_eval_loss": self.first_eval, "final_eval_loss": self.last_eval,
            "best_eval_loss": self.best[0] if self.best[1] is not None else None,
            "best_step": self.best[1],
            "best_checkpoint": (str(self.run.checkpoint_path(self.best[1]))
                                if self.best[1] else None),
            "tokens_per_s": self.tokens_seen / wall if wall > 0 else None,
            "tokens_seen": self.tokens_seen,
            "peak_memory_mb": self.stepper.peak_memory_mb(),
            "wall_s": wall, "setup_s": self.setup_s,
            "device": str(self.stepper.device),
            "adapter": str(self.run.adapter), **extra, "output_dir": str(self.run.root),
            # the method's own numbers: last logged step (e.g. rewards/margin) and last eval
            "final_train_metrics": self.last_step_metrics,
            "final_eval_metrics": self.last_eval_metrics,
        }
        self.run.write_json("summary.json", summary)
        self.callbacks.on_end(summary, "interrupted" if reason == "interrupted" else "completed")
        return summary


def _eval_line(ev: dict) -> str:
    parts = [f"eval_loss {ev['eval_loss']:.4f}"]
    if "eval_ppl" in ev:
        parts.append(f"(ppl {ev['eval_ppl']:.2f})")
    if "eval_kl" in ev:
        parts.append(f"kl to base {ev['eval_kl']:.4f}")
    if "eval_pref_accuracy" in ev:
        parts.append(f"pref acc {ev['eval_pref_accuracy']:.3f}")
    return " ".join(parts)
