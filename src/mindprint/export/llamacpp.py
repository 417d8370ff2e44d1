"""llama.cpp itself, through llama-cpp-python, when it is installed (``make verify-llamacpp``
builds it from source; PyPI ships only the source).

* :func:`quantize_file`: ``llama_model_quantize`` on a float32 GGUF file, the quantizer
  ``llama-quantize`` runs; ``mindprint export gguf`` prefers it to the NumPy encoders when
  llama-cpp-python is importable (``--quantizer numpy`` or ``llama.cpp`` to choose);
* :func:`quantize_rows`: ggml's own block encoder (``ggml_quantize_chunk`` from the ggml library
  llama-cpp-python ships), for the bit-for-bit tests of :mod:`.kquants`;
* :func:`chat`: greedy answers from a GGUF file with the chat template embedded in it (llama.cpp's
  Jinja renderer), stopping where llama.cpp stops (its end-of-generation tokens).
"""

from __future__ import annotations

import ctypes
import importlib.util
from pathlib import Path

import numpy as np

from ..errors import ModelError
from .quantize import QUANTS, T, tensor_bytes

OPTIONAL = "optional: llama-cpp-python not installed"


def available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        raise ModelError("llama.cpp is not installed: `make verify-llamacpp` builds "
                         "llama-cpp-python from source (or pip install llama-cpp-python)") from None
    return llama_cpp


def quantize_file(src: Path, dst: Path, quant: str, *, nthread: int = 0) -> None:
    """``src`` (a float32 GGUF) → ``dst`` in llama.cpp file type ``quant``."""
    lc = _llama_cpp()
    params = lc.llama_model_quantize_default_params()
    params.ftype = int(QUANTS[quant][0])
    params.nthread = nthread
    rc = lc.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise ModelError(f"llama.cpp could not quantize {src.name} to {quant} (code {rc})")


def _ggml():
    lc = _llama_cpp()
    lib_dir = Path(lc.__file__).parent / "lib"
    for name in ("libggml-base.so", "libggml-base.dylib", "libggml.so", "libggml.dylib"):
        if (lib_dir / name).exists():
            lib = ctypes.CDLL(str(lib_dir / name))
            break
    else:
        raise ModelError(f"{lib_dir}: no ggml library found beside llama-cpp-python")
    fn = lib.ggml_quantize_chunk
    fn.restype = ctypes.c_size_t
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                   ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    return fn


def quantize_rows(data: np.ndarray, t: T) -> np.ndarray:
    """ggml's encoding of a float32 matrix ``[rows, cols]`` in type ``t``, in the byte layout
    :func:`.quantize.encode` returns."""
    fn = _ggml()
    x = np.ascontiguousarray(data, dtype=np.float32)
    rows, cols = x.shape
    n = tensor_bytes(x.shape, t)
    out = np.zeros(n, dtype=np.uint8)
    got = fn(int(t), x.ctypes.data, out.ctypes.data, 0, rows, cols, None)
    if got != n:
        raise ModelError(f"ggml_quantize_chunk wrote {got} bytes, expected {n}")
    return out.reshape(rows, n // rows)


def chat(path: Path, conversations: list[list[dict]], *, max_tokens: int = 64,
         n_ctx: int = 1024) -> list[dict]:
    """Greedy answers from the GGUF file at ``path`` with its embedded chat template: per
    conversation ``text`` and ``finish_reason`` ("stop": llama.cpp met an end-of-generation
    token; "length": ``max_tokens`` ran out)."""
    lc = _llama_cpp()
    llm = lc.Llama(model_path=str(path), n_ctx=n_ctx, verbose=False, seed=0)
    out = []
    for conv in conversations:
        r = llm.create_chat_completion(messages=conv, max_tokens=max_tokens, temperature=0.0,
                                       top_k=1)
        c = r["choices"][0]
        out.append({"text": c["message"]["content"], "finish_reason": c["finish_reason"]})
    return out
