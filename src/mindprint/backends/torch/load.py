"""Loading a base model with transformers: device and dtype, bitsandbytes quantisation, Liger
kernels, and quiet Hugging Face logging. Nothing here changes process-wide settings beyond the
logging (see :mod:`.process` for those); LoRA is added by :mod:`.lora`, adapters read by
:mod:`.adapters`.
"""

from __future__ import annotations

import logging
import os
import warnings

import torch

from ...config import DEFAULT_MODEL
from ...errors import ModelError
from ...models import ModelRef, resolve
from ..common import load_tokenizer
from .adapters import attach_adapter, base_model_of


def quiet_hf() -> None:
    """transformers/PEFT chatter (progress bars, deprecations) is noise in a CLI."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # imported here: the variables above only count when set before transformers loads
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*gradient checkpointing.*")
    logging.getLogger("peft").setLevel(logging.ERROR)

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

def load_for_inference(model_spec: str | None, adapter: str | None, *, dtype="auto", device="auto"):
    """Base model (+ adapter) ready for generation; the model defaults to the adapter's base."""
    model_spec, _ = base_model_of(adapter, model_spec, default=DEFAULT_MODEL)
    ref = resolve(model_spec)
    model, tok = load_base(ref, dtype=dtype, device=device)
    if adapter:
        model = attach_adapter(model, adapter, model_spec)
    model.eval()
    return model, tok, ref
