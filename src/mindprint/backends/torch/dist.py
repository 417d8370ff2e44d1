"""Scale-out through torch.distributed: DDP or FSDP2 across processes started by ``torchrun`` or
``accelerate launch``.

A run is distributed when the launcher's environment says so (``WORLD_SIZE`` > 1, with ``RANK``
and ``LOCAL_RANK``); otherwise :func:`from_env` returns ``None`` and the run is the world of one
(``backends.common.LocalDist``, whose collectives are the identity): the training loop and the
torch stepper have one code path for both. The process group uses NCCL on CUDA and gloo on CPU.

How a step stays exactly the single-process step (2 processes × batch b ≡ 1 process × batch 2b):

* every rank builds the same *global* step groups (the sampler's group is batch_size × grad_accum
  × world_size examples) and takes a strided share of each global micro-batch;
* the step's normaliser (target tokens, pairs, ...) is all-reduced before the first backward, so
  each rank's loss is its share of the *global* mean;
* DDP and FSDP average gradients over ranks; the loss is multiplied by the world size first, so
  the reduced gradient is the sum of the shares — the gradient of the global loss.

Every forward pass goes through one call-through module (:class:`Runner`) that DDP or FSDP
wraps, so the loop's own log-prob code (decoder body + chunked LM head) keeps working and DDP's
reducer / FSDP's root hooks see each pass.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


class Runner(torch.nn.Module):
    """``runner(fn, *args)`` = ``fn(model, *args)``: the one module DDP / FSDP wrap."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, fn, *args, **kwargs):
        return fn(self.model, *args, **kwargs)


@dataclass
class DistContext:
    world_size: int
    rank: int
    local_rank: int
    backend: str                  # "nccl" | "gloo"
    fsdp: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- collectives (every rank calls them, in the same order) --------------------------------
    def barrier(self) -> None:
        dist.barrier()

    def _device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" \
            else torch.device("cpu")

    def sum_floats(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64)."""
        t = torch.tensor(values, dtype=torch.float64, device=self._device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.cpu().tolist()

    def any_flags(self, *flags: bool) -> list[bool]:
        """Each flag True on any rank → True on every rank (stop requests, time caps)."""
        t = torch.tensor([float(bool(f)) for f in flags], dtype=torch.float64, device=self._device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.cpu().tolist()]

    def gather(self, obj) -> list:
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sum_dicts(self, d: dict) -> dict:
        """Key-wise sum over ranks of dicts of floats (keys may differ between ranks)."""
        out: dict = {}
        for part in self.gather(d):
            for k, v in part.items():
                out[k] = out.get(k, 0.0) + v
        return out

    def share(self, items: list) -> list:
        """This rank's strided share of ``items``."""
        return items[self.rank::self.world_size]

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def from_env(*, fsdp: bool = False) -> DistContext | None:
    """The launcher's process group (initialised once), or ``None`` for a single process."""
    if env_world_size() <= 1:
        return None
    from ...errors import MindprintError

    if not dist.is_available():
        raise MindprintError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    for key in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise MindprintError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {key} is not set: "
                                 "start distributed runs with torchrun or accelerate launch")
    local_rank = int(os.environ["LOCAL_RANK"])
    cuda = torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        timeout = datetime.timedelta(minutes=int(os.environ.get("MINDPRINT_DIST_TIMEOUT_MIN", "30")))
        dist.init_process_group(backend=backend, timeout=timeout)
        import atexit

        atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    return DistContext(world_size=dist.get_world_size(), rank=dist.get_rank(),
                       local_rank=local_rank, backend=backend, fsdp=fsdp)


def decoder_layers(model) -> list[torch.nn.Module]:
    """The transformer blocks of a (PEFT-wrapped) causal LM: FSDP's sharding units."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers"):
        obj = base
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.ModuleList) and len(obj):
            return list(obj)
    from ...errors import ModelError

    raise ModelError(f"train.fsdp: cannot find the decoder layers of {type(base).__name__}")


def wrap(model: torch.nn.Module, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    """The :class:`Runner` around ``model``, wrapped in DDP, or sharded with FSDP2.

    FSDP2 shards each decoder layer (base and LoRA weights; mixed requires_grad is fine per
    parameter); the embeddings, final norm and LM head stay whole on every rank (the loop's
    chunked LM head reads ``head.weight`` directly, and generation calls the embeddings).
    """
    runner = Runner(model)
    if ctx.fsdp:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(device.type, (ctx.world_size,))
        layers = decoder_layers(model)
        in_layers = {id(p) for layer in layers for p in layer.parameters()}
        for layer in layers:
            fully_shard(layer, mesh=mesh)
        rest = {p for p in runner.parameters() if id(p) not in in_layers}
        with torch.no_grad():     # fully_shard moves what it manages; the rest moves here
            for p in rest:
                p.data = p.data.to(device)
        fully_shard(runner, mesh=mesh, ignored_params=rest)
        return runner
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    # buffers (rotary tables) are identical everywhere: no broadcast per forward
    return DDP(runner, device_ids=ids, broadcast_buffers=False)


def is_dtensor(t) -> bool:
    return type(t).__name__ == "DTensor"


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of an FSDP shard (a collective: every rank calls it), else ``t``."""
    return t.full_tensor() if is_dtensor(t) else t


def like(value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``value`` (a whole tensor) laid out like ``param`` (an FSDP shard or a plain tensor)."""
    if is_dtensor(param):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(value.to(param.device, param.dtype), param.device_mesh,
                                 param.placements)
    return value.to(param.device, param.dtype)
