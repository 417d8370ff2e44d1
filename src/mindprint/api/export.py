"""``mindprint.export``: an adapter as a merged checkpoint, a GGUF file, or another adapter format.

One function over the three export commands, choosing by ``to`` (:data:`TARGETS`):

=========  =====================================================  ===========================
``to``     writes                                                 same as
=========  =====================================================  ===========================
merged     a standalone Hugging Face checkpoint, verified          ``mindprint merge``
gguf       one ``.gguf`` file for llama.cpp runtimes, read back    ``mindprint export gguf``
peft, mlx  the adapter in PEFT or mlx-lm format                    ``mindprint adapters convert``
mlx-fused  an mlx-lm model folder, adapter merged (``quantize``       ``mindprint export mlx``
           bits), loaded back with ``mlx_lm.load`` and checked
=========  =====================================================  ===========================

Each returns the command's own record (the merge's verification report, the GGUF's size and
checks, the conversion's source format) with ``out`` and ``to`` added.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..backends.process import configure_process
from ..errors import MindprintError
from ..outputs import adapter_dir
from ..runs import Run

TARGETS = ("merged", "gguf", "peft", "mlx", "mlx-fused")


def _merged(adapter, out, *, model, dtype, device, dequantize, overwrite, log, num_layers,
            quantize, group_size):
    from ..export.merge import merge          # torch: only for the targets that load a model

    if adapter is None:
        raise MindprintError("export to 'merged' needs an adapter")
    _no_quantize("merged", quantize)
    return merge(str(adapter), str(out), model=model, dtype=dtype or "float32", device=device,
                 dequantize=dequantize, overwrite=overwrite, log=log)


def _gguf(adapter, out, *, model, dtype, device, dequantize, overwrite, log, num_layers,
          quantize, group_size):
    from ..export.gguf import export_gguf

    _no_quantize("gguf", quantize)
    return export_gguf(str(out), adapter=str(adapter) if adapter else None, model=model,
                       dtype=dtype or "f16", device=device, dequantize=dequantize,
                       overwrite=overwrite, log=log)


def _adapter_format(to: str):
    def run(adapter, out, *, model, dtype, device, dequantize, overwrite, log, num_layers,
            quantize, group_size):
        from ..export.adapters import convert

        if adapter is None:
            raise MindprintError(f"export to '{to}' needs an adapter")
        if dtype or model or dequantize or quantize:
            raise MindprintError(f"export to '{to}' converts the adapter's own weights: model, "
                                 "dtype, dequantize and quantize do not apply")
        if Path(out).exists() and not overwrite:
            raise MindprintError(f"{out} exists: pass overwrite=True to replace it")
        return {"source_format": convert(adapter, Path(out), to, num_layers=num_layers)}
    return run


def _mlx_fused(adapter, out, *, model, dtype, device, dequantize, overwrite, log, num_layers,
               quantize, group_size):
    from ..export.mlx import export_mlx

    if adapter is None:
        raise MindprintError("export to 'mlx-fused' needs an adapter")
    if dequantize:
        raise MindprintError("export to 'mlx-fused': dequantize does not apply")
    return export_mlx(str(adapter), str(out), model=model, quantize=quantize,
                      group_size=group_size, dtype=dtype or "bfloat16", overwrite=overwrite,
                      log=log)


def _no_quantize(to: str, quantize) -> None:
    if quantize:
        raise MindprintError(f"export to '{to}': quantize applies to 'mlx-fused' (gguf: dtype "
                             "names the file type, e.g. q4_k_m)")


_EXPORTERS: dict[str, Callable[..., dict]] = {
    "merged": _merged, "gguf": _gguf, "peft": _adapter_format("peft"),
    "mlx": _adapter_format("mlx"), "mlx-fused": _mlx_fused,
}


def export(adapter: str | os.PathLike | Run | None, out: str | os.PathLike, *, to: str = "merged",
           model: str | None = None, dtype: str | None = None, device: str = "auto",
           dequantize: bool = False, overwrite: bool = False, num_layers: int | None = None,
           quantize: int | None = None, group_size: int = 64,
           log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Export ``adapter`` (an adapter directory, a run directory or a :class:`Run`) to ``out``
    as ``to`` (one of :data:`TARGETS`; see the module docstring).

    ``model``: the base model (default: the adapter's); for ``gguf`` without an adapter, the
    model to convert as is. ``dtype``: ``merged`` float32 (default), bfloat16 or float16;
    ``gguf`` a file type (f16 default, q8_0, q4_k_m …); ``mlx-fused`` bfloat16 (default),
    float16 or float32. ``quantize``/``group_size``: ``mlx-fused`` only, bits (2–8) and group.
    ``dequantize`` merges into a full-precision copy of a quantised base. ``num_layers``: mlx-lm's ``num_layers`` for ``to="mlx"`` (default: the
    highest adapted layer + 1). An existing ``out`` is an error unless ``overwrite``; every
    output is written atomically.
    """
    if to not in _EXPORTERS:
        raise MindprintError(f"export: to={to!r}; choose one of {', '.join(TARGETS)}")
    if isinstance(adapter, Run):
        adapter = adapter.path
    src = adapter_dir(adapter) if adapter is not None else None
    if to in ("merged", "gguf", "mlx-fused"):
        configure_process(backend="torch", device=device)
    info = _EXPORTERS[to](src, out, model=model, dtype=dtype, device=device,
                          dequantize=dequantize, overwrite=overwrite,
                          log=log or (lambda s: None), num_layers=num_layers,
                          quantize=quantize, group_size=group_size)
    return {**info, "out": str(out), "to": to}


__all__ = ["TARGETS", "export"]
