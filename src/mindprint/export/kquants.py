"""llama.cpp's k-quant block formats Q4_K, Q5_K and Q6_K, quantized in NumPy.

The ``gguf`` package (0.19) *dequantizes* every k-quant but *quantizes* only Q4_0/Q4_1/Q5_0/Q5_1/
Q8_0/BF16 (those come from it, see :mod:`.quantize`); no package on PyPI quantizes k-quants
without building llama.cpp. So this module implements the three k-quant encoders of llama.cpp's
``ggml-quants.c`` (``quantize_row_q{4,5,6}_K_ref``, used by ``llama-quantize`` when no importance
matrix is given), written from its description and vectorised over blocks. The aim is the same
bytes as llama.cpp: every float operation is float32 in llama.cpp's order (the running sums are
sequential float32 sums, not pairwise NumPy sums), rounding is ``nearest_int`` (round half to
even: ``np.rint``), and fp16 stores round to nearest even (``astype(np.float16)``).
``tests/export/test_quants.py`` compares the bytes with llama.cpp's when llama-cpp-python is
installed.

Block layouts (QK_K = 256 values a super-block, little-endian fp16):

* Q4_K (144 bytes): ``d`` fp16, ``dmin`` fp16, ``scales[12]`` (eight 6-bit scales and eight
  6-bit mins packed), ``qs[128]`` (4-bit codes: byte ``32c + l`` holds value ``64c + l`` in its
  low nibble and ``64c + 32 + l`` in its high nibble). Value = d·sc_j·q − dmin·m_j, sub-blocks
  of 32.
* Q5_K (176 bytes): as Q4_K plus ``qh[32]`` between ``scales`` and ``qs``: bit ``2c`` of
  ``qh[l]`` is bit 4 of value ``64c + l``, bit ``2c + 1`` that of ``64c + 32 + l``.
* Q6_K (210 bytes): ``ql[128]``, ``qh[64]``, ``scales[16]`` (int8), ``d`` fp16. Value =
  d·sc_j·(q − 32), sub-blocks of 16; q's low nibbles in ``ql``, its top 2 bits in ``qh``.

Encoders: each sub-block gets a scale (and for Q4_K/Q5_K a min) from a small search
(``make_qkx2_quants``: weighted least squares over 21 or 16 candidate grid scales; Q6_K:
``make_qx_quants`` with weights x² over 19 candidates), the sub-block scales are themselves
quantized to 6 bits (Q4_K/Q5_K) or int8 (Q6_K) against the super-block's fp16 scale, and every
value is rounded to the nearest code under the stored scales.
"""

from __future__ import annotations

import numpy as np

QK_K = 256
F32 = np.float32
GROUP_MAX_EPS = F32(1e-15)
BLOCK_BYTES = {"Q4_K": 144, "Q5_K": 176, "Q6_K": 210}
CHUNK = 2048            # super-blocks per vectorised step (bounds the temporaries' memory)


def _rint(a: np.ndarray) -> np.ndarray:
    """llama.cpp's ``nearest_int``: round half to even, as int32."""
    return np.rint(a).astype(np.int32)


def _f16(a: np.ndarray) -> np.ndarray:
    """Round to fp16 (nearest even) and back, as llama.cpp's stored-then-read scales."""
    return a.astype(np.float16).astype(F32)


def _seq_sum(terms) -> np.ndarray:
    """Sequential float32 sum over the first axis (llama.cpp's ``for`` loop order)."""
    it = iter(terms)
    acc = np.array(next(it), dtype=F32, copy=True)
    for t in it:
        acc += t
    return acc


def make_qkx2(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float,
              nstep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale, min (≥ 0, subtracted) and codes for sub-blocks ``x`` ``[n, B]`` (values along the
    first axis) with weights ``w``: llama.cpp's ``make_qkx2_quants`` with squared error."""
    n = x.shape[0]
    mn = x.min(axis=0)
    mx = x.max(axis=0)
    sum_w = _seq_sum(w[i] for i in range(n))
    sum_x = _seq_sum(w[i] * x[i] for i in range(n))
    mn = np.where(mn > 0, F32(0), mn)
    mn0 = mn
    flat = mx == mn
    rng = np.where(flat, F32(1), mx - mn)
    iscale = F32(nmax) / rng
    scale = F32(1) / iscale
    L = np.clip(_rint(iscale * (x - mn)), 0, nmax)
    Lf = L.astype(F32)
    best = _seq_sum(w[i] * ((scale * Lf[i] + mn - x[i]) ** 2) for i in range(n))
    for s in range(nstep + 1):
        # (max − min) with the min as it stands: llama.cpp overwrites ``min`` with the best
        # candidate's, so the later grid steps are taken from it
        cur = np.where(flat, F32(1), mx - mn)
        isc = (F32(rmin) + F32(rdelta) * F32(s) + F32(nmax)) / cur
        La = np.clip(_rint(isc * (x - mn)), 0, nmax).astype(F32)
        wl = w * La
        sum_l = _seq_sum(wl[i] for i in range(n))
        sum_l2 = _seq_sum(wl[i] * La[i] for i in range(n))
        sum_xl = _seq_sum(wl[i] * x[i] for i in range(n))
        D = sum_w * sum_l2 - sum_l * sum_l
        ok = D > 0
        Ds = np.where(ok, D, F32(1))
        t_scale = (sum_w * sum_xl - sum_x * sum_l) / Ds
        t_min = (sum_l2 * sum_x - sum_l * sum_xl) / Ds
        pos = t_min > 0
        t_scale = np.where(pos, sum_xl / np.where(sum_l2 == 0, F32(1), sum_l2), t_scale)
        t_min = np.where(pos, F32(0), t_min)
        err = _seq_sum(w[i] * ((t_scale * La[i] + t_min - x[i]) ** 2) for i in range(n))
        better = ok & (err < best)
        L = np.where(better, La.astype(np.int32), L)
        best = np.where(better, err, best)
        scale = np.where(better, t_scale, scale)
        mn = np.where(better, t_min, mn)
    L = np.where(flat, 0, L)
    scale = np.where(flat, F32(0), scale)
    mn = np.where(flat, mn0, mn)
    return scale.astype(F32), (-mn).astype(F32), L


def make_qx(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Signed scale and codes (``0..2·nmax−1``, offset ``nmax``) for sub-blocks ``x`` ``[n, B]``:
    llama.cpp's ``make_qx_quants`` with ``rmse_type`` 1 (weights x²) and no importance."""
    n = x.shape[0]
    idx = np.abs(x).argmax(axis=0)                    # first largest |x|, as the C loop
    mx = np.take_along_axis(x, idx[None], axis=0)[0]
    zero = np.abs(mx) < GROUP_MAX_EPS
    mxs = np.where(zero, F32(1), mx)
    w = x * x

    def codes(iscale):
        return np.clip(_rint(iscale * x), -nmax, nmax - 1)

    def sums(l):
        lf = l.astype(F32)
        wx = w * x
        return (_seq_sum(wx[i] * lf[i] for i in range(n)),
                _seq_sum(w[i] * lf[i] * lf[i] for i in range(n)))

    iscale = F32(-nmax) / mxs
    l = codes(iscale)
    sumlx, suml2 = sums(l)
    scale = np.where(suml2 != 0, sumlx / np.where(suml2 == 0, F32(1), suml2), F32(0))
    best = scale * sumlx
    L = l + nmax
    for s in range(-9, 10):
        if s == 0:
            continue
        isc = -(F32(nmax) + F32(0.1) * F32(s)) / mxs
        l = codes(isc)
        slx, sl2 = sums(l)
        better = (sl2 > 0) & (slx * slx > best * sl2)
        L = np.where(better, l + nmax, L)
        scale = np.where(better, slx / np.where(sl2 == 0, F32(1), sl2), scale)
        best = np.where(better, scale * slx, best)
    return np.where(zero, F32(0), scale).astype(F32), np.where(zero, 0, L)


def _pack_scale_min(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and mins ``[B, 8]`` → the 12-byte k-quant scale field ``[B, 12]``."""
    out = np.zeros((ls.shape[0], 12), np.uint8)
    out[:, 0:4] = ls[:, :4] | ((ls[:, 4:] >> 4) << 6)
    out[:, 4:8] = lm[:, :4] | ((lm[:, 4:] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:] & 0xF) | ((lm[:, 4:] & 0xF) << 4)
    return out


def _q45_k(blocks: np.ndarray, nmax: int, rmin: float, nstep: int):
    """Shared Q4_K/Q5_K encoder for super-blocks ``[B, 256]``: (d, dmin, scale field, codes)."""
    nb = blocks.shape[0]
    x = np.ascontiguousarray(blocks.reshape(nb * 8, 32).T)    # [32, sub-blocks]
    sum_x2 = _seq_sum(x[i] * x[i] for i in range(32))
    av_x = np.sqrt(sum_x2 / F32(32))
    w = av_x + np.abs(x)
    scales, mins, L = make_qkx2(x, w, nmax, rmin, 0.1, nstep)
    scales, mins = scales.reshape(nb, 8), mins.reshape(nb, 8)
    max_scale = np.maximum(scales.max(axis=1), F32(0))
    max_min = np.maximum(mins.max(axis=1), F32(0))
    inv_s = np.where(max_scale > 0, F32(63) / np.where(max_scale > 0, max_scale, F32(1)), F32(0))
    inv_m = np.where(max_min > 0, F32(63) / np.where(max_min > 0, max_min, F32(1)), F32(0))
    # uint8_t ls = nearest_int(...): the C conversion wraps; MIN(63, ·) after it
    ls = np.minimum(_rint(inv_s[:, None] * scales) & 0xFF, 63).astype(np.uint8)
    lm = np.minimum(_rint(inv_m[:, None] * mins) & 0xFF, 63).astype(np.uint8)
    d16 = (max_scale / F32(63)).astype(np.float16)
    dm16 = (max_min / F32(63)).astype(np.float16)
    d = d16.astype(F32)[:, None] * ls.astype(F32)            # [B, 8]
    dm = dm16.astype(F32)[:, None] * lm.astype(F32)
    xs = blocks.reshape(nb, 8, 32)
    dsafe = np.where(d == 0, F32(1), d)
    Lq = np.clip(_rint((xs + dm[..., None]) / dsafe[..., None]), 0, nmax)
    L = np.where((d == 0)[..., None], L.T.reshape(nb, 8, 32), Lq).astype(np.uint8)
    return d16, dm16, _pack_scale_min(ls, lm), L.reshape(nb, 256)


def q4_k_blocks(blocks: np.ndarray) -> np.ndarray:
    """Super-blocks ``[B, 256]`` float32 → Q4_K bytes ``[B, 144]``."""
    d, dm, sc, L = _q45_k(blocks, 15, -1.0, 20)
    L = L.reshape(-1, 4, 2, 32)
    qs = (L[:, :, 0] | (L[:, :, 1] << 4)).reshape(-1, 128)
    return np.concatenate([d.view(np.uint8).reshape(-1, 2), dm.view(np.uint8).reshape(-1, 2),
                           sc, qs], axis=1)


def q5_k_blocks(blocks: np.ndarray) -> np.ndarray:
    """Super-blocks ``[B, 256]`` float32 → Q5_K bytes ``[B, 176]``."""
    d, dm, sc, L = _q45_k(blocks, 31, -0.5, 15)
    L = L.reshape(-1, 4, 2, 32)                     # [B, chunk c, half h, l]
    low = L & 0xF
    qs = (low[:, :, 0] | (low[:, :, 1] << 4)).reshape(-1, 128)
    hi = (L >> 4).astype(np.uint8)                  # bit 2c + h of qh[l]
    shift = (2 * np.arange(4)[:, None] + np.arange(2)[None, :]).astype(np.uint8)
    qh = np.bitwise_or.reduce((hi << shift[None, :, :, None]).reshape(-1, 8, 32), axis=1)
    return np.concatenate([d.view(np.uint8).reshape(-1, 2), dm.view(np.uint8).reshape(-1, 2),
                           sc, qh.astype(np.uint8), qs], axis=1)


def q6_k_blocks(blocks: np.ndarray) -> np.ndarray:
    """Super-blocks ``[B, 256]`` float32 → Q6_K bytes ``[B, 210]``."""
    nb = blocks.shape[0]
    x = np.ascontiguousarray(blocks.reshape(nb * 16, 16).T)   # [16, sub-blocks]
    scales, L0 = make_qx(x, 32)
    scales = scales.reshape(nb, 16)
    L0 = L0.T.reshape(nb, 16, 16)
    idx = np.abs(scales).argmax(axis=1)
    max_scale = np.take_along_axis(scales, idx[:, None], axis=1)[:, 0]
    zero = np.abs(max_scale) < GROUP_MAX_EPS
    iscale = F32(-128) / np.where(zero, F32(1), max_scale)
    d16 = np.where(zero, F32(0), F32(1) / iscale).astype(np.float16)
    sc = np.minimum(_rint(iscale[:, None] * scales), 127).astype(np.int8)
    d = d16.astype(F32)[:, None] * sc.astype(F32)            # [B, 16]
    xs = blocks.reshape(nb, 16, 16)
    dsafe = np.where(d == 0, F32(1), d)
    Lq = np.clip(_rint(xs / dsafe[..., None]), -32, 31) + 32
    L = np.where((d == 0)[..., None], L0, Lq).astype(np.uint8).reshape(nb, 2, 4, 32)
    ql = np.concatenate([(L[:, :, 0] & 0xF) | ((L[:, :, 2] & 0xF) << 4),
                         (L[:, :, 1] & 0xF) | ((L[:, :, 3] & 0xF) << 4)], axis=2).reshape(nb, 128)
    qh = ((L[:, :, 0] >> 4) | ((L[:, :, 1] >> 4) << 2) | ((L[:, :, 2] >> 4) << 4)
          | ((L[:, :, 3] >> 4) << 6)).reshape(nb, 64)
    out = np.concatenate([ql, qh, sc.view(np.uint8), d16.view(np.uint8).reshape(-1, 2)], axis=1)
    out[zero] = 0                                    # llama.cpp zeroes an all-zero block
    return out


ENCODERS = {"Q4_K": q4_k_blocks, "Q5_K": q5_k_blocks, "Q6_K": q6_k_blocks}


def quantize_k(data: np.ndarray, kind: str) -> np.ndarray:
    """A float32 matrix ``[rows, cols]`` (cols a multiple of 256) → ``[rows, cols/256·bytes]``
    uint8, the layout the ``gguf`` package writes and reads."""
    rows, cols = data.shape
    if cols % QK_K:
        raise ValueError(f"{kind} needs rows that are a multiple of {QK_K} long; got {cols}")
    blocks = np.ascontiguousarray(data, dtype=F32).reshape(-1, QK_K)
    enc = ENCODERS[kind]
    out = np.concatenate([enc(blocks[s:s + CHUNK]) for s in range(0, len(blocks), CHUNK)])
    return out.reshape(rows, cols // QK_K * BLOCK_BYTES[kind])
