"""The one MLX training loop.

It is the torch :class:`~mindprint.backends.torch.train.Trainer`'s loop — evaluation cadence,
early stopping, the time cap, NaN stops, clean interrupts, metrics rows, checkpoint cadence and
callbacks are inherited unchanged — with the framework-specific parts done in MLX: loading,
the optimizer step (``mx.value_and_grad`` over the method's ``micro_loss``, token-weighted
accumulation by summing gradients of losses already divided by the step's normaliser, clipping,
AdamW with bias correction as torch's), checkpoints and the adapters written at the end
(PEFT format in ``adapter/``, mlx-lm format in ``adapter-mlx/``).
"""

from __future__ import annotations

import json
import math
import pickle
import random
import resource
import time
from pathlib import Path

import numpy as np

import mlx.core as mx
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from ... import schedule
from ...config import Config, dump_yaml
from ...data.batching import eval_batches
from ...errors import MindprintError, TrainingStopped
from ...models import resolve
from ...outputs import write_atomic
from ...tracking import RunInfo
from ..common import atomic_dir, lr_lambda
from ..torch.train import Interrupted, Trainer
from .model import MLXBackend, adapter_weights, add_lora, load_adapter_weights, load_base

MLX_ADAPTER = "adapter-mlx"


def device_name() -> str:
    return "mlx-cpu" if mx.default_device() == mx.cpu else "mlx-gpu"


def peak_memory_mb() -> float:
    if mx.default_device() == mx.gpu:
        return mx.get_peak_memory() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def global_norm(grads) -> mx.array:
    return mx.sqrt(sum(mx.sum(mx.square(g.astype(mx.float32))) for _, g in tree_flatten(grads)))


class MLXTrainer(Trainer):
    backend_name = "mlx"

    # -- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        t0 = time.monotonic()
        self.model_ref = resolve(cfg.model.name)
        self.model, self.tok = load_base(self.model_ref, dtype=cfg.model.dtype,
                                         quantize=getattr(cfg.model, "quantize", None))
        self.device = device_name()
        self.data = self.method.prepare(self.tok)
        for note in self.data.notes:
            self.log(f"warning: {note}")
        # train.epochs → steps (schedule.resolve_steps)
        schedule.apply(cfg.train, len(self.data.train_lengths), 1, self.log)
        if cfg.train.gradient_checkpointing:
            self.log("warning: train.gradient_checkpointing is not used by the mlx backend")
        self.lora = add_lora(self.model, cfg.lora, cfg.train.seed)
        if self.init_adapter is not None:
            load_adapter_weights(self.model, self.init_adapter)
        self.model.train()
        self.backend = MLXBackend(self.model, self.tok, self.lora)
        self.voice = None
        if cfg.eval.every:
            self.log("warning: eval.every (voice probes during training) runs on the torch "
                     "backend only; skipped")
        if hasattr(self.method, "on_setup"):
            self.method.on_setup(self.backend, self.data, self.log)
        t = cfg.train
        self.lr_f = lr_lambda(cfg)
        self.opt = optim.AdamW(learning_rate=t.lr, betas=list(t.adam_betas), eps=t.adam_eps,
                               weight_decay=t.weight_decay, bias_correction=True)
        self._init_loop_state()
        if self.resume:
            self._load_checkpoint(self.run.latest_checkpoint())
        else:
            random.seed(t.seed)
            np.random.seed(t.seed)
            mx.random.seed(t.seed)
        self.run.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.run.root / "config.yaml", dump_yaml(cfg))
        self.setup_s = time.monotonic() - t0
        self.callbacks.on_start(RunInfo(
            config=cfg, run_dir=self.run.root, backend="mlx", device=self.device,
            model_spec=cfg.model.name, model_kind=self.model_ref.kind, model_path=self.model_ref.path,
            train=self.data.train, eval=self.data.eval, resumed=self.resume, step=self.step,
            log=self.log))

    # -- one step ------------------------------------------------------------------------------
    def micro_grads(self, examples, norm):
        """(loss, metrics, gradients of the trainable parameters) of one micro-batch."""
        box: dict = {}

        def f(params):
            self.model.update(params)
            loss, m = self.method.micro_loss(self.backend, examples, norm)
            box["m"] = m
            return loss

        loss, grads = mx.value_and_grad(f)(self.model.trainable_parameters())
        return loss, box["m"], grads

    def train_step(self) -> dict:
        # mlx's global key cannot be restored from a checkpoint, so every step seeds it from
        # (seed, step): LoRA dropout is then the same in a resumed run as in an unbroken one
        mx.random.seed(self.cfg.train.seed * 1_000_003 + self.step)
        micro = self.sampler.next_step()
        groups = [self._examples(m) for m in micro]
        if hasattr(self.method, "rollout"):     # RL: sample and score completions for this step
            groups = self.method.rollout(self.backend, groups, self.step)
        norm = sum(self.method.weight(g) for g in groups)
        loss_total, tokens, sums, acc = 0.0, 0, {}, None
        for g in groups:
            loss, m, grads = self.micro_grads(g, norm)
            acc = grads if acc is None else tree_map(mx.add, acc, grads)
            mx.eval(loss, acc)
            value = float(loss.item())
            if not math.isfinite(value):
                raise TrainingStopped(self._nan_message("loss", value))
            loss_total += value
            tokens += sum(self.method.n_tokens(r) for r in g)
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
        if self.cfg.train.max_grad_norm:
            acc, gn = optim.clip_grad_norm(acc, self.cfg.train.max_grad_norm)
        else:
            gn = global_norm(acc)
        gn = float(gn.item())
        if not math.isfinite(gn):
            raise TrainingStopped(self._nan_message("gradient norm", gn))
        lr = self.cfg.train.lr * self.lr_f(self.step)
        self.opt.learning_rate = lr
        self.opt.update(self.model, acc)
        mx.eval(self.model.parameters(), self.opt.state)
        self.step += 1
        self.tokens_seen += tokens
        return {"loss": loss_total, "lr": lr, "grad_norm": gn, "tokens": tokens,
                "metrics": self.method.step_metrics(sums)}

    def evaluate(self) -> dict:
        if not self.data.eval:
            return {}
        self.model.eval()
        sums: dict = {}
        lengths = [self.method.n_tokens(r) for r in self.data.eval]
        try:
            for idx in eval_batches(lengths, self.cfg.train.eval_batch_size):
                for k, v in self.method.eval_sums(self.backend,
                                                  [self.data.eval[i] for i in idx]).items():
                    sums[k] = sums.get(k, 0.0) + v
        finally:
            self.model.train()
        return self.method.eval_metrics(sums)

    # -- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        path = self.run.checkpoint_path(self.step)
        with atomic_dir(path) as tmp:
            mx.save_safetensors(str(tmp / "trainable.safetensors"), adapter_weights(self.model))
            mx.save_safetensors(str(tmp / "optim.safetensors"), dict(tree_flatten(self.opt.state)))
            with open(tmp / "rng.pkl", "wb") as f:
                pickle.dump({"python": random.getstate(), "numpy": np.random.get_state()}, f)
            (tmp / "state.json").write_text(json.dumps(self._state(), indent=2))
        self.run.prune_checkpoints(self.cfg.train.keep_last, self.best[1])
        self.run.write_metrics_csv()
        return path

    def _load_checkpoint(self, path: Path) -> None:
        state = json.loads((path / "state.json").read_text())
        weights = mx.load(str(path / "trainable.safetensors"))
        own = adapter_weights(self.model)
        if set(weights) != set(own):
            odd = sorted(set(weights) ^ set(own))[0]
            raise MindprintError(f"{path}: checkpoint does not match this config's LoRA layout "
                                 f"(e.g. {odd}); resume with the config it was written with")
        self.model.load_weights(list(weights.items()), strict=False)
        flat = mx.load(str(path / "optim.safetensors"))
        self.opt.state = tree_unflatten(list(flat.items()))
        with open(path / "rng.pkl", "rb") as f:
            rng = pickle.load(f)
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        mx.eval(self.model.parameters(), self.opt.state)
        self._restore_loop_state(state, path)

    # -- the end -------------------------------------------------------------------------------
    backend_name = "mlx"

    def save_final_adapter(self, meta: dict) -> dict:
        """PEFT format in adapter/ plus mlx-lm's in adapter-mlx/."""
        self.backend.save_adapter(self.run.adapter, meta, mlx_path=self.run.root / MLX_ADAPTER)
        return {"adapter_mlx": str(self.run.root / MLX_ADAPTER)}

    def peak_memory(self) -> float:
        return peak_memory_mb()


MLX_METHODS = ("sft", "kl_sft", "dpo", "ipo", "orpo", "simpo", "kto", "grpo")


def check_method(method: str) -> None:
    if method not in MLX_METHODS:
        raise MindprintError(f"method '{method}' does not run on the mlx backend yet; on mlx: "
                             f"{', '.join(MLX_METHODS)} (or use backend: torch)")


def run_training(cfg: Config, *, resume: bool = False, overwrite: bool = False, log=print,
                 callbacks: list | None = None, init_adapter: Path | None = None) -> dict:
    from ...methods import get_method

    check_method(cfg.method)
    method = get_method(cfg)
    trainer = MLXTrainer(cfg, method, resume=resume, overwrite=overwrite, log=log,
                         callbacks=callbacks, init_adapter=init_adapter)
    trainer.setup()
    return trainer.train()


__all__ = ["MLXTrainer", "run_training", "Interrupted"]
