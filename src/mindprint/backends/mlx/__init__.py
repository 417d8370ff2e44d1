"""The mlx backend (mlx-lm models and LoRA layers).

On Linux the ``mlx[cpu]`` wheels link the reference (Netlib) BLAS: its ``cblas_sgemm`` runs at
~3–6 GFLOP/s on one core, where OpenBLAS reaches ~90 (measured on this project's 2-core Zen 4 CI:
a 576×1536×576 product at 3.2 vs 88 GFLOP/s), and every MLX matrix product on the CPU goes
through it. libmlx resolves ``cblas_sgemm`` through the process's global symbol scope first, so
an OpenBLAS loaded with ``RTLD_GLOBAL`` *before* ``mlx.core`` is imported serves those calls
instead (same results up to float32 summation order). :func:`fast_blas` does that when it finds
one; importing this package calls it. ``MINDPRINT_MLX_BLAS=off`` keeps the wheel's BLAS; a path
there names the library to use. Nothing changes on macOS (Accelerate) or once mlx is imported.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_CANDIDATES = ("/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
               "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
               "/usr/lib64/libopenblas.so.0", "/usr/lib/libopenblas.so.0")
_loaded: str | None = None


def fast_blas() -> str | None:
    """Load an optimised BLAS for MLX's CPU matrix products (see the module docstring); returns
    its path, or None when none is used."""
    global _loaded
    if _loaded is not None:
        return _loaded
    choice = os.environ.get("MINDPRINT_MLX_BLAS", "auto")
    if sys.platform != "linux" or choice == "off" or "mlx.core" in sys.modules:
        return None
    paths = [choice] if choice != "auto" else \
        [p for p in (ctypes.util.find_library("openblas"), *_CANDIDATES) if p]
    for path in paths:
        try:
            lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        if hasattr(lib, "cblas_sgemm"):
            _loaded = path
            return path
    return None


fast_blas()


def configure_process(cfg=None, *, device: str | None = None) -> dict:
    """The mlx backend's process set-up (:func:`mindprint.backends.process.configure_process`):
    the BLAS of :func:`fast_blas` (already loaded when this package was imported first)."""
    path = fast_blas()
    return {"blas": path} if path else {}
