"""transformers + PEFT implementation of the backend: load, LoRA, log-probs, generate, save."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import types
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from ...errors import ModelError
from ...models import ModelRef, resolve
from ..common import (ADAPTER_META, ATTN_NAMES, MLP_NAMES, atomic_dir, load_tokenizer,  # noqa: F401
                      groups_as_rows, target_names)


def quiet_hf() -> None:
    """transformers/PEFT chatter (progress bars, deprecations) is noise in a CLI."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*gradient checkpointing.*")
    logging.getLogger("peft").setLevel(logging.ERROR)


@functools.lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
    """Let glibc's malloc keep the memory a CPU run frees, for the next step to reuse.

    A training step on a CPU allocates and frees the same ~1 GB of activations, logits chunks
    and casts each time. glibc hands every block over its mmap threshold straight back to the
    kernel on free, so each step page-faults that memory in again and the kernel zeroes it:
    ~220-340 thousand faults and 0.4-0.7 s of system time per GRPO step on the bundled model.
    With large blocks served from the heap (``M_MMAP_MAX`` 0; glibc still falls back to mmap if
    the heap cannot grow) and no trimming of its top, later steps fault almost nothing once the
    heap has settled (a few steps). The price: the process keeps its peak memory until it exits.
    Process-wide, so done once, and only where it is safe to assume glibc;
    ``MINDPRINT_MALLOC_TUNING=0``, or ``GLIBC_TUNABLES`` naming malloc settings, leave malloc as
    it is. Returns whether it was set."""
    import ctypes
    import platform
    import sys

    if (not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc"
            or os.environ.get("MINDPRINT_MALLOC_TUNING", "1") == "0"
            or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4           # <malloc.h>
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("model.device is 'cuda' but no CUDA device is available")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ModelError("model.device is 'mps' but MPS is not available")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def load_base(ref: ModelRef, *, dtype: str = "auto", device: str = "auto",
              attn_implementation: str = "auto", quantize: int | None = None):
    from transformers import AutoModelForCausalLM

    quiet_hf()
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    kwargs = {"dtype": dt}
    if attn_implementation != "auto":
        kwargs["attn_implementation"] = attn_implementation
    if quantize:
        kwargs.update(quantization_kwargs(quantize, dev, dt))
    try:
        model = AutoModelForCausalLM.from_pretrained(ref.path, **kwargs)
        tok = load_tokenizer(ref.path)
    except OSError as e:
        if ref.kind == "hub":
            raise ModelError(f"model '{ref.spec}' is neither an alias, a local directory nor a "
                             f"model in the local Hugging Face cache ({str(e).splitlines()[0]})") from None
        raise ModelError(f"{ref.spec}: cannot load model: {str(e).splitlines()[0]}") from None
    if not quantize:         # bitsandbytes places its weights itself (device_map)
        model.to(dev)
    return model, tok


def quantization_kwargs(bits: int, dev: torch.device, compute_dtype: torch.dtype) -> dict:
    """from_pretrained arguments for a bitsandbytes base: 4-bit NF4 with double quantisation
    (QLoRA) or 8-bit. The LoRA weights stay in ``compute_dtype``; only the frozen base is packed."""
    if dev.type != "cuda":
        raise ModelError(f"model.quantize: {bits} loads the base through bitsandbytes, which needs "
                         f"a CUDA device (this run is on {dev.type}); use model.quantize: null")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelError(f"model.quantize: {bits} needs bitsandbytes: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    if bits == 4:
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                               bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute_dtype)
    else:
        q = BitsAndBytesConfig(load_in_8bit=True)
    return {"quantization_config": q,
            "device_map": {"": dev.index if dev.index is not None else torch.cuda.current_device()}}


def apply_liger(model, setting, device: torch.device, log=print) -> bool:
    """Liger's Triton kernels (RMSNorm, RoPE, SwiGLU) patched into ``model`` in place.
    ``auto``: when liger-kernel is installed and the device is CUDA; ``true``: required;
    ``false``: never. The LM head and loss stay Mindprint's own (chunked selected log-probs)."""
    if setting is False or setting is None:
        return False
    try:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance
    except ImportError:
        if setting == "auto":
            return False
        raise ModelError("train.liger: true needs liger-kernel: pip install liger-kernel") from None
    if device.type != "cuda":
        if setting == "auto":
            return False
        raise ModelError(f"train.liger: true needs a CUDA device (this run is on {device.type})")
    try:
        _apply_liger_kernel_to_instance(model=model, cross_entropy=False,
                                        fused_linear_cross_entropy=False)
    except Exception as e:   # noqa: BLE001 - an unsupported architecture keeps the stock kernels
        if setting is True:
            raise ModelError(f"train.liger: {str(e).splitlines()[0] if str(e) else e!r}") from None
        log(f"warning: train.liger: not applied ({str(e).splitlines()[0] if str(e) else e!r})")
        return False
    log("liger kernels: on")
    return True


def linear_module_names(model) -> set[str]:
    names = set()
    for full, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            names.add(full.rsplit(".", 1)[-1])
    return names


def resolve_targets(model, targets) -> list[str] | str:
    return target_names(linear_module_names(model), targets)


def add_lora(model, lora_cfg, seed: int):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)   # LoRA A init is random: tie it to the run's seed
    pcfg = LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                      target_modules=resolve_targets(model, lora_cfg.targets),
                      use_dora=lora_cfg.dora, use_rslora=lora_cfg.rslora, bias="none",
                      task_type="CAUSAL_LM")
    return get_peft_model(model, pcfg)


# -- oneDNN products on a CPU --------------------------------------------------------------------
# On x86 CPUs torch sends a float32 F.linear / matmul to MKL; oneDNN's inner product, which torch
# also ships (the kernel its CPU compiler emits), runs the products of a LoRA step 10-45 % faster
# on the same numbers (measured on AVX-512, 2 threads: MKL 127-188 GFLOP/s, oneDNN 162-207 on the
# q|k|v, MLP and LM-head shapes of a 135 M model), and it reads a transposed weight in place, so the
# backward's dx = dy·W needs no copy of W either. Used for float32 products with a weight that is
# not trained (the frozen base under LoRA, the LM head); anything else goes to F.linear.

def _dnn_linear(x, w, b=None):
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")


@functools.cache
def onednn_linear_ok(dtype: torch.dtype = torch.float32) -> bool:
    """Whether this torch build has oneDNN's linear for ``dtype`` on the CPU and it agrees with
    F.linear (forward, and the transposed-weight product of the backward) on a probe."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        g = torch.Generator().manual_seed(0)
        x = torch.randn(3, 5, 40, generator=g).to(dtype)
        w = torch.randn(24, 40, generator=g).to(dtype)
        b = torch.randn(24, generator=g).to(dtype)
        dy = torch.randn(3, 5, 24, generator=g).to(dtype)
        tol = 1e-4 if dtype == torch.float32 else 2e-2
        return bool(torch.allclose(_dnn_linear(x, w, b), F.linear(x, w, b), rtol=tol, atol=tol)
                    and torch.allclose(_dnn_linear(dy, w.t()), dy @ w, rtol=tol, atol=tol))
    except (AttributeError, RuntimeError):
        return False


def _dnn_for(x: torch.Tensor, w: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == torch.float32 and w.dtype == torch.float32
            and x.numel() > 0 and not torch.is_autocast_enabled("cpu") and onednn_linear_ok())


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, w, b) through oneDNN where it is faster; no autograd (for the passes of an
    autograd.Function, where grad mode is off)."""
    return _dnn_linear(x, w, b) if _dnn_for(x, w) else F.linear(x, w, b)


def linear_dx(dy: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """dy @ w: the input gradient of :func:`linear`, through oneDNN where it is faster."""
    return _dnn_linear(dy, w.t()) if _dnn_for(dy, w) else dy @ w


class _FrozenLinear(torch.autograd.Function):
    """y = x W^T + b with W, b constants; backward dx = dy W (both through oneDNN)."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(w)
        return _dnn_linear(x, w, b)

    @staticmethod
    def backward(ctx, dy):
        (w,) = ctx.saved_tensors
        return _dnn_linear(dy.contiguous(), w.t()), None, None


def _frozen_forward(self, x):
    w, b = self.weight, self.bias
    if w.requires_grad or (b is not None and b.requires_grad) or not _dnn_for(x, w):
        return F.linear(x, w, b)
    if x.requires_grad and torch.is_grad_enabled():
        return _FrozenLinear.apply(x, w, b)
    return _dnn_linear(x, w, b)


class _LoraLinear(torch.autograd.Function):
    """A LoRA layer in one node: y = x W^T + b + s·(x A^T) B^T, W and b constant.

    Backward, with g = dy B (the [N, r] product everything else reuses):
    dx = dy W + s·g A,  dA = s·g^T x,  dB = s·dy^T (x A^T) (computed as ((x A^T)^T dy)^T, a
    short-wide product, 5-10× faster than the tall-skinny dy^T (x A^T) on a CPU). Against PEFT's
    layer (base + B(A(x))·s as separate autograd nodes) this saves the [N, out] scale and add
    passes of the forward, the [N, in] sum of the two input gradients, and MKL's slow skinny
    products."""

    @staticmethod
    def forward(ctx, x, w, b, A, B, s):
        a = _dnn_linear(x, A)
        y = _dnn_linear(x, w, b)
        y.view(-1, y.shape[-1]).addmm_(a.view(-1, a.shape[-1]), B.t(), alpha=s)
        ctx.save_for_backward(x, w, A, B, a)
        ctx.s = s
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w, A, B, a = ctx.saved_tensors
        s = ctx.s
        dy = dy.reshape(-1, dy.shape[-1])
        x2, a2 = x.reshape(-1, x.shape[-1]), a.reshape(-1, a.shape[-1])
        g = _dnn_linear(dy, B.t())                                   # dy B      [N, r]
        dx = dA = dB = None
        if ctx.needs_input_grad[0]:
            dx = _dnn_linear(dy, w.t())
            dx.addmm_(g, A, alpha=s)
            dx = dx.view(x.shape)
        if ctx.needs_input_grad[3]:
            dA = _dnn_linear(g.t(), x2.t()).mul_(s)                  # s g^T x   [r, in]
        if ctx.needs_input_grad[4]:
            dB = _dnn_linear(a2.t(), dy.t()).t().mul_(s)             # s dy^T a  [out, r]
        return dx, None, None, dA, dB, None


def _plain_lora(layer, x):
    """(W, b, A, B, s) of a PEFT ``lora.Linear`` in the plain case :class:`_LoraLinear` covers (one
    active vanilla adapter, no dropout, plain float32 layers on a CPU, frozen base); else None."""
    if layer.disable_adapters or layer.merged:
        return None
    names = [n for n in layer.active_adapters if n in layer.lora_A]
    if len(names) != 1 or names[0] in getattr(layer, "lora_variant", {}):
        return None
    name = names[0]
    base, A, B = layer.base_layer, layer.lora_A[name], layer.lora_B[name]
    if not (type(base) is type(A) is type(B) is torch.nn.Linear
            and isinstance(layer.lora_dropout[name], torch.nn.Identity)
            and A.bias is None and B.bias is None):
        return None
    w, b = base.weight, base.bias
    if (w.requires_grad or (b is not None and b.requires_grad) or not _dnn_for(x, w)
            or any(t.dtype != torch.float32 or t.device.type != "cpu" for t in (A.weight, B.weight))):
        return None
    return w, b, A.weight, B.weight, float(layer.scaling[name])


def _lora_forward(self, x, *args, **kwargs):
    """A PEFT ``lora.Linear`` forward through :class:`_LoraLinear` in the plain case (see
    :func:`_plain_lora`); PEFT's own otherwise."""
    parts = None if (args or kwargs) else _plain_lora(self, x)
    if parts is None:
        return type(self).forward(self, x, *args, **kwargs)
    return _LoraLinear.apply(x, *parts)


def _is_peft_lora_linear(mod) -> bool:
    t = type(mod)
    return t.__name__ == "Linear" and t.__module__.startswith("peft.tuners.lora")


def use_onednn_linears(model) -> int:
    """Route the frozen ``nn.Linear`` layers of a CPU model (the base under LoRA) through
    oneDNN, see :func:`linear`, and PEFT's LoRA layers through :class:`_LoraLinear`; the choice
    is re-checked on every call (a layer that becomes trainable, a second adapter, dropout,
    autocast, another dtype or device go back to the stock forward). Returns how many."""
    n = 0
    if not onednn_linear_ok():
        return 0
    for mod in model.modules():
        if "forward" in vars(mod):
            continue
        if (type(mod) is torch.nn.Linear and mod.weight.device.type == "cpu"
                and not mod.weight.requires_grad):
            mod.forward = types.MethodType(_frozen_forward, mod)
            n += 1
        elif _is_peft_lora_linear(mod):
            mod.forward = types.MethodType(_lora_forward, mod)
            n += 1
    return n


def _decoder_and_head(model):
    """The transformer body and the output projection, when logits are a plain projection."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = base.config
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None):
        return None, None
    head = base.get_output_embeddings()
    body = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, "model", None)
    if body is None or head is None or not isinstance(head, torch.nn.Linear):
        return None, None
    return body, head


# Softmax rows kept from the forward pass for the backward when they fit in this many bytes;
# larger batches recompute them chunk by chunk instead (one more LM-head matmul, flat memory).
KEEP_PROBS_BYTES = 256 * 2**20


class _SelectedLogps(torch.autograd.Function):
    """log softmax(h W^T + b)[target] per row, a chunk of rows at a time, with a hand-written
    backward: d/dlogits = g·(onehot − softmax). Only the trained rows are ever projected. When
    their softmax fits in ``KEEP_PROBS_BYTES`` it is kept for the backward (saves a third of the
    LM-head arithmetic); otherwise the backward recomputes each chunk's logits, so no
    ``[rows, vocab]`` tensor outlives its chunk. ``entropy_out``, when given, receives each row's
    entropy −Σ p log p (no gradient) from the same logits."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk, entropy_out=None):
        n = hidden.shape[0]
        keep = any(ctx.needs_input_grad[:3]) and n * weight.shape[0] * 4 <= KEEP_PROBS_BYTES
        out = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty(n, dtype=torch.float32, device=hidden.device)
        probs = []
        for s in range(0, n, chunk):
            e = min(s + chunk, n)
            logits = linear(hidden[s:e], weight, bias)
            # one fused log-softmax pass, then exp once for both the entropy and the backward
            # (this tensor is [rows, vocab]: every extra pass over it is ~20-60 ms on a CPU)
            z = torch.log_softmax(logits, dim=-1, dtype=torch.float32)
            out[s:e] = z.gather(-1, targets[s:e, None]).squeeze(-1)
            lse[s:e] = logits[:, 0].float() - z[:, 0]
            if entropy_out is not None or keep:
                p = z.exp()
                if entropy_out is not None:
                    entropy_out[s:e] = -torch.linalg.vecdot(p, z)
                if keep:
                    probs.append(p)
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.chunk, ctx.probs = chunk, probs if keep else None
        dev = hidden.device.type
        # under autocast the logits' products ran in its dtype: so do the backward's
        ctx.amp = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
        return out

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        gh = torch.empty_like(hidden) if need_h else None
        gw = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        gb = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
        grad = grad.float()
        w_h = weight if ctx.amp is None or not need_h else weight.to(ctx.amp)
        for i, s in enumerate(range(0, hidden.shape[0], ctx.chunk)):
            h, g = hidden[s:s + ctx.chunk], grad[s:s + ctx.chunk, None]
            if ctx.probs is not None:
                d = ctx.probs[i].mul_(-g)
            else:
                d = linear(h, weight, bias).float().sub_(lse[s:s + ctx.chunk, None]).exp_().mul_(-g)
            d.scatter_add_(-1, targets[s:s + ctx.chunk, None], g)      # g·(onehot − softmax)
            if need_h:
                gh[s:s + ctx.chunk] = linear_dx(d.to(w_h.dtype), w_h)
            if need_w:
                gw += d.t() @ h.float()
            if need_b:
                gb += d.sum(0)
        ctx.probs = None
        return (gh, gw.to(weight.dtype) if need_w else None, gb.to(bias.dtype) if need_b else None,
                None, None, None)


def _selected_logps(hidden: torch.Tensor, weight: torch.Tensor, bias, targets: torch.Tensor,
                    chunk: int = 512, entropy_out: torch.Tensor | None = None) -> torch.Tensor:
    """log softmax(h W^T)[target] for the rows that are trained on (see :class:`_SelectedLogps`)."""
    return _SelectedLogps.apply(hidden, weight, bias, targets, chunk, entropy_out)


def token_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                loss_mask: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` log p(token_t | tokens_<t) where ``loss_mask`` is 1, else 0.

    Position 0 has no prediction and is always 0. Logits are computed only at trained positions.
    """
    target_mask = loss_mask[:, 1:].bool()
    out = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    body, head = _decoder_and_head(model)
    if body is None:   # unusual heads (soft-capping, logit scale): the model's own logits
        logits = model(use_cache=False, input_ids=input_ids,
                       attention_mask=attention_mask).logits[:, :-1]
        lp = torch.log_softmax(logits.float(), dim=-1)
        sel = lp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
        out[:, 1:] = torch.where(target_mask, sel, torch.zeros_like(sel))
        return out
    hidden = body(use_cache=False, input_ids=input_ids,
                  attention_mask=attention_mask).last_hidden_state
    rows = hidden[:, :-1][target_mask]
    tgt = input_ids[:, 1:][target_mask]
    return _scatter_targets(target_mask, _selected_logps(rows, head.weight, head.bias, tgt))


def _scatter_targets(target_mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` with ``values`` (one per trained position, row-major) at positions 1..T-1."""
    B = target_mask.shape[0]
    inner = torch.zeros(target_mask.shape, dtype=values.dtype, device=values.device)
    inner = inner.masked_scatter(target_mask, values)
    return torch.cat([torch.zeros(B, 1, dtype=values.dtype, device=values.device), inner], dim=1)


class _RowKL(torch.autograd.Function):
    """τ²·KL(softmax(h_base W^T/τ) ‖ softmax(h W^T/τ)) per row, a chunk of rows at a time (the
    formula is :func:`mindprint.losses.kl.kl_to_base`). The backward recomputes each chunk:
    ∂/∂logits = τ·g·(p_tuned − p_base), so neither full-vocabulary distribution is kept between
    the passes. ``base_hidden`` is a constant (the adapter-free model's, computed without grad)."""

    @staticmethod
    def forward(ctx, hidden, base_hidden, weight, bias, tau, chunk):
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        for s in range(0, hidden.shape[0], chunk):
            lt = torch.log_softmax(linear(hidden[s:s + chunk], weight, bias).float() / tau, -1)
            lb = torch.log_softmax(linear(base_hidden[s:s + chunk], weight, bias).float() / tau, -1)
            out[s:s + chunk] = (lb.exp() * (lb - lt)).sum(-1) * (tau * tau)
        ctx.save_for_backward(hidden, base_hidden, weight, bias)
        ctx.tau, ctx.chunk = tau, chunk
        return out

    @staticmethod
    def backward(ctx, grad):
        hidden, base_hidden, weight, bias = ctx.saved_tensors
        tau, chunk = ctx.tau, ctx.chunk
        need_h, _, need_w, need_b = ctx.needs_input_grad[:4]
        gh = torch.empty_like(hidden) if need_h else None
        gw = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        gb = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
        grad = grad.float()
        for s in range(0, hidden.shape[0], chunk):
            h = hidden[s:s + chunk]
            pt = torch.softmax(linear(h, weight, bias).float() / tau, -1)
            pb = torch.softmax(linear(base_hidden[s:s + chunk], weight, bias).float() / tau, -1)
            d = pt.sub_(pb).mul_(grad[s:s + chunk, None] * tau)
            if need_h:
                gh[s:s + chunk] = linear_dx(d.to(weight.dtype), weight)
            if need_w:
                gw += d.t() @ h.float()
            if need_b:
                gb += d.sum(0)
        return (gh, None, gw.to(weight.dtype) if need_w else None,
                gb.to(bias.dtype) if need_b else None, None, None)


def _adapter_off(model):
    return model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()


def token_logps_and_kl(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       loss_mask: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logps, kl)``, each ``[B, T]`` and 0 where ``loss_mask`` is 0: the target log-probs of
    :func:`token_logps` and, at the same positions, τ²·KL(base ‖ tuned) of the next-token
    distributions, the base being this model with its adapter off (one extra no-grad forward)."""
    from ...losses import xp as xpmod
    from ...losses.kl import kl_to_base

    target_mask = loss_mask[:, 1:].bool()
    tgt = input_ids[:, 1:][target_mask]
    body, head = _decoder_and_head(model)
    if body is None:   # unusual heads: full logits at the trained positions
        with torch.no_grad(), _adapter_off(model):
            base = model(use_cache=False, input_ids=input_ids,
                         attention_mask=attention_mask).logits[:, :-1][target_mask]
        logits = model(use_cache=False, input_ids=input_ids,
                       attention_mask=attention_mask).logits[:, :-1][target_mask]
        sel = torch.log_softmax(logits.float(), -1).gather(-1, tgt[:, None]).squeeze(-1)
        kl = kl_to_base(logits.float(), base.float(), tau, xpmod.get("torch"))
    else:
        with torch.no_grad(), _adapter_off(model):
            base_rows = body(use_cache=False, input_ids=input_ids,
                             attention_mask=attention_mask).last_hidden_state[:, :-1][target_mask]
        rows = body(use_cache=False, input_ids=input_ids,
                    attention_mask=attention_mask).last_hidden_state[:, :-1][target_mask]
        sel = _selected_logps(rows, head.weight, head.bias, tgt)
        kl = _RowKL.apply(rows, base_rows, head.weight, head.bias, float(tau), 512)
    return _scatter_targets(target_mask, sel), _scatter_targets(target_mask, kl)


# -- prompt groups: one prompt, several completions, one row --------------------------------------
# A preference pair is a prompt with two completions. Packed as one row [prompt | chosen | rejected]
# where each completion attends to the prompt and to itself only (a 4-D mask) and continues the
# prompt's positions, the prompt is computed once instead of twice and nothing is padded to the
# longer completion. Models whose attention ignores custom masks fall back to one row per completion.


def group_batch(groups, pad_id: int, device, mask_kind: str) -> dict:
    """Tensors for ``groups`` = [(prompt_ids, [(completion_ids, completion_mask), ...]), ...].

    Besides input_ids / position_ids it holds, for every trained token, the row, the position
    whose hidden state predicts it, its id and its flat branch index ``row * K + k`` (K = the most
    completions in a group). ``mask_kind`` "layout" adds the index tensors of
    :func:`group_attention` (no ``[W, W]`` mask is built); "bool" / "float" add a 4-D attention
    mask for SDPA / eager attention instead.
    """
    K = max(len(b) for _, b in groups)
    width = max(len(p) + sum(len(c) for c, _ in b) for p, b in groups)
    R = len(groups)
    ids = torch.full((R, width), pad_id, dtype=torch.long)
    pos = torch.zeros((R, width), dtype=torch.long)
    seg = torch.full((R, width), -2, dtype=torch.long)      # -1 prompt, k branch k, -2 padding
    rows, pred, tgt, flat, spans = [], [], [], [], []
    for r, (p, branches) in enumerate(groups):
        P = len(p)
        ids[r, :P] = torch.tensor(p, dtype=torch.long)
        pos[r, :P] = torch.arange(P)
        seg[r, :P] = -1
        s = P
        spans.append((P, []))
        for k, (c, m) in enumerate(branches):
            L = len(c)
            ids[r, s:s + L] = torch.tensor(c, dtype=torch.long)
            pos[r, s:s + L] = torch.arange(P, P + L)
            seg[r, s:s + L] = k
            spans[-1][1].append((s, L))
            for j in range(L):
                if m[j]:
                    rows.append(r)
                    pred.append(s + j - 1 if j else P - 1)   # the first token follows the prompt
                    tgt.append(c[j])
                    flat.append(r * K + k)
            s += L
    out = {"input_ids": ids.to(device), "position_ids": pos.to(device)}
    if mask_kind == "layout":
        out["layout"] = _branch_layout(spans, K, width, device)
    else:
        causal = torch.ones((width, width), dtype=torch.bool).tril()
        same = seg[:, :, None] == seg[:, None, :]
        allowed = causal & ((seg == -1)[:, None, :] | same | (seg == -2)[:, :, None])
        if mask_kind == "bool":
            att = allowed[:, None]
        else:   # additive float mask for eager attention
            att = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(
                ~allowed, torch.finfo(torch.float32).min)[:, None]
        out["attention_mask"] = att.to(device)
    counts = [[int(sum(m)) for _, m in b] + [0] * (K - len(b)) for _, b in groups]
    as_long = lambda x: torch.tensor(x, dtype=torch.long, device=device)  # noqa: E731
    out.update(rows=as_long(rows), pred=as_long(pred), targets=as_long(tgt), flat=as_long(flat),
               shape=(R, K), counts=torch.tensor(counts, dtype=torch.float32, device=device))
    return out


# -- attention for prompt-shared rows, computed per branch ----------------------------------------
# With a [W, W] block mask, SDPA computes every query against every key of the packed row: for a
# prompt of P tokens and K completions of L, (P + K·L)² scores, nearly all masked. Here the
# prompt's queries attend causally to the prompt, and each branch's queries to [prompt; branch]
# keys gathered into a batch of their own: P² + K·L·(P + L) scores, ~K/2 times fewer for short
# prompts (8 completions of 64 tokens after a 45-token prompt: 5.6× fewer), with the same values.
# It runs as a registered transformers attention function, switched on for the packed forward only.

GROUP_ATTENTION = "mindprint_branches"


def _branch_layout(spans, K: int, width: int, device) -> dict:
    """Index tensors of :func:`group_attention` for rows ``spans`` = [(P, [(start, L), ...]), ...]:
    positions of the prompt queries ``pq`` [R, Pm], of each branch's queries ``bq`` [R, K·Lm],
    of each branch's keys (prompt then branch) ``kidx`` [R, K·(Pm+Lm)], the allowed-key masks,
    and ``src`` [R, W]: where each row position's output sits in [prompt outputs | branch
    outputs]. Padded slots point at position 0 and are masked (a query slot with nothing to
    attend to attends to everything, so no softmax row is all −inf)."""
    R = len(spans)
    Pm = max(P for P, _ in spans)
    Lm = max([L for _, b in spans for _, L in b] or [1])
    pq = torch.zeros((R, Pm), dtype=torch.long)
    pvalid = torch.zeros((R, Pm), dtype=torch.bool)
    bq = torch.zeros((R, K, Lm), dtype=torch.long)
    bvalid = torch.zeros((R, K, Lm), dtype=torch.bool)
    src = torch.zeros((R, width), dtype=torch.long)
    for r, (P, branches) in enumerate(spans):
        pq[r, :P] = torch.arange(P)
        pvalid[r, :P] = True
        src[r, :P] = torch.arange(P)
        for k, (s, L) in enumerate(branches):
            bq[r, k, :L] = torch.arange(s, s + L)
            bvalid[r, k, :L] = True
            src[r, s:s + L] = Pm + k * Lm + torch.arange(L)
    causal_p = torch.ones((Pm, Pm), dtype=torch.bool).tril()
    mask_p = (causal_p[None] & pvalid[:, None, :]) | ~pvalid[:, :, None]
    causal_b = torch.ones((Lm, Lm), dtype=torch.bool).tril()
    keys_b = torch.cat([pvalid[:, None, None, :].expand(R, K, Lm, Pm),
                        causal_b[None, None] & bvalid[:, :, None, :]], dim=-1)
    mask_b = keys_b | ~bvalid[..., None]
    kidx = torch.cat([pq[:, None].expand(R, K, Pm), bq], dim=-1)
    to = lambda t: t.to(device)  # noqa: E731
    return {"K": K, "Pm": Pm, "Lm": Lm, "pq": to(pq), "bq": to(bq.reshape(R, K * Lm)),
            "kidx": to(kidx.reshape(R, K * (Pm + Lm))), "src": to(src),
            "mask_p": to(mask_p[:, None]), "mask_b": to(mask_b.reshape(R * K, 1, Lm, Pm + Lm))}


def _flat_rows(idx: torch.Tensor, width: int) -> torch.Tensor:
    """Positions ``idx`` [R, N] of R rows of ``width`` as indices into the R·width flat rows."""
    return (idx + torch.arange(idx.shape[0], device=idx.device)[:, None] * width).reshape(-1)


def _take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x`` [R, h, W, D] at positions ``idx`` [R, N] → [R, h, N, D]. transformers' q/k/v are
    transposed views of [R, W, h·D] rows: those are picked whole (index_select, and index_add in
    the backward: row copies) rather than element by element (gather / scatter_add)."""
    R, h, W, D = x.shape
    xt = x.transpose(1, 2)
    if xt.is_contiguous():
        rows = xt.reshape(R * W, h * D).index_select(0, _flat_rows(idx, W))
        return rows.view(R, idx.shape[1], h, D).transpose(1, 2)
    return x.gather(2, idx[:, None, :, None].expand(-1, h, -1, D))


def _attend(q, k, v, allowed, scale: float, dropout: float) -> torch.Tensor:
    """softmax(q kᵀ · scale, masked to ``allowed``) v for q [N, H, Lq, D], k/v [N, Hkv, Lk, D]
    (query head h reads key head h // (H / Hkv)), ``allowed`` [N, 1, Lq, Lk]. On a CPU as two
    matmuls with the softmax in float32 (these per-branch blocks are small; SDPA's CPU flash
    kernel is slower on them, most of all in the backward); elsewhere SDPA."""
    N, H, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    if q.device.type != "cpu" or dropout:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout,
                                              scale=scale, enable_gqa=H != Hkv)
    g = H // Hkv
    s = torch.matmul(q.reshape(N, Hkv, g * Lq, D), k.transpose(-1, -2)).float() * scale
    s = s.view(N, Hkv, g, Lq, Lk).masked_fill(~allowed[:, :, None], float("-inf"))
    p = torch.softmax(s, -1).to(v.dtype).view(N, Hkv, g * Lq, Lk)
    return torch.matmul(p, v).view(N, H, Lq, D)


def group_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                    scaling: float | None = None, mp_layout: dict | None = None, **kwargs):
    """transformers attention function for prompt-shared rows (``mp_layout`` from
    :func:`_branch_layout`); without a layout it is SDPA. query [R, H, W, D], key/value
    [R, Hkv, W, D]; returns ([R, W, H, D], None) like the library's own functions."""
    if mp_layout is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    lay = mp_layout
    R, H, _, D = query.shape
    Hkv = key.shape[1]
    K, Pm, Lm = lay["K"], lay["Pm"], lay["Lm"]
    scale = D ** -0.5 if scaling is None else scaling
    pq = lay["pq"]
    out_p = _attend(_take(query, pq), _take(key, pq), _take(value, pq), lay["mask_p"], scale,
                    dropout)
    per_branch = lambda x, n, h: x.view(R, h, K, n, D).transpose(1, 2).reshape(R * K, h, n, D)  # noqa: E731
    qb = per_branch(_take(query, lay["bq"]), Lm, H)
    kb = per_branch(_take(key, lay["kidx"]), Pm + Lm, Hkv)
    vb = per_branch(_take(value, lay["kidx"]), Pm + Lm, Hkv)
    out_b = _attend(qb, kb, vb, lay["mask_b"], scale, dropout)
    # [prompt outputs | branch outputs] as [R, Pm + K·Lm, H, D] rows, then each row position's
    # output picked whole: the [R, W, H, D] result, contiguous, with no transposing copy
    out = torch.cat([out_p.transpose(1, 2),
                     out_b.view(R, K, H, Lm, D).permute(0, 1, 3, 2, 4).reshape(R, K * Lm, H, D)],
                    dim=1)
    src = lay["src"]
    rows = out.view(-1, H * D).index_select(0, _flat_rows(src, out.shape[1]))
    return rows.view(R, src.shape[1], H, D), None


def _layout_ok(body) -> bool:
    """Per-branch attention applies: the body dispatches attention by name (sdpa/eager), with no
    sliding window, soft-capping or gradient checkpointing (whose recomputation would run after
    the switch back)."""
    cfg = getattr(body, "config", None)
    if cfg is None or getattr(cfg, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    if getattr(body, "gradient_checkpointing", False) or getattr(cfg, "attn_logit_softcapping", None):
        return False
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        return False
    return True


def group_kind(model) -> str | None:
    """How prompt-shared rows are attended: "layout" (:func:`group_attention`), a 4-D mask
    ("bool" for SDPA, "float" for eager), or None (unsupported: one row per completion)."""
    body, _ = _decoder_and_head(model)
    if body is not None and _layout_ok(body):
        return "layout"
    return _mask_kind(model)


def group_hidden(model, batch: dict, body=None):
    """Last hidden states ``[R, W, d]`` of :func:`group_batch` rows, or the logits when the model
    has no plain decoder body (``body`` None and no layout)."""
    lay = batch.get("layout")
    if lay is None:
        kw = dict(use_cache=False, input_ids=batch["input_ids"],
                  attention_mask=batch["attention_mask"], position_ids=batch["position_ids"])
        return body(**kw).last_hidden_state if body is not None else model(**kw).logits
    from transformers import AttentionInterface

    if GROUP_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(GROUP_ATTENTION, group_attention)
    cfg = body.config
    before = cfg._attn_implementation
    cfg._attn_implementation = GROUP_ATTENTION
    try:
        return body(use_cache=False, input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                    mp_layout=lay).last_hidden_state
    finally:
        cfg._attn_implementation = before


def group_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sums, counts)``, each ``[R, K]``: summed log-probs and trained-token counts per completion."""
    R, K = batch["shape"]
    body, head = _decoder_and_head(model)
    if body is None:
        logits = group_hidden(model, batch)
        lp = torch.log_softmax(logits[batch["rows"], batch["pred"]].float(), dim=-1)
        sel = lp.gather(-1, batch["targets"][:, None]).squeeze(-1)
    else:
        hidden = group_hidden(model, batch, body)
        sel = _selected_logps(hidden[batch["rows"], batch["pred"]], head.weight, head.bias,
                              batch["targets"])
    sums = torch.zeros(R * K, dtype=sel.dtype, device=sel.device).index_add(0, batch["flat"], sel)
    return sums.view(R, K), batch["counts"]


def group_logps_by_rows(model, groups, pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Same result as :func:`group_logps` with one padded row per completion (the fallback)."""
    seqs, masks, where, K, counts = groups_as_rows(groups)
    b = to_batch(seqs, masks, pad_id, device)
    per_row = token_logps(model, b["input_ids"], b["attention_mask"], b["loss_mask"]).sum(-1)
    idx = torch.tensor(where, dtype=torch.long, device=per_row.device)
    sums = torch.zeros(len(groups) * K, dtype=per_row.dtype, device=per_row.device)
    return (sums.index_add(0, idx, per_row).view(len(groups), K),
            torch.tensor(counts, dtype=torch.float32, device=per_row.device))


def _mask_kind(model) -> str | None:
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    return {"sdpa": "bool", "eager": "float"}.get(impl)


@torch.no_grad()
def shared_prompt_works(model, pad_id: int, device) -> bool:
    """Check once that this model honours a custom 4-D mask and position ids: a shared-prompt
    row must give the same log-probs as one row per completion."""
    kind = group_kind(model)
    if kind is None:
        return False
    vocab = model.get_input_embeddings().weight.shape[0]
    g = torch.Generator().manual_seed(0)
    tok = lambda n: torch.randint(0, vocab, (n,), generator=g).tolist()  # noqa: E731
    groups = [(tok(7), [(tok(5), [1] * 5), (tok(3), [1, 0, 1])]), (tok(4), [(tok(6), [1] * 6)])]
    was_training = model.training
    model.eval()
    try:
        a, _ = group_logps(model, group_batch(groups, pad_id, device, kind))
        b, _ = group_logps_by_rows(model, groups, pad_id, device)
    except Exception:   # noqa: BLE001 - any refusal of the mask means: use the fallback
        return False
    finally:
        model.train(was_training)
    half = next(model.parameters()).dtype != torch.float32
    tol = 5e-2 if half else 1e-3
    return bool(torch.allclose(a, b, rtol=tol, atol=tol))


def to_batch(seqs: list[list[int]], masks: list[list[int]], pad_id: int, device) -> dict:
    """Right-padded tensors: input_ids, attention_mask, loss_mask."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(seqs), width), dtype=torch.long)
    lm = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s, m) in enumerate(zip(seqs, masks)):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        att[i, :len(s)] = 1
        lm[i, :len(m)] = torch.tensor(m, dtype=torch.long)
    return {"input_ids": ids.to(device), "attention_mask": att.to(device), "loss_mask": lm.to(device)}


class TorchBackend:
    """The model + tokenizer pair a method works through (see :class:`~..base.Backend`)."""

    name = "torch"

    def __init__(self, model, tokenizer, *, runner=None, dist=None, weights_hash: str | None = None):
        from ...losses import xp as xpmod

        self.model, self.tokenizer = model, tokenizer
        # torchrun: every pass goes through the DDP/FSDP-wrapped runner (see dist.py)
        self.runner, self.dist, self._weights_hash = runner, dist, weights_hash
        self.device = next(model.parameters()).device
        self.xp = xpmod.get("torch")
        self._group_layout: str | None = None
        self.amp_dtype: torch.dtype | None = None     # train.mixed_precision (set by the trainer)
        if self.device.type == "cpu":
            use_onednn_linears(model)
            keep_freed_memory()

    def autocast(self):
        """The training passes' precision context: bf16 autocast under ``train.mixed_precision``,
        else nothing."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def forward(self, fn, *args, **kwargs):
        """``fn(model, *args, **kwargs)``, through DDP / FSDP when the run is distributed."""
        if self.runner is None:
            return fn(self.model, *args, **kwargs)
        return self.runner(fn, *args, **kwargs)

    def weights_hash(self) -> str:
        """sha256 of the adapter-free weights (the reference log-prob cache key)."""
        if self._weights_hash is None:
            from ...reference import weights_hash

            self._weights_hash = weights_hash(self.model)
        return self._weights_hash

    def batch(self, seqs: list[list[int]], masks: list[list[int]]) -> dict:
        return to_batch(seqs, masks, self.tokenizer.pad_token_id, self.device)

    def token_logps(self, batch: dict) -> torch.Tensor:
        return self.forward(token_logps, batch["input_ids"], batch["attention_mask"],
                            batch["loss_mask"])

    def token_logps_and_kl(self, batch: dict, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Target log-probs and τ²·KL(base ‖ tuned) per position (see :func:`token_logps_and_kl`)."""
        return self.forward(token_logps_and_kl, batch["input_ids"], batch["attention_mask"],
                            batch["loss_mask"], tau)

    @property
    def group_layout(self) -> str:
        """"shared_prompt" (one row per group) or "rows" (one row per completion), decided once."""
        if self._group_layout is None:
            # the check compares float32 results: outside any autocast it may be called from
            with torch.autocast(self.device.type, enabled=False):
                ok = self.forward(shared_prompt_works, self.tokenizer.pad_token_id, self.device)
            self._group_layout = "shared_prompt" if ok else "rows"
        return self._group_layout

    def group_logps(self, groups) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed log-probs and token counts ``[R, K]`` of each group's completions given its prompt.

        ``groups`` = [(prompt_ids, [(completion_ids, completion_mask), ...]), ...]; only tokens whose
        mask is 1 count. One forward pass either way.
        """
        if self.group_layout == "shared_prompt":
            kind = group_kind(self.model)
            return self.forward(group_logps, group_batch(groups, self.tokenizer.pad_token_id,
                                                         self.device, kind))
        return self.forward(group_logps_by_rows, groups, self.tokenizer.pad_token_id, self.device)

    def disabled_adapter(self):
        """The base model, for reference passes: the same weights, adapters switched off."""
        return self.model.disable_adapter()


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_adapter(model, path: Path, meta: dict, state_dict: dict | None = None) -> None:
    """PEFT-format adapter (loads with ``PeftModel.from_pretrained``) + our metadata, atomically.
    ``state_dict``: whole tensors to write instead of the model's own (FSDP shards them)."""
    with atomic_dir(Path(path)) as tmp:
        if state_dict is None:
            model.save_pretrained(str(tmp))
        else:
            model.save_pretrained(str(tmp), state_dict=state_dict)
        (tmp / ADAPTER_META).write_text(json.dumps(meta, indent=2))


def read_adapter_meta(path: Path) -> dict:
    p = Path(path)
    if not p.is_dir() or not (p / "adapter_config.json").exists():
        raise ModelError(f"{path}: not an adapter directory (no adapter_config.json)")
    meta_file = p / ADAPTER_META
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    if "base_model" not in meta:
        cfg = json.loads((p / "adapter_config.json").read_text())
        meta["base_model"] = cfg.get("base_model_name_or_path")
    return meta


def base_model_of(adapter, model_spec: str | None = None, *, default: str | None = None):
    """``(model spec, adapter metadata)``: ``model_spec`` when given, else the base model the
    adapter names, else ``default`` when there is no adapter."""
    meta = read_adapter_meta(Path(adapter)) if adapter else {}
    spec = model_spec or (meta.get("base_model") if adapter else default)
    if not spec:
        raise ModelError(f"{adapter}: the adapter does not say which base model it belongs to; "
                         "pass --model")
    return spec, meta


def load_for_inference(model_spec: str | None, adapter: str | None, *, dtype="auto", device="auto"):
    """Base model (+ adapter) ready for generation; the model defaults to the adapter's base."""
    from ...config import DEFAULT_MODEL

    model_spec, _ = base_model_of(adapter, model_spec, default=DEFAULT_MODEL)
    ref = resolve(model_spec)
    model, tok = load_base(ref, dtype=dtype, device=device)
    if adapter:
        model = attach_adapter(model, adapter, model_spec)
    model.eval()
    return model, tok, ref


def attach_adapter(model, adapter, base_spec: str = "the base model", **kwargs):
    """``PeftModel.from_pretrained`` with one-line errors for adapters that do not fit the base
    (missing files, other module names, shape mismatches)."""
    from peft import PeftModel

    read_adapter_meta(Path(adapter))
    try:
        return PeftModel.from_pretrained(model, str(adapter), **kwargs)
    except (RuntimeError, ValueError, KeyError, OSError) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "size mismatch" in ln), lines[0] if lines else repr(e))
        raise ModelError(f"{adapter}: the adapter does not fit {base_spec} (was it trained on "
                         f"another base model?): {detail[:300]}") from None


@torch.no_grad()
def load_adapter_weights(model, adapter) -> None:
    """Copy a saved adapter's weights into ``model``'s LoRA layers (same layout required): how a
    curriculum carries one adapter from topic to topic while each topic builds its own trainer."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(adapter) / "adapter_model.safetensors"
    if not path.exists():
        raise ModelError(f"{adapter}: no adapter_model.safetensors to continue from")
    weights = load_file(str(path))
    own = {n for n, p in model.named_parameters() if p.requires_grad}
    res = set_peft_model_state_dict(model, weights)
    if getattr(res, "unexpected_keys", None) or len(weights) != len(own):
        raise ModelError(f"{adapter}: its LoRA layout does not match this config's (lora.r / "
                         f"lora.targets must be the same for every topic)")


@torch.no_grad()
def generate(model, tok, prompts: list[list[dict]], *, max_new_tokens: int = 200,
             temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
             stats: dict | None = None) -> list[str]:
    """Batched, KV-cached generation from chat prompts; stops at end-of-turn.

    ``stats``, when given, receives ``new_tokens``: the tokens generated per prompt (end-of-turn
    included, padding after it not).
    """
    from ...data.render import end_of_turn_ids, render_text

    torch.manual_seed(seed)
    texts = [render_text(tok, p, add_generation_prompt=True) for p in prompts]
    old_side = tok.padding_side
    tok.padding_side = "left"
    try:
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tok.padding_side = old_side
    dev = next(model.parameters()).device
    enc = {k: v.to(dev) for k, v in enc.items()}
    eos = end_of_turn_ids(tok)
    kwargs = dict(max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=tok.pad_token_id)
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    out = model.generate(**enc, **kwargs)
    new = out[:, enc["input_ids"].shape[1]:]
    if stats is not None:
        ends = [[j for j, t in enumerate(row) if t in eos] for row in new.tolist()]
        stats["new_tokens"] = [e[0] + 1 if e else new.shape[1] for e in ends]
    return [tok.decode(row, skip_special_tokens=True).strip() for row in new]
