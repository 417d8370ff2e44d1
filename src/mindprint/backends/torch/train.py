"""The torch stepper: what the one training loop (:mod:`mindprint.training.loop`) needs done in
PyTorch — loading (transformers + PEFT), the optimizer step, eval mode, checkpoint files with
exact resume, the final adapter.

One step function serves one process and many (torchrun / accelerate launch, DDP or FSDP2, see
:mod:`.dist`): a single process is the world of one, where every collective is the identity.
A step: each micro-batch's loss (already divided by the step's normaliser summed over ranks) is
back-propagated — × world size, since DDP / FSDP average gradients over ranks and the sum of the
shares is the gradient of the global loss — with gradient reduction only after the last
micro-batch; loss, token count and metric sums are summed over ranks before the NaN check (the
same value on every rank: all stop together); then clipping (or just the norm), AdamW and the
schedule. Checkpoints hold whole tensors (FSDP shards gathered), written by rank 0 in one format,
so a resume may use any world size.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ...config import Config
from ...errors import MindprintError
from ...reference import weights_hash
from ..common import LOCAL, lr_lambda
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


class TorchStepper:
    """The :class:`~mindprint.training.loop.Stepper` of the torch backend."""

    name = "torch"

    @staticmethod
    def world(cfg: Config):
        """torchrun / accelerate launch's process group, else the world of one."""
        return D.from_env(fsdp=cfg.train.fsdp) or LOCAL

    def __init__(self, cfg: Config, method, dist, log=print):
        self.cfg, self.method, self.dist, self.log = cfg, method, dist, log
        self.runner = None          # the DDP / FSDP-wrapped call-through module, when distributed

    # -- setup ---------------------------------------------------------------------------------
    def load(self, model_ref):
        cfg = self.cfg
        torch.set_num_threads(cfg.train.num_threads or self._default_threads())
        quantize = cfg.model.quantize
        fsdp = self.dist.fsdp
        if cfg.train.fsdp and self.dist.world_size == 1:
            self.log("warning: train.fsdp shards across processes; this is one process (start "
                     "it with torchrun --nproc_per_node N), so it trains unsharded")
        if fsdp and quantize:
            raise MindprintError("train.fsdp with model.quantize is not supported: use DDP "
                                 "(train.fsdp: false) for QLoRA across GPUs")
        device, dtype = pick_device(cfg.model.device), cfg.model.dtype
        if fsdp and dtype == "auto":     # the target device's default, not the CPU's
            dtype = "bfloat16" if pick_dtype("auto", device) == torch.bfloat16 else "float32"
        # FSDP: load on the CPU and let fully_shard move each rank's shard to the device
        self.base, self.tok = load_base(model_ref, dtype=dtype,
                                        device="cpu" if fsdp else cfg.model.device,
                                        attn_implementation=cfg.model.attn_implementation,
                                        **({"quantize": quantize} if quantize else {}))
        self.target = device
        self.device = device if fsdp else next(self.base.parameters()).device
        return self.tok

    def _default_threads(self) -> int:
        """All cores, shared between the processes of this node under torchrun; an explicit
        OMP_NUM_THREADS (a job scheduler's share, parallel test workers) wins in a single process
        (torchrun sets it to 1 on its own, so it is not read there)."""
        omp = os.environ.get("OMP_NUM_THREADS", "")
        if self.dist.world_size == 1 and omp.isdigit() and int(omp) > 0:
            return int(omp)
        n = os.cpu_count() or 1
        if self.dist.world_size > 1:
            n //= max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
        return max(n, 1)

    def attach(self, init_adapter: Path | None):
        cfg, base = self.cfg, self.base
        if cfg.train.gradient_checkpointing:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            base.enable_input_require_grads()
        apply_liger(base, cfg.train.liger, self.target, self.log)
        self.model = add_lora(base, cfg.lora, cfg.train.seed)
        if init_adapter is not None:
            load_adapter_weights(self.model, init_adapter)
        self.model.train()
        if self.dist.world_size == 1:
            self.backend = TorchBackend(self.model, self.tok)
        else:
            whash = weights_hash(self.model)        # before sharding: the same on every rank
            self.runner = D.wrap(self.model, self.dist, self.device)
            self.backend = TorchBackend(self.model, self.tok, runner=self.runner, dist=self.dist,
                                        weights_hash=whash)
        if cfg.train.mixed_precision == "bf16" and \
                next(self.model.parameters()).dtype == torch.float32:
            self.backend.amp_dtype = torch.bfloat16
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = make_optimizer(self.params, cfg.train, fused=not self.dist.fsdp)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(cfg))
        return self.backend

    def voice_probe(self, tokenizer, make):
        return make(self.cfg, tokenizer)

    def seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def begin_step(self, step: int) -> None:
        """Nothing: torch's generator state is saved and restored with each checkpoint."""

    # -- one step ------------------------------------------------------------------------------
    def step(self, groups: list, norm, check) -> dict:
        d, method, backend = self.dist, self.method, self.backend
        loss_total, tokens, sums = 0.0, 0, {}
        for i, g in enumerate(groups):
            with self._grad_sync(i == len(groups) - 1):
                with backend.autocast():
                    loss, m = method.micro_loss(backend, g, norm)
                # DDP / FSDP average gradients over ranks: × world size makes it their sum
                (loss * d.world_size).backward()
            loss_total += float(loss.detach())
            tokens += sum(method.n_tokens(r) for r in g)
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
        sums = d.sum_dicts({**sums, "\0loss": loss_total, "\0tokens": float(tokens)})
        loss_total, tokens = sums.pop("\0loss"), int(sums.pop("\0tokens"))
        check("loss", loss_total)
        if self.cfg.train.max_grad_norm:
            gn = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.train.max_grad_norm)
        else:     # D.full: the whole tensor of an FSDP shard, else the identity
            gn = torch.linalg.vector_norm(torch.stack([D.full(p.grad.norm()) for p in self.params
                                                       if p.grad is not None]))
        gn = float(D.full(gn))
        check("gradient norm", gn)
        lr = self.sched.get_last_lr()[0]
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return {"loss": loss_total, "lr": lr, "grad_norm": gn, "tokens": tokens, "sums": sums}

    @contextlib.contextmanager
    def _grad_sync(self, sync: bool):
        """Reduce gradients after this backward only when ``sync`` (the step's last micro-batch);
        one process has nothing to reduce."""
        if sync or self.runner is None:
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

    # -- checkpoints ---------------------------------------------------------------------------
    def save(self, path: Path, state: dict) -> None:
        """Whole tensors gathered from every rank (FSDP shards included), written by rank 0."""
        d = self.dist
        weights = {n: D.full(p.detach()).contiguous().cpu()
                   for n, p in self.model.named_parameters() if p.requires_grad}
        optim = self.opt.state_dict()
        if d.fsdp:       # state_dict() shares the live per-parameter dicts: copy before replacing
            optim["state"] = {i: {k: v.full_tensor().cpu() if D.is_dtensor(v) else v
                                  for k, v in st.items()} for i, st in optim["state"].items()}
        rngs = d.gather(_rng_state())
        blob = {"optimizer": optim, "scheduler": self.sched.state_dict(), "rng": rngs[0]}
        if d.world_size > 1:      # each rank's own stream, for a resume on as many ranks
            blob["rng_ranks"] = rngs
            state = {**state, "world_size": d.world_size}
        if d.is_main:
            with atomic_dir(path) as tmp:
                save_file(weights, str(tmp / "trainable.safetensors"))
                torch.save(blob, tmp / "optim.pt")
                (tmp / "state.json").write_text(json.dumps(state, indent=2))

    def load_checkpoint(self, path: Path) -> dict:
        """Rank 0 reads, every rank gets it (no shared disk needed)."""
        d = self.dist
        state, weights, blob = d.broadcast(_read_checkpoint(path) if d.is_main else None)
        named = dict(self.model.named_parameters())
        missing = [n for n in weights if n not in named]
        if missing:
            raise MindprintError(f"{path}: checkpoint does not match this config's LoRA layout "
                                 f"(e.g. {missing[0]}); resume with the config it was written with")
        with torch.no_grad():
            for n, t in weights.items():
                named[n].copy_(D.like(t, named[n]))
        optim = blob["optimizer"]
        if d.fsdp:     # whole tensors → this rank's shards
            for i, st in optim["state"].items():
                p = self.params[int(i)]
                for k, v in st.items():
                    if k != "step" and torch.is_tensor(v) and v.shape == p.shape:
                        st[k] = D.like(v, p)
        self.opt.load_state_dict(optim)
        self.sched.load_state_dict(blob["scheduler"])
        rng = blob["rng"]
        ranks = blob.get("rng_ranks")
        if ranks and len(ranks) == d.world_size:
            rng = ranks[d.rank]     # same world size: each rank's own stream goes on
        _set_rng_state(rng)
        return state

    def save_adapter(self, path: Path, meta: dict, run_root: Path) -> dict:
        d = self.dist
        whole = {n: D.full(p.detach()).cpu() for n, p in self.model.named_parameters()
                 if p.requires_grad} if d.fsdp else None
        if d.is_main:
            save_adapter(self.model, path, meta, state_dict=whole)
        d.barrier()
        return {"world_size": d.world_size, "fsdp": d.fsdp} if d.world_size > 1 else {}

    def peak_memory_mb(self) -> float:
        return peak_memory_mb(self.device)


def _read_checkpoint(path: Path) -> tuple[dict, dict, dict]:
    return (json.loads((path / "state.json").read_text()),
            load_file(str(path / "trainable.safetensors")),
            torch.load(path / "optim.pt", weights_only=False))
