"""GGUF quantization types: which tensor gets which type (llama.cpp's mixes), and the encoders.

``--quant`` names a llama.cpp file type. Which GGML type each tensor gets follows llama.cpp's
``llama_tensor_get_type`` (src/llama-quant.cpp) for the dense architectures this writer supports
(llama, mistral, qwen2, qwen3; no experts, not Falcon, not a 70B):

* only matrices whose name ends in ``weight`` are quantized (norms and biases stay F32);
* the output head (``output.weight``; with tied embeddings ``token_embd.weight``, which then is
  the head) gets Q6_K, or Q8_0 when its rows are not a multiple of the file type's block size
  or the file type is Q8_0;
* Q4_K_M and Q5_K_M give Q6_K to ``attn_v`` and ``ffn_down`` of the layers where
  ``use_more_bits`` holds (the first and last eighth of the layers and every third one between);
  every other matrix gets the file type's base type (Q4_K, Q5_K, Q6_K, Q4_0, Q8_0);
* a type whose block does not divide the row length falls back as llama.cpp does: Q4_K → Q5_0,
  Q5_K → Q5_1, Q6_K → Q8_0, and to F16 when that does not divide it either. (For Q4_0/Q8_0
  llama.cpp has no fallback and stops; this writer writes such a matrix as F16 and counts it.)

Layer counters run over the tensors in llama.cpp's order (layer, then name), so ``attn_v`` of the
i-th layer is the i-th ``attn_v`` seen.

Encoders: F16 is NumPy's cast; BF16, Q4_0, Q5_0, Q5_1 and Q8_0 come from the ``gguf`` package
(``gguf.quants.quantize``: llama.cpp's reference encoders in NumPy, maintained with llama.cpp);
Q4_K, Q5_K and Q6_K from :mod:`.kquants` (the ``gguf`` package does not encode them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import gguf
import numpy as np

from .kquants import quantize_k

T = gguf.GGMLQuantizationType
FT = gguf.LlamaFileType

# --quant → (llama.cpp file type, base tensor type)
QUANTS = {
    "f16": (FT.MOSTLY_F16, T.F16),
    "bf16": (FT.MOSTLY_BF16, T.BF16),
    "q8_0": (FT.MOSTLY_Q8_0, T.Q8_0),
    "q6_k": (FT.MOSTLY_Q6_K, T.Q6_K),
    "q5_k_m": (FT.MOSTLY_Q5_K_M, T.Q5_K),
    "q4_k_m": (FT.MOSTLY_Q4_K_M, T.Q4_K),
    "q4_0": (FT.MOSTLY_Q4_0, T.Q4_0),
}
FALLBACK = {T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0}
MORE_BITS = {"q4_k_m", "q5_k_m"}       # file types that raise attn_v / ffn_down to Q6_K
_LAYER = re.compile(r"^blk\.(\d+)\.")


def block_size(t: T) -> int:
    return gguf.GGML_QUANT_SIZES[t][0]


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp: the first and last eighth of the layers, and every third layer between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _llama_order(name: str) -> tuple[int, str]:
    m = _LAYER.match(name)
    return (int(m.group(1)) if m else -1, name)


def quantizable(name: str, shape: tuple[int, ...]) -> bool:
    """llama.cpp's ``tensor_allows_quantization`` for these architectures."""
    return len(shape) >= 2 and name.endswith("weight") and "_norm.weight" not in name


@dataclass
class Plan:
    """The GGML type of every tensor, and the matrices that fell back to another type."""

    types: dict[str, T]
    fallbacks: dict[str, str]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.types.values():
            out[t.name] = out.get(t.name, 0) + 1
        return dict(sorted(out.items()))


def plan(shapes: dict[str, tuple[int, ...]], quant: str, n_layer: int) -> Plan:
    """GGML type per GGUF tensor name; ``shapes`` are NumPy shapes (rows, cols): llama.cpp's
    ``ne[0]`` (the row length every block must divide) is the last one."""
    _, base = QUANTS[quant]
    tied = "output.weight" not in shapes
    n_attn_v = sum(1 for n in shapes if "attn_v.weight" in n)
    i_attn_v = i_ffn_down = 0
    types: dict[str, T] = {}
    fallbacks: dict[str, str] = {}
    for name in sorted(shapes, key=_llama_order):
        shape = shapes[name]
        if not quantizable(name, shape):
            types[name] = T.F32
            continue
        t = base
        if base in (T.F16, T.BF16):
            types[name] = t
            continue
        cols = shape[-1]
        if name == "output.weight" or (tied and name == "token_embd.weight"):
            if cols % block_size(t):
                t = T.Q8_0
            elif t != T.Q8_0:
                t = T.Q6_K
        elif "attn_v.weight" in name:
            if quant in MORE_BITS and use_more_bits(i_attn_v, n_attn_v):
                t = T.Q6_K
            i_attn_v += 1
        elif "ffn_down" in name:
            if quant in MORE_BITS and use_more_bits(i_ffn_down, n_layer):
                t = T.Q6_K
            i_ffn_down += 1
        if cols % block_size(t):
            want = t
            t = FALLBACK.get(t, T.F16)
            if cols % block_size(t):
                t = T.F16
            fallbacks[name] = f"{want.name} → {t.name} (rows of {cols} are not a multiple of " \
                              f"{block_size(want)})"
        types[name] = t
    return Plan(types, fallbacks)


def encode(data: np.ndarray, t: T) -> np.ndarray:
    """A float32 array in type ``t``, shaped as ``gguf.GGUFWriter.add_tensor`` takes it."""
    if t == T.F32:
        return np.ascontiguousarray(data, dtype=np.float32)
    if t == T.F16:
        return np.ascontiguousarray(data, dtype=np.float16)
    if t.name in ("Q4_K", "Q5_K", "Q6_K"):
        return quantize_k(data, t.name)
    return gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), t)


def decode(raw: np.ndarray, t: T, shape: tuple[int, ...]) -> np.ndarray:
    """What a reader gets back from :func:`encode`'s output (float32, ``shape``)."""
    if t in (T.F32, T.F16):
        return np.asarray(raw, dtype=np.float32).reshape(shape)
    return gguf.quants.dequantize(raw, t).reshape(shape).astype(np.float32)


def tensor_bytes(shape: tuple[int, ...], t: T) -> int:
    """Bytes of a tensor of ``shape`` in type ``t`` (without alignment padding)."""
    blk, size = gguf.GGML_QUANT_SIZES[t]
    n = int(np.prod(shape))
    return n // blk * size
