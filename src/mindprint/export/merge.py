"""``mindprint merge``: fold a LoRA adapter into its base model, verified, written atomically.

PEFT merges have a history of silent corruption (tied embeddings, DoRA magnitudes, modules
saved alongside the adapter). So the merge is checked rather than trusted:

1. the base is loaded, the adapter attached and both cast to float64; the adapter model's
   logits on the probe inputs (:mod:`.probes`) are the reference;
2. the adapter is merged in float64 and the merged model must reproduce the reference:
   max |Δlogit| ≤ 1e-4. (In float32 the forward pass alone moves logits of magnitude ~60 by
   ~1e-4, so a float32 comparison at 1e-4 would fail on rounding, or need a tolerance loose
   enough to hide small errors.) Measured on the bundled model: ~9e-6;
3. the merged weights are cast to the checkpoint dtype (float32 by default) and that model is
   compared with the reference too, with the dtype's rounding as tolerance (``CAST_TOLERANCE``);
4. the checkpoint is written to a temporary directory, loaded back from disk and checked
   again, then renamed into place. Any failed check leaves nothing behind.

A quantised base (bitsandbytes, GPTQ, AWQ…: a ``quantization_config`` in its config) is refused:
merging into quantised weights re-quantises them, so the result cannot equal the adapter model.
``--dequantize`` merges into a full-precision copy instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .. import __version__
from ..errors import MindprintError, ModelError
from ..models import fix_config_for_mlx, resolve
from .common import check_writable
from .probes import compare_logits, probe_batch, probe_logits

MERGE_TOLERANCE = 1e-4
# The written checkpoint (merged in float64, then cast) against the float64 adapter model. This is
# the rounding of the output dtype, not of the merge: float32 ~1e-4 on logits of magnitude ~60;
# bf16/fp16 round weights and activations to 8/11 mantissa bits (the bf16 ulp at 32 is 0.25).
# Measured on the bundled SmolLM2-135M with a trained adapter: see README. A broken merge moves
# logits by whole units, so these bounds still catch one.
CAST_TOLERANCE = {"float32": 1e-3, "bfloat16": 4.0, "float16": 0.5}   # max |Δlogit|
CAST_TOP1 = {"float32": 1.0, "bfloat16": 0.9, "float16": 0.98}         # top-1 agreement
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MERGE_META = "mindprint-merge.json"


class VerificationError(MindprintError):
    """An export did not reproduce its source model; nothing was written."""

    exit_code = 4


def quantization_of(model_path: str) -> dict | None:
    """The ``quantization_config`` of a model directory (or cached hub id), if any."""
    p = Path(model_path) / "config.json"
    if p.is_file():
        cfg = json.loads(p.read_text())
    else:
        from transformers import AutoConfig

        try:
            cfg = AutoConfig.from_pretrained(model_path).to_dict()
        except OSError:
            return None
    q = cfg.get("quantization_config")
    return q if q else None


def load_full_precision(ref, *, device: str = "auto", dequantize: bool = False):
    """Base model in float32 (+ tokenizer); a quantised base only with ``dequantize``."""
    from ..backends.common import load_tokenizer
    from ..backends.torch.load import load_base, pick_device, quiet_hf

    quant = quantization_of(ref.path)
    if quant and not dequantize:
        method = quant.get("quant_method", "unknown method")
        raise ModelError(f"{ref.spec}: the base model is quantised ({method}); merging into "
                         "quantised weights re-quantises them and cannot be verified. Pass "
                         "--dequantize to merge into a full-precision copy")
    if not quant:
        return load_base(ref, dtype="float32", device=device)
    from transformers import AutoModelForCausalLM

    quiet_hf()
    try:
        model = AutoModelForCausalLM.from_pretrained(ref.path, device_map=str(pick_device(device)))
        model = model.dequantize()
    except Exception as e:   # noqa: BLE001 - any backend failure is the user's environment
        first = (str(e).splitlines() or [repr(e)])[0]
        raise ModelError(f"{ref.spec}: cannot dequantise this base model ({first})") from None
    model = model.float()
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    return model, load_tokenizer(ref.path)


def cast_params(model, dtype: torch.dtype) -> None:
    """Cast parameters only: buffers such as RoPE's ``inv_freq`` keep the dtype a fresh load
    gives them (a bf16 ``inv_freq`` would shift every position's rotation)."""
    for p in model.parameters():
        p.data = p.data.to(dtype)


def _merge(peft_model):
    """The merge itself (a seam for tests that need a corrupted one)."""
    return peft_model.merge_and_unload(safe_merge=True)


def merge_verified(peft_model, tok, *, dtype: str = "float32", log=lambda s: None):
    """Merge ``peft_model`` (adapter attached) and verify it.

    Returns ``(merged model in dtype, report)``; the report holds the probe batch and the merged
    model's own probe logits (what a reload from disk must reproduce). Raises
    :class:`VerificationError` when the merged model does not reproduce the adapter model.
    """
    batch = probe_batch(tok)
    # The check runs in float64: in float32 the forward pass alone rounds logits of magnitude ~60
    # by ~1e-4 (measured on the bundled model), which would blur a 1e-4 tolerance either way.
    cast_params(peft_model, torch.float64)
    ref_logits = probe_logits(peft_model, batch)
    merged = _merge(peft_model)
    merged.eval()
    got = compare_logits(probe_logits(merged, batch), ref_logits, batch)
    checks = {"merge": {**got, "tolerance": MERGE_TOLERANCE, "compute_dtype": "float64"}}
    log(f"merge check: max |Δlogit| {got['max_abs_diff']:.2e} over {got['probe_tokens']} probe "
        f"tokens (tolerance {MERGE_TOLERANCE:.0e}, computed in float64)")
    if not got["max_abs_diff"] <= MERGE_TOLERANCE:
        raise VerificationError(
            f"merge verification failed: the merged model's logits differ from the adapter "
            f"model's by {got['max_abs_diff']:.3g} (tolerance {MERGE_TOLERANCE:g}); nothing written")
    cast_params(merged, DTYPES[dtype])
    logits = probe_logits(merged, batch)
    tol, top1 = CAST_TOLERANCE[dtype], CAST_TOP1[dtype]
    got = compare_logits(logits, ref_logits, batch)
    checks[dtype] = {**got, "tolerance": tol, "min_top1_agreement": top1}
    log(f"{dtype} checkpoint check: max |Δlogit| {got['max_abs_diff']:.3g} against the adapter "
        f"model (tolerance {tol:g}), top-1 agreement {got['top1_agreement']:.3f} (≥ {top1:g})")
    if not (got["max_abs_diff"] <= tol and got["top1_agreement"] >= top1):
        raise VerificationError(
            f"merge verification failed in {dtype}: logits differ from the adapter model's by "
            f"{got['max_abs_diff']:.3g} (tolerance {tol:g}), top-1 agreement "
            f"{got['top1_agreement']:.3f} (minimum {top1:g}); nothing written")
    return merged, {"probe": batch, "logits": logits, "checks": checks}


def save_checkpoint(model, tok, out: Path, meta: dict) -> None:
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    fix_config_for_mlx(out)
    (out / MERGE_META).write_text(json.dumps(meta, indent=2) + "\n")


def verify_on_disk(path: Path, tok, batch, reference, dtype: str) -> dict:
    """Load the written checkpoint back; it must give the in-memory merged model's logits."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reloaded = AutoModelForCausalLM.from_pretrained(str(path), dtype=DTYPES[dtype])
    got = compare_logits(probe_logits(reloaded, batch), reference, batch)
    tol = MERGE_TOLERANCE
    if not got["max_abs_diff"] <= tol:
        raise VerificationError(
            f"the written checkpoint does not load back to the merged model: logits differ by "
            f"{got['max_abs_diff']:.3g} (tolerance {tol:g}); nothing written")
    tok2 = AutoTokenizer.from_pretrained(str(path))
    if getattr(tok2, "chat_template", None) != getattr(tok, "chat_template", None):
        raise VerificationError("the written tokenizer lost its chat template; nothing written")
    return {**got, "tolerance": tol}


def merge(adapter: str, out: str, *, model: str | None = None, dtype: str = "float32",
          device: str = "auto", dequantize: bool = False, overwrite: bool = False,
          log=lambda s: None) -> dict:
    """``mindprint merge``: returns the verification report written beside the checkpoint."""
    from ..backends.common import atomic_dir
    from ..backends.torch.adapters import attach_adapter, base_model_of
    from ..backends.torch.load import quiet_hf

    quiet_hf()
    if dtype not in DTYPES:
        raise MindprintError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    out_path = check_writable(out, overwrite=overwrite, kind="directory")
    spec, meta = base_model_of(adapter, model)
    ref = resolve(spec)
    base, tok = load_full_precision(ref, device=device, dequantize=dequantize)
    peft_model = attach_adapter(base, adapter, spec)
    merged, res = merge_verified(peft_model, tok, dtype=dtype, log=log)
    info = {"adapter": str(Path(adapter).resolve()), "base_model": spec, "dtype": dtype,
            "adapter_meta": meta, "checks": res["checks"], "mindprint_version": __version__}
    try:
        with atomic_dir(out_path) as tmp:
            save_checkpoint(merged, tok, tmp, info)
            info["checks"]["reloaded"] = verify_on_disk(tmp, tok, res["probe"], res["logits"], dtype)
            (tmp / MERGE_META).write_text(json.dumps(info, indent=2) + "\n")
    except OSError as e:
        raise MindprintError(f"{out_path}: cannot write the merged model ({e.strerror or e})") from None
    log(f"reloaded from disk: max |Δlogit| {info['checks']['reloaded']['max_abs_diff']:.2e}")
    return info
