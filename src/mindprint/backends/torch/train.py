"""The one PyTorch training loop.

Method-specific work (data preparation, micro-batch loss, eval metrics) is injected through a
method object (see :mod:`mindprint.methods.sft`). The loop owns: optimizer and schedule, exact
token-weighted gradient accumulation, clipping, evaluation, atomic checkpoints with exact resume
(optimizer, scheduler, RNG, data position), early stopping, the time cap, NaN stops and clean
interrupts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import resource
import signal
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ... import __version__, schedule
from ...config import Config, dump_yaml
from ...data.batching import StepSampler, eval_batches
from ...errors import MindprintError, TrainingStopped
from ...models import resolve
from ...outputs import RunDir, write_atomic
from ...progress import TrainProgress
from ...tracking import CallbackList, RunInfo, default_callbacks
from ..common import lr_lambda  # noqa: F401  (shared with the mlx loop)
from . import dist as D
from ..common import atomic_dir
from .adapters import load_adapter_weights, save_adapter
from .backend import TorchBackend
from .load import apply_liger, load_base, pick_device, pick_dtype
from .lora import add_lora


def make_optimizer(params, t, *, fused: bool = True) -> torch.optim.Optimizer:
    """AdamW; the fused kernel where this torch has one for the device (hundreds of small LoRA
    tensors make the per-tensor loop's overhead visible on CPU). FSDP's sharded parameters take
    the plain per-tensor path."""
    kw = dict(lr=t.lr, betas=tuple(t.adam_betas), eps=t.adam_eps, weight_decay=t.weight_decay)
    if not fused:
        return torch.optim.AdamW(params, foreach=False, **kw)
    try:
        return torch.optim.AdamW(params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, **kw)


def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "python": random.getstate(),
          "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _StopFlag:
    """First Ctrl-C / SIGTERM asks the loop to save and stop at the end of the step; a second
    Ctrl-C interrupts at once (without touching the last good checkpoint)."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def _handler(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handler)
            except ValueError:   # not the main thread
                pass
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


class Trainer:
    def __init__(self, cfg: Config, method, *, resume: bool = False, overwrite: bool = False,
                 log=print, callbacks: list | None = None, init_adapter: Path | None = None):
        self.cfg, self.method, self.log = cfg, method, log
        self.init_adapter = init_adapter     # start from these LoRA weights (a curriculum's last topic)
        # torchrun / accelerate launch: rank 0 alone writes the run directory (see dist.py)
        self.dist = self._init_dist()
        if self.dist is not None and not self.dist.is_main:
            self.log = log = _quiet
            callbacks = []
        self.run = RunDir(cfg.output_dir) if self.dist is None or self.dist.is_main \
            else _ReadOnlyRunDir(cfg.output_dir)
        # manifest.json + report_to trackers (mindprint.tracking); never able to stop a run
        self.callbacks = CallbackList(default_callbacks(cfg, log) if callbacks is None
                                      else callbacks, log)
        self.resume = resume
        problem = None
        if self.dist is None or self.dist.is_main:
            problem = self._check_run_dir(resume, overwrite)
        if self.dist is not None:
            problem = self.dist.broadcast(problem)
        if problem:
            raise MindprintError(problem)

    def _init_dist(self):
        if D.env_world_size() <= 1:
            return None
        if self.backend_name != "torch":
            raise MindprintError(f"backend {self.backend_name} runs in one process; start it without "
                                 "torchrun / accelerate launch (or use backend: torch)")
        return D.from_env(fsdp=self.cfg.train.fsdp)

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

    # -- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        t0 = time.monotonic()
        torch.set_num_threads(cfg.train.num_threads or self._default_threads())
        self.model_ref = resolve(cfg.model.name)
        quantize = getattr(cfg.model, "quantize", None)
        fsdp = self.dist is not None and self.dist.fsdp
        if cfg.train.fsdp and self.dist is None:
            self.log("warning: train.fsdp shards across processes; this is one process (start "
                     "it with torchrun --nproc_per_node N), so it trains unsharded")
        if fsdp and quantize:
            raise MindprintError("train.fsdp with model.quantize is not supported: use DDP "
                                 "(train.fsdp: false) for QLoRA across GPUs")
        device, dtype = pick_device(cfg.model.device), cfg.model.dtype
        if fsdp and dtype == "auto":     # the target device's default, not the CPU's
            dtype = "bfloat16" if pick_dtype("auto", device) == torch.bfloat16 else "float32"
        # FSDP: load on the CPU and let fully_shard move each rank's shard to the device
        base, self.tok = load_base(self.model_ref, dtype=dtype,
                                   device="cpu" if fsdp else cfg.model.device,
                                   attn_implementation=cfg.model.attn_implementation,
                                   **({"quantize": quantize} if quantize else {}))
        self.device = device if fsdp else next(base.parameters()).device
        self.data = self.method.prepare(self.tok)
        for note in self.data.notes:
            self.log(f"warning: {note}")
        # train.epochs → steps (schedule.resolve_steps)
        schedule.apply(cfg.train, len(self.data.train_lengths),
                       self.dist.world_size if self.dist is not None else 1, self.log)
        if cfg.train.gradient_checkpointing:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            base.enable_input_require_grads()
        apply_liger(base, getattr(cfg.train, "liger", False), device, self.log)
        self.model = add_lora(base, cfg.lora, cfg.train.seed)
        if self.init_adapter is not None:
            load_adapter_weights(self.model, self.init_adapter)
        self.model.train()
        self.runner = None
        if self.dist is None:
            self.backend = TorchBackend(self.model, self.tok)
        else:
            from ...reference import weights_hash

            whash = weights_hash(self.model)        # before sharding: the same on every rank
            self.runner = D.wrap(self.model, self.dist, self.device)
            self.backend = TorchBackend(self.model, self.tok, runner=self.runner, dist=self.dist,
                                        weights_hash=whash)
        if getattr(cfg.train, "mixed_precision", "no") == "bf16" and \
                next(self.model.parameters()).dtype == torch.float32:
            self.backend.amp_dtype = torch.bfloat16
        self.voice = None
        if cfg.eval.every:     # voice fidelity during training, see mindprint.evaluate.probe
            from ...evaluate.probe import VoiceProbe

            self.voice = VoiceProbe(cfg, self.tok)
        if hasattr(self.method, "on_setup"):
            self.method.on_setup(self.backend, self.data, self.log)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.params = params
        self.opt = make_optimizer(params, cfg.train, fused=not fsdp)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(cfg))
        self._init_loop_state()
        if self.resume:
            self._load_checkpoint(self.run.latest_checkpoint())
        else:
            random.seed(cfg.train.seed)
            np.random.seed(cfg.train.seed)
            torch.manual_seed(cfg.train.seed)
        if self.dist is None or self.dist.is_main:
            self.run.root.mkdir(parents=True, exist_ok=True)
            write_atomic(self.run.root / "config.yaml", dump_yaml(cfg))
        self.setup_s = time.monotonic() - t0
        self.callbacks.on_start(RunInfo(
            config=cfg, run_dir=self.run.root, backend="torch", device=str(self.device),
            model_spec=cfg.model.name, model_kind=self.model_ref.kind, model_path=self.model_ref.path,
            train=self.data.train, eval=self.data.eval, resumed=self.resume, step=self.step,
            log=self.log))

    def _default_threads(self) -> int:
        """All cores, shared between the processes of this node under torchrun; an explicit
        OMP_NUM_THREADS (a job scheduler's share, parallel test workers) wins in a single process
        (torchrun sets it to 1 on its own, so it is not read there)."""
        omp = os.environ.get("OMP_NUM_THREADS", "")
        if self.dist is None and omp.isdigit() and int(omp) > 0:
            return int(omp)
        n = os.cpu_count() or 1
        if self.dist is not None:
            n //= max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
        return max(n, 1)

    # -- loop state shared by every backend's trainer -----------------------------------------
    def _init_loop_state(self) -> None:
        t = self.cfg.train
        d = getattr(self, "dist", None)
        self.sampler = StepSampler(self.data.train_lengths, t.batch_size, t.grad_accum, t.seed,
                                   **({"world_size": d.world_size, "rank": d.rank} if d else {}))
        self.step = 0
        self.best = (math.inf, None)          # (eval_loss, step)
        self.bad_evals = 0
        self.first_eval = None
        self.last_eval = None
        self.last_step_metrics: dict = {}
        self.last_eval_metrics: dict = {}
        self.elapsed_before = 0.0
        self.tokens_seen = 0

    def _restore_loop_state(self, state: dict, path: Path) -> None:
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
    def _examples(self, idx):
        return [self.data.train[i] for i in idx]

    def train_step(self) -> dict:
        if self.dist is not None:
            return self._dist_train_step()
        micro = self.sampler.next_step()
        groups = [self._examples(m) for m in micro]
        if hasattr(self.method, "rollout"):     # RL: sample and score completions for this step
            groups = self.method.rollout(self.backend, groups, self.step)
        norm = sum(self.method.weight(g) for g in groups)
        loss_total, tokens, sums = 0.0, 0, {}
        for g in groups:
            with self.backend.autocast():
                loss, m = self.method.micro_loss(self.backend, g, norm)
            if not torch.isfinite(loss):
                raise TrainingStopped(self._nan_message("loss", float(loss.detach())))
            loss.backward()
            loss_total += float(loss.detach())
            tokens += sum(self.method.n_tokens(r) for r in g)
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
        return self._optimizer_step(loss_total, tokens, sums)

    def _optimizer_step(self, loss_total: float, tokens: int, sums: dict) -> dict:
        """Clip (or just measure) the gradient norm, step, and the step's record; shared by the
        single-process and the distributed step (``D.full`` is the identity off FSDP)."""
        if self.cfg.train.max_grad_norm:
            gn = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.train.max_grad_norm)
        else:
            gn = torch.linalg.vector_norm(torch.stack([D.full(p.grad.norm()) for p in self.params
                                                       if p.grad is not None]))
        gn = float(D.full(gn))
        if not math.isfinite(gn):
            raise TrainingStopped(self._nan_message("gradient norm", gn))
        lr = self.sched.get_last_lr()[0]
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_seen += tokens
        return {"loss": loss_total, "lr": lr, "grad_norm": gn, "tokens": tokens,
                "metrics": self.method.step_metrics(sums)}

    def _dist_train_step(self) -> dict:
        """One step across ranks: this rank's share of every global micro-batch, the normaliser
        summed over ranks, gradients reduced once per step (no_sync on the other micro-batches)."""
        d = self.dist
        micro = self.sampler.next_step()
        groups = [self._examples(m) for m in micro]
        if hasattr(self.method, "rollout"):     # RL: each rank samples for its own prompts
            groups = self.method.rollout(self.backend, groups, self.step)
        norm = _sum_over_ranks(d, sum(self.method.weight(g) for g in groups))
        loss_total, tokens, sums = 0.0, 0, {}
        for i, g in enumerate(groups):
            with self._grad_sync(i == len(groups) - 1):
                with self.backend.autocast():
                    loss, m = self.method.micro_loss(self.backend, g, norm)
                # DDP / FSDP average gradients over ranks: × world size makes it their sum
                (loss * d.world_size).backward()
            loss_total += float(loss.detach())
            tokens += sum(self.method.n_tokens(r) for r in g)
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
        sums = d.sum_dicts({**sums, "\0loss": loss_total, "\0tokens": float(tokens)})
        loss_total, tokens = sums.pop("\0loss"), int(sums.pop("\0tokens"))
        if not math.isfinite(loss_total):      # the same value on every rank: all stop together
            raise TrainingStopped(self._nan_message("loss", loss_total))
        return self._optimizer_step(loss_total, tokens, sums)

    @contextlib.contextmanager
    def _grad_sync(self, sync: bool):
        """Reduce gradients after this backward only when ``sync`` (the step's last micro-batch)."""
        if sync:
            yield
        elif self.dist.fsdp:
            self.runner.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                self.runner.set_requires_gradient_sync(True)
        else:
            with self.runner.no_sync():
                yield

    def _nan_message(self, what: str, value: float) -> str:
        last = self.run.latest_checkpoint()
        keep = f"; the last good checkpoint is {last}" if last else "; no checkpoint was written yet"
        return (f"{what} became {value} at step {self.step + 1}: training stopped{keep}. "
                f"Lower train.lr (now {self.cfg.train.lr}) or check the data")

    @torch.no_grad()
    def evaluate(self) -> dict:
        if not self.data.eval:
            return {}
        self.model.eval()
        sums: dict = {}
        lengths = [self.method.n_tokens(r) for r in self.data.eval]
        batches = eval_batches(lengths, self.cfg.train.eval_batch_size)
        if self.dist is not None:            # each rank its share; FSDP needs equal pass counts
            batches, extra = D.padded_share(self.dist, batches)
            for idx in extra:
                self.method.eval_sums(self.backend, [self.data.eval[i] for i in idx])
        for idx in batches:
            for k, v in self.method.eval_sums(self.backend, [self.data.eval[i] for i in idx]).items():
                sums[k] = sums.get(k, 0.0) + v
        self.model.train()
        if self.dist is not None:
            sums = self.dist.sum_dicts(sums)
        return self.method.eval_metrics(sums)

    # -- checkpoints ---------------------------------------------------------------------------
    def _state(self) -> dict:
        return {"step": self.step, "sampler": self.sampler.state(), "best": list(self.best),
                "bad_evals": self.bad_evals, "first_eval": self.first_eval,
                "last_eval": self.last_eval, "tokens_seen": self.tokens_seen,
                "elapsed_s": self.elapsed_before + (time.monotonic() - self.t_start),
                "mindprint_version": __version__}

    def save_checkpoint(self) -> Path:
        if self.dist is not None:
            return self._dist_save_checkpoint()
        path = self.run.checkpoint_path(self.step)
        with atomic_dir(path) as tmp:
            save_file({n: p.detach().contiguous().cpu() for n, p in self.model.named_parameters()
                       if p.requires_grad}, str(tmp / "trainable.safetensors"))
            torch.save({"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                        "rng": _rng_state()}, tmp / "optim.pt")
            (tmp / "state.json").write_text(json.dumps(self._state(), indent=2))
        self.run.prune_checkpoints(self.cfg.train.keep_last, self.best[1])
        self.run.write_metrics_csv()
        return path

    def _load_checkpoint(self, path: Path) -> None:
        if self.dist is not None:       # rank 0 reads, every rank gets it (no shared disk needed)
            state, weights, blob = self.dist.broadcast(
                _read_checkpoint(path) if self.dist.is_main else None)
        else:
            state, weights, blob = _read_checkpoint(path)
        named = dict(self.model.named_parameters())
        missing = [n for n in weights if n not in named]
        if missing:
            raise MindprintError(f"{path}: checkpoint does not match this config's LoRA layout "
                                 f"(e.g. {missing[0]}); resume with the config it was written with")
        with torch.no_grad():
            for n, t in weights.items():
                if self.dist is None:
                    named[n].copy_(t)
                else:
                    named[n].copy_(D.like(t, named[n]))
        optim = blob["optimizer"]
        if self.dist is not None and self.dist.fsdp:     # whole tensors → this rank's shards
            for i, st in optim["state"].items():
                p = self.params[int(i)]
                for k, v in st.items():
                    if k != "step" and torch.is_tensor(v) and v.shape == p.shape:
                        st[k] = D.like(v, p)
        self.opt.load_state_dict(optim)
        self.sched.load_state_dict(blob["scheduler"])
        rng = blob["rng"]
        ranks = blob.get("rng_ranks")
        if self.dist is not None and ranks and len(ranks) == self.dist.world_size:
            rng = ranks[self.dist.rank]     # same world size: each rank's own stream goes on
        _set_rng_state(rng)
        self._restore_loop_state(state, path)

    def _dist_save_checkpoint(self) -> Path:
        """Whole tensors gathered from every rank (FSDP shards included), written by rank 0 in
        the single-process format, so a resume may use any world size."""
        d = self.dist
        weights = {n: D.full(p.detach()).contiguous().cpu()
                   for n, p in self.model.named_parameters() if p.requires_grad}
        optim = self.opt.state_dict()
        if d.fsdp:       # state_dict() shares the live per-parameter dicts: copy before replacing
            optim["state"] = {i: {k: v.full_tensor().cpu() if D.is_dtensor(v) else v
                                  for k, v in st.items()} for i, st in optim["state"].items()}
        rngs = d.gather(_rng_state())
        path = self.run.checkpoint_path(self.step)
        if d.is_main:
            with atomic_dir(path) as tmp:
                save_file(weights, str(tmp / "trainable.safetensors"))
                torch.save({"optimizer": optim, "scheduler": self.sched.state_dict(),
                            "rng": rngs[0], "rng_ranks": rngs}, tmp / "optim.pt")
                (tmp / "state.json").write_text(json.dumps(
                    {**self._state(), "world_size": d.world_size}, indent=2))
            self.run.prune_checkpoints(self.cfg.train.keep_last, self.best[1])
            self.run.write_metrics_csv()
        d.barrier()
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

    def train(self) -> dict:
        cfg = self.cfg.train
        self.t_start = time.monotonic()
        progress = TrainProgress(cfg.max_steps, self.step, desc=f"{self.cfg.method} train",
                                 **({"stream": open(os.devnull, "w")}
                                    if self.dist is not None and not self.dist.is_main else {}))
        reason = "max_steps"
        window_t, window_tok = time.monotonic(), 0
        losses = []
        try:
            with _StopFlag() as stop:
                if cfg.eval_at_start and self.step == 0 and self.data.eval:
                    ev = self.evaluate()
                    self._record_eval(ev)
                    self.run.append_metrics({"step": 0, **ev})
                    self.callbacks.on_eval({"step": 0, **ev})
                    progress.note(f"step 0: {_eval_line(ev)}")
                if self.voice is not None and cfg.eval_at_start and self.step == 0:
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
                    stop_now = False
                    is_last = self.step == cfg.max_steps
                    if (cfg.eval_every and self.step % cfg.eval_every == 0) or is_last:
                        ev = self.evaluate()
                        if ev:
                            stop_now = self._record_eval(ev)
                            self.run.append_metrics({"step": self.step, **ev})
                            self.callbacks.on_eval({"step": self.step, **ev})
                            progress.note(f"step {self.step}: {_eval_line(ev)}")
                            if stop_now:
                                reason = "early_stopping"
                    if self.voice is not None and (self.voice.due(self.step) or is_last):
                        self._probe_voice(progress)
                    progress.update(self.step, m["loss"], tps)
                    timed_out = cfg.max_minutes and self._elapsed() >= cfg.max_minutes * 60
                    if self.dist is not None:     # one decision for every rank
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
        row = {"step": self.step, **self.voice(self.model)}
        self.run.append_metrics(row)
        progress.note(f"step {self.step}: voice fidelity {row['voice_fidelity']:.4f}")

    def _elapsed(self) -> float:
        return self.elapsed_before + (time.monotonic() - self.t_start)

    backend_name = "torch"

    def save_final_adapter(self, meta: dict) -> dict:
        """Write the run's adapter; return extra summary entries (the mlx loop adds its format)."""
        if self.dist is None:
            save_adapter(self.model, self.run.adapter, meta)
            return {}
        whole = {n: D.full(p.detach()).cpu() for n, p in self.model.named_parameters()
                 if p.requires_grad} if self.dist.fsdp else None
        if self.dist.is_main:
            save_adapter(self.model, self.run.adapter, meta, state_dict=whole)
        self.dist.barrier()
        return {"world_size": self.dist.world_size, "fsdp": self.dist.fsdp}

    def peak_memory(self) -> float:
        return peak_memory_mb(self.device)

    def finish(self, reason: str, losses: list[float]) -> dict:
        meta = {"base_model": self.cfg.model.name, "base_model_path": self.model_ref.path,
                "method": self.cfg.method, "step": self.step, "mindprint_version": __version__}
        if self.backend_name != "torch":
            meta["backend"] = self.backend_name
        extra = self.save_final_adapter(meta)
        self.run.write_metrics_csv()
        wall = self._elapsed()
        tail = losses[-10:]
        summary = {
            "method": self.cfg.method, "backend": self.backend_name, "model": self.cfg.model.name,
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
            "peak_memory_mb": self.peak_memory(),
            "wall_s": wall, "setup_s": self.setup_s,
            "device": str(self.device),
            "adapter": str(self.run.adapter), **extra, "output_dir": str(self.run.root),
            # the method's own numbers: last logged step (e.g. rewards/margin) and last eval
            "final_train_metrics": self.last_step_metrics,
            "final_eval_metrics": self.last_eval_metrics,
        }
        self.run.write_json("summary.json", summary)
        self.callbacks.on_end(summary, "interrupted" if reason == "interrupted" else "completed")
        return summary


def _read_checkpoint(path: Path) -> tuple[dict, dict, dict]:
    return (json.loads((path / "state.json").read_text()),
            load_file(str(path / "trainable.safetensors")),
            torch.load(path / "optim.pt", weights_only=False))


def _sum_over_ranks(d, norm):
    """A step normaliser (a number or a dataclass of numbers) summed over ranks."""
    if dataclasses.is_dataclass(norm):
        names = [f.name for f in dataclasses.fields(norm)]
        return type(norm)(**dict(zip(names, d.sum_floats([float(getattr(norm, n)) for n in names]))))
    return type(norm)(d.sum_floats([float(norm)])[0])


def _quiet(*args, **kwargs) -> None:
    """The log of ranks other than 0."""


class _ReadOnlyRunDir(RunDir):
    """The run directory as ranks other than 0 see it: readable, never written."""

    def clear(self) -> None: ...
    def append_metrics(self, row: dict) -> None: ...
    def truncate_metrics(self, after_step: int) -> None: ...
    def write_metrics_csv(self) -> None: ...
    def write_json(self, name: str, data: dict) -> None: ...
    def prune_checkpoints(self, keep_last: int, best_step: int | None) -> None: ...


def _eval_line(ev: dict) -> str:
    parts = [f"eval_loss {ev['eval_loss']:.4f}"]
    if "eval_ppl" in ev:
        parts.append(f"(ppl {ev['eval_ppl']:.2f})")
    if "eval_kl" in ev:
        parts.append(f"kl to base {ev['eval_kl']:.4f}")
    if "eval_pref_accuracy" in ev:
        parts.append(f"pref acc {ev['eval_pref_accuracy']:.3f}")
    return " ".join(parts)


class Interrupted(MindprintError):
    exit_code = 130

    def __init__(self, summary: dict):
        super().__init__(f"interrupted at step {summary['steps']}: checkpoint and adapter saved "
                         f"in {summary['output_dir']}; continue with --resume")
        self.summary = summary


def run_training(cfg: Config, *, resume: bool = False, overwrite: bool = False, log=print,
                 callbacks: list | None = None, init_adapter: Path | None = None) -> dict:
    from ...methods import get_method

    method = get_method(cfg)
    trainer = Trainer(cfg, method, resume=resume, overwrite=overwrite, log=log, callbacks=callbacks,
                      init_adapter=init_adapter)
    trainer.setup()
    summary = trainer.train()
    if trainer.dist is not None:
        trainer.dist.barrier()     # rank 0 has written summary.json
    return summary
