"""``mindprint export mlx``: a fused mlx-lm model folder (base + LoRA merged, optionally quantized),
verified by loading it with ``mlx_lm.load``, written atomically.

How it is made (no hand-written conversion code):

1. the adapter is merged into its base in torch and verified (:func:`.merge.merge_verified`:
   float64 merge, max |Δlogit| ≤ 1e-4 against the adapter model) — the same merge every other
   export uses, so DoRA, rsLoRA and tied embeddings are handled once;
2. the merged float32 checkpoint is saved to a scratch folder and handed to mlx-lm's own
   converter, ``mlx_lm.convert`` (cast to ``--dtype``, ``--quantize`` bits with ``--group-size``
   through ``mlx_lm.utils.quantize_model``, tokenizer and config written by ``mlx_lm.utils.save``).
   The result is exactly what ``mlx_lm.convert`` writes for a Hugging Face model, so every mlx-lm
   tool (``mlx_lm.generate``, ``mlx_lm.server``, LM Studio's MLX engine) reads it;
3. the folder is loaded back with ``mlx_lm.load`` and checked before it is renamed into place
   (the checks and their thresholds are :mod:`.verify`'s, the report is the GGUF export's):

   * **the folder holds the model** (a failure refuses): mlx's logits (computed in float32 from the
     stored weights) equal torch's logits of the merged model with its weights replaced by the
     stored ones (quantized groups dequantized by ``mx.dequantize``), max |Δlogit| ≤
     :data:`.verify.FILE_TOLERANCE`; the folder's tokenizer encodes the probes as the source's and
     carries the same chat template;
   * with ``--quantize``, which matrices mlx-lm quantized and which it kept in full precision
     (those whose rows are not whole groups);
   * **what rounding costs** against the adapter model: top-1 agreement and max |Δlogit| on the
     probe tokens; a WARNING below :data:`MIN_TOP1`;
   * **the voice survives**: greedy answers from mlx (from the stored weights; computed in the
     folder's dtype on a GPU, in float32 on a CPU as the mlx backend does) and from the adapter
     model to held-out prompts, scored by the voice verifier.

   Warnings do not stop the export; ``strict`` refuses instead. The report is printed and written
   into the folder as ``export.json``.

Only mlx-lm architectures whose weight names equal transformers' (Llama, Qwen2, Mistral … — those
:mod:`.gguf_write` exports too) can be checked; others are refused with a message.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..backends.common import atomic_dir, load_tokenizer
from ..backends.mlx.generate import generate as mlx_generate   # first: loads OpenBLAS before mlx
from ..errors import MindprintError
from ..models import resolve
from .common import check_writable
from .gguf import run_sources
from .gguf_write import _check_supported
from .merge import VerificationError, load_full_precision, merge_verified, save_checkpoint
from .probes import probe_batch, probe_logits
from .verify import MAX_NEW_TOKENS, MAX_PROMPTS, VoiceCheck, check_logits, check_tokenizer

import mlx.core as mx  # noqa: E402  (after the mlx backend package: it picks the BLAS first)
import mlx.nn as nn  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402
from mlx_lm import load as mlx_load  # noqa: E402
from mlx_lm.convert import convert  # noqa: E402

DTYPES = ("bfloat16", "float16", "float32")
BITS = (2, 3, 4, 5, 6, 8)            # what mlx's affine quantization supports
GROUP_SIZES = (32, 64, 128)
REPORT = "export.json"

# Top-1 agreement with the adapter model on the probe tokens below which a WARNING is printed.
# Measured on the bundled model with the quickstart adapter (benchmarks/RESULTS.md, "mlx export"):
# bfloat16 0.990, 4-bit group 64 0.641 (mlx-lm quantizes the tied embedding, which is also the
# output head, to 4 bits as well; llama.cpp's q4_k_m keeps it at Q8_0: 0.862) — levels about 0.05
# below those. The other widths are not measured: levels between, never higher for fewer bits.
MIN_TOP1 = {"float32": 0.98, "float16": 0.98, "bfloat16": 0.94, 8: 0.9, 6: 0.8, 5: 0.7,
            4: 0.59, 3: 0.4, 2: 0.2}


def _label(dtype: str, bits: int | None, group_size: int) -> str:
    return f"{bits}-bit (group {group_size}, {dtype} scales)" if bits else dtype


def _convert(hf_dir: Path, out: Path, *, dtype: str, bits: int | None, group_size: int,
             log) -> None:
    """``mlx_lm.convert`` of a saved checkpoint. mlx-lm prints its progress to stdout, which the
    CLI keeps for its own summary: the lines are collected and handed to ``log`` instead."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            convert(str(hf_dir), mlx_path=str(out), quantize=bool(bits), q_bits=bits,
                    q_group_size=group_size if bits else None, dtype=dtype)
    finally:
        for ln in buf.getvalue().splitlines():
            if ln.strip():
                log(f"mlx-lm: {ln.strip()}")


def stored_weights(model) -> dict[str, np.ndarray]:
    """The mlx model's weights as float32 numpy arrays under their (transformers) names, quantized
    layers dequantized exactly as mlx computes with them."""
    flat = dict(tree_flatten(model.parameters()))
    out = {}
    for name, v in flat.items():
        if name.endswith((".scales", ".biases")):
            continue
        if f"{name[:-len('weight')]}scales" in flat and name.endswith("weight"):
            stem = name[:-len("weight")]
            mod = _module_at(model, stem.rstrip("."))
            v = mx.dequantize(v, flat[stem + "scales"], flat.get(stem + "biases"),
                              group_size=mod.group_size, bits=mod.bits)
        out[name] = np.array(v.astype(mx.float32))
    return out


def _module_at(model, path: str):
    mod = model
    for part in path.split("."):
        mod = mod[int(part)] if part.isdigit() else getattr(mod, part)
    return mod


def load_stored_into(torch_model, weights: dict[str, np.ndarray]) -> None:
    """Copy the folder's weights into ``torch_model`` (same names); every parameter must be
    found, except a tied output head."""
    tied = bool(getattr(torch_model.config, "tie_word_embeddings", False))
    with torch.no_grad():
        for name, p in torch_model.named_parameters():
            if name not in weights:
                if tied and name == "lm_head.weight":
                    continue
                raise VerificationError(f"the mlx-lm folder has no weight {name!r} (mlx-lm names "
                                        "this architecture's weights differently; it cannot be "
                                        "checked); nothing written")
            w = torch.from_numpy(weights[name])
            if tuple(w.shape) != tuple(p.shape):
                raise VerificationError(f"the mlx-lm folder's {name} has shape {tuple(w.shape)}, "
                                        f"the model's {tuple(p.shape)}; nothing written")
            p.copy_(w.to(p.dtype))


def mlx_probe_logits(model, batch: dict) -> torch.Tensor:
    """Logits ``[B, T, V]`` of an mlx-lm model on the probe batch (right-padded: causal attention
    keeps the real positions unaffected by the padding after them), float64 torch."""
    ids = mx.array(batch["input_ids"].numpy())
    logits = model(ids).astype(mx.float32)
    return torch.from_numpy(np.array(logits)).double()


def export_mlx(adapter: str, out: str, *, model: str | None = None, quantize: int | None = None,
               group_size: int = 64, dtype: str = "bfloat16", overwrite: bool = False,
               strict: bool = False, prompts=None, person=None, max_prompts: int = MAX_PROMPTS,
               max_new_tokens: int = MAX_NEW_TOKENS, log=lambda s: None) -> dict:
    """Write the fused folder ``out`` (see the module docstring); returns the report written to
    ``out/export.json``."""
    from ..backends.torch.adapters import attach_adapter, base_model_of
    from ..backends.torch.load import quiet_hf

    quiet_hf()
    if dtype not in DTYPES:
        raise MindprintError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    if quantize is not None and quantize not in BITS:
        raise MindprintError(f"--quantize {quantize}: mlx quantizes to {', '.join(map(str, BITS))} "
                             "bits")
    if group_size not in GROUP_SIZES:
        raise MindprintError(f"--group-size {group_size}: choose one of "
                             f"{', '.join(map(str, GROUP_SIZES))}")
    out_path = check_writable(out, overwrite=overwrite, kind="directory")
    spec, _ = base_model_of(adapter, model)
    ref = resolve(spec)
    src = run_sources(adapter)
    voice = VoiceCheck(prompts=prompts or src.get("prompts", ()),
                       person=person or src.get("person", ()),
                       system_prompt=src.get("system_prompt"), max_prompts=max_prompts,
                       max_new_tokens=max_new_tokens)
    base, tok = load_full_precision(ref, device="cpu")
    _check_supported(base.config)
    batch = probe_batch(tok)
    base_answers = voice.answers(base, tok) if voice.active else None
    merged, res = merge_verified(attach_adapter(base, adapter, spec), tok, log=log)
    merged.eval()
    source_logits = res["logits"]
    source_answers = voice.answers(merged, tok) if voice.active else None
    label = _label(dtype, quantize, group_size)
    info: dict = {"source": {"model": spec, "adapter": str(Path(adapter).resolve()),
                             "run_config": src.get("config")},
                  "format": "mlx-lm", "dtype": dtype, "quantize": quantize,
                  "group_size": group_size if quantize else None, "label": label,
                  "mindprint_version": __version__, "merge_checks": res["checks"]}
    warnings: list[str] = []
    scratch = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.hf-", dir=_parent(out_path)))
    try:
        save_checkpoint(merged, tok, scratch, {"adapter": info["source"]["adapter"]})
        with atomic_dir(out_path) as tmp:
            folder = tmp / "model"       # mlx_lm.convert refuses a folder that exists
            _convert(scratch, folder, dtype=dtype, bits=quantize, group_size=group_size, log=log)
            shutil.rmtree(scratch)
            for f in folder.iterdir():
                f.rename(tmp / f.name)
            folder.rmdir()
            info["verification"], warnings = _verify(tmp, merged, tok, batch, source_logits,
                                                    voice, source_answers, base_answers,
                                                    dtype=dtype, bits=quantize, label=label)
            if strict and warnings:
                raise VerificationError("--strict: " + "; ".join(warnings) + "; nothing written")
            info["bytes"] = sum(f.stat().st_size for f in tmp.iterdir() if f.is_file())
            info["warnings"] = warnings
            info["report"] = str(out_path / REPORT)
            (tmp / REPORT).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    except OSError as e:
        raise MindprintError(f"{out_path}: cannot write the mlx-lm folder ({e.strerror or e})") \
            from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return info


def _parent(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    return p.parent


def quantized_layers(model) -> dict:
    """Which matrices of the loaded folder are quantized. mlx-lm quantizes a layer only when its
    rows divide into whole groups and keeps the others in full precision: they are named here
    (and in the report) rather than left unsaid."""
    done, kept = 0, []
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            done += 1
        elif isinstance(mod, (nn.Linear, nn.Embedding)):
            kept.append(name)
    return {"quantized": done, "kept_full_precision": sorted(kept)}


def _verify(folder: Path, merged, tok, batch, source_logits, voice, source_answers,
            base_answers, *, dtype: str, bits: int | None, label: str) -> tuple[dict, list]:
    try:
        mmodel, _wrapper = mlx_load(str(folder))
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise VerificationError(f"mlx_lm.load cannot read the written folder: "
                                f"{str(e).splitlines()[0]}; nothing written") from None
    tok2 = load_tokenizer(str(folder))
    check_tokenizer(tok, tok2)
    layers = quantized_layers(mmodel) if bits else None
    # the mlx backend's policy (backends/mlx/model.py pick_dtype): float32 on a CPU, whose mlx
    # bf16 kernels are slow (a 40-token answer of the bundled model took minutes), the folder's
    # own dtype on a GPU
    on_cpu = mx.default_device() == mx.cpu
    if on_cpu:
        mmodel.set_dtype(mx.float32)
    file_answers = mlx_generate(mmodel, tok2, voice.prompts, max_new_tokens=voice.max_new_tokens) \
        if voice.active else None
    # logits in float32 from the stored weights, against torch with the same weights
    mmodel.set_dtype(mx.float32)
    file_logits = mlx_probe_logits(mmodel, batch)
    load_stored_into(merged, stored_weights(mmodel))
    rounded_logits = probe_logits(merged, batch)
    need = MIN_TOP1[bits or dtype]
    checks, warnings = check_logits(file_logits, source_logits, rounded_logits, batch, label,
                                    min_top1=need)
    if voice.active:
        checks["voice"], w = voice.compare(source_answers, file_answers, base_answers,
                                           remedy="more bits (--quantize 8) or none may keep it")
        checks["voice"]["computed_in"] = "float32" if on_cpu else dtype
        warnings += w
    else:
        checks["voice"] = {"skipped": voice.note}
    if layers is not None:
        checks["layers"] = layers
    return checks, warnings


__all__ = ["BITS", "DTYPES", "GROUP_SIZES", "MIN_TOP1", "export_mlx"]
