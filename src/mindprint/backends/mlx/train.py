"""The MLX stepper: what the one training loop (:mod:`mindprint.training.loop`) needs done in
MLX — loading (mlx-lm), the optimizer step (``mx.value_and_grad`` over the method's
``micro_loss``, token-weighted accumulation by summing gradients of losses already divided by the
step's normaliser, clipping, AdamW with bias correction as torch's), eval mode, checkpoints, and
the adapters written at the end (PEFT format in ``adapter/``, mlx-lm format in ``adapter-mlx/``).

MLX runs in one process: its world is the world of one. This module never imports torch.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import resource
from pathlib import Path

import numpy as np

import mlx.core as mx
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from ...config import Config
from ...errors import MindprintError
from ..common import LOCAL, atomic_dir, lr_lambda
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


class MLXStepper:
    """The :class:`~mindprint.training.loop.Stepper` of the mlx backend."""

    name = "mlx"

    @staticmethod
    def world(cfg: Config):
        """The world of one; a torchrun / accelerate launch start is refused."""
        try:
            ranks = int(os.environ.get("WORLD_SIZE", "1"))
        except ValueError:
            ranks = 1
        if ranks > 1:
            raise MindprintError("backend mlx runs in one process; start it without torchrun / "
                                 "accelerate launch (or use backend: torch)")
        return LOCAL

    def __init__(self, cfg: Config, method, dist, log=print):
        self.cfg, self.method, self.dist, self.log = cfg, method, dist, log

    # -- setup ---------------------------------------------------------------------------------
    def load(self, model_ref):
        self.model, self.tok = load_base(model_ref, dtype=self.cfg.model.dtype,
                                         quantize=self.cfg.model.quantize)
        self.device = device_name()
        return self.tok

    def attach(self, init_adapter: Path | None):
        cfg = self.cfg
        if cfg.train.gradient_checkpointing:
            self.log("warning: train.gradient_checkpointing is not used by the mlx backend")
        self.lora = add_lora(self.model, cfg.lora, cfg.train.seed)
        if init_adapter is not None:
            load_adapter_weights(self.model, init_adapter)
        self.model.train()
        self.backend = MLXBackend(self.model, self.tok, self.lora)
        t = cfg.train
        self.lr_f = lr_lambda(cfg)
        self.opt = optim.AdamW(learning_rate=t.lr, betas=list(t.adam_betas), eps=t.adam_eps,
                               weight_decay=t.weight_decay, bias_correction=True)
        return self.backend

    def voice_probe(self, tokenizer, make):
        self.log("warning: eval.every (voice probes during training) runs on the torch "
                 "backend only; skipped")
        return None

    def seed(self, seed: int) -> None:
        mx.random.seed(seed)

    def begin_step(self, step: int) -> None:
        self.step_index = step         # the schedule's position
        # mlx's global key cannot be restored from a checkpoint, so every step seeds it from
        # (seed, step): LoRA dropout and sampling are then the same in a resumed run as in an
        # unbroken one
        mx.random.seed(self.cfg.train.seed * 1_000_003 + step)

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

    def step(self, groups: list, norm, check) -> dict:
        loss_total, tokens, sums, acc = 0.0, 0, {}, None
        for g in groups:
            loss, m, grads = self.micro_grads(g, norm)
            acc = grads if acc is None else tree_map(mx.add, acc, grads)
            mx.eval(loss, acc)
            value = float(loss.item())
            check("loss", value)
            loss_total += value
            tokens += sum(self.method.n_tokens(r) for r in g)
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
        if self.cfg.train.max_grad_norm:
            acc, gn = optim.clip_grad_norm(acc, self.cfg.train.max_grad_norm)
        else:
            gn = global_norm(acc)
        gn = float(gn.item())
        check("gradient norm", gn)
        lr = self.cfg.train.lr * self.lr_f(self.step_index)
        self.opt.learning_rate = lr
        self.opt.update(self.model, acc)
        mx.eval(self.model.parameters(), self.opt.state)
        return {"loss": loss_total, "lr": lr, "grad_norm": gn, "tokens": tokens, "sums": sums}

    # -- checkpoints ---------------------------------------------------------------------------
    def save(self, path: Path, state: dict) -> None:
        with atomic_dir(path) as tmp:
            mx.save_safetensors(str(tmp / "trainable.safetensors"), adapter_weights(self.model))
            mx.save_safetensors(str(tmp / "optim.safetensors"), dict(tree_flatten(self.opt.state)))
            with open(tmp / "rng.pkl", "wb") as f:
                pickle.dump({"python": random.getstate(), "numpy": np.random.get_state()}, f)
            (tmp / "state.json").write_text(json.dumps(state, indent=2))

    def load_checkpoint(self, path: Path) -> dict:
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
        return state

    def save_adapter(self, path: Path, meta: dict, run_root: Path) -> dict:
        """PEFT format in adapter/ plus mlx-lm's in adapter-mlx/."""
        self.backend.save_adapter(path, meta, mlx_path=run_root / MLX_ADAPTER)
        return {"adapter_mlx": str(run_root / MLX_ADAPTER)}

    def peak_memory_mb(self) -> float:
        return peak_memory_mb()
