"""The GGUF writer: a float transformers model and its tokenizer as one GGUF file, written with
the ``gguf`` package (no llama.cpp build needed), following llama.cpp's ``convert_hf_to_gguf.py``:

* hyperparameters under the architecture's keys (``llama.*``, ``qwen2.*``, ``qwen3.*``);
* tensors under GGUF names (``blk.N.attn_q.weight``…, mapped by ``gguf.get_tensor_name_map``);
  llama's q/k projections are permuted from Hugging Face's rotate-half RoPE layout to the
  interleaved one llama.cpp computes with (transformers undoes this when it loads the file);
  each tensor in the type :func:`.quantize.plan` gives it (llama.cpp's mix for the file type);
* the tokenizer (byte-level BPE: tokens, types, merges, special ids, pre-tokenizer name) and the
  chat template, exactly the tokenizer's (the one training rendered with).

:func:`write_gguf` also returns every matrix as the file stores it, decoded and mapped back to
the Hugging Face layout, so the caller can build the model a correct file must reproduce.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import MindprintError
from .quantize import QUANTS, T, decode, encode, plan

# Hugging Face model_type → (GGUF architecture, permute q/k for llama.cpp's RoPE layout)
ARCHS = {
    "llama": ("llama", True),
    "mistral": ("llama", True),
    "qwen2": ("qwen2", False),
    "qwen3": ("qwen3", False),
}

# Pre-tokenizer names llama.cpp knows, recognised from tokenizer.json's pre_tokenizer.
_GPT2_REGEX = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
_LLAMA3_REGEX = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}"
                 "\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
_QWEN2_REGEX = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
                "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")


class ExportError(MindprintError):
    """The model cannot be written as GGUF by this writer."""


# -- tokenizer ---------------------------------------------------------------------------------


def _pre_tokenizer_name(tj: dict) -> str:
    """llama.cpp's name for the pre-tokenizer (it picks the split regex by this name), read from
    what tokenizer.json does; unknown ones get llama.cpp's generic \"default\"."""
    pre = tj.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    regex = next((p.get("pattern", {}).get("Regex") for p in parts if p.get("type") == "Split"), None)
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits"):
        return "smollm"
    if regex == _LLAMA3_REGEX:
        return "llama-bpe"
    if regex == _QWEN2_REGEX:
        return "qwen2"
    if regex == _GPT2_REGEX:
        return "gpt-2"
    return "default"


def tokenizer_fields(tok, vocab_size: int) -> dict:
    """GGUF ``tokenizer.*`` values for a byte-level BPE tokenizer (GPT-2 style)."""
    tj = json.loads(tok.backend_tokenizer.to_str())
    model = tj.get("model", {})
    decoder = tj.get("decoder") or {}
    byte_level = decoder.get("type") == "ByteLevel" or any(
        d.get("type") == "ByteLevel" for d in decoder.get("decoders", []))
    if model.get("type") != "BPE" or not byte_level:
        raise ExportError(f"GGUF export supports byte-level BPE tokenizers (GPT-2, Llama 3, Qwen, "
                          f"SmolLM style); this one is {model.get('type')} with a "
                          f"{decoder.get('type')} decoder")
    id_to_tok = {i: t for t, i in model["vocab"].items()}
    added = {t.content: (i, t.special) for i, t in tok.added_tokens_decoder.items()}
    for content, (i, _) in added.items():
        id_to_tok[i] = content
    n = max(vocab_size, max(id_to_tok) + 1)
    if n > vocab_size:
        raise ExportError(f"the tokenizer has {n} tokens but the model's vocabulary is {vocab_size}")
    tokens, types = [], []
    for i in range(n):
        t = id_to_tok.get(i)
        if t is None:
            tokens.append(f"[PAD{i}]")
            types.append(5)                                   # UNUSED
        elif t in added:
            tokens.append(t)
            types.append(3 if added[t][1] else 4)             # CONTROL / USER_DEFINED
        else:
            tokens.append(t)
            types.append(1)                                   # NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    probe = tok("x", add_special_tokens=True)["input_ids"]
    out = {"model": "gpt2", "pre": _pre_tokenizer_name(tj), "tokens": tokens,
           "token_type": types, "merges": merges,
           "add_bos": bool(tok.bos_token_id is not None and probe[:1] == [tok.bos_token_id]),
           "add_eos": bool(tok.eos_token_id is not None and probe[-1:] == [tok.eos_token_id]),
           "chat_template": tok.chat_template}
    for key in ("bos", "eos", "unk", "pad"):
        v = getattr(tok, f"{key}_token_id", None)
        if v is not None:
            out[f"{key}_id"] = int(v)
    return out


# -- tensors -----------------------------------------------------------------------------------


def _permute(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """Hugging Face rotate-half q/k rows → llama.cpp's interleaved pairs (convert_hf_to_gguf)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def _rope_theta(cfg) -> float:
    rp = getattr(cfg, "rope_parameters", None) or {}
    theta = rp.get("rope_theta") if isinstance(rp, dict) else None
    return float(theta if theta is not None else getattr(cfg, "rope_theta", 10000.0))


def _check_supported(cfg) -> tuple[str, bool]:
    mt = getattr(cfg, "model_type", None)
    if mt not in ARCHS:
        raise ExportError(f"GGUF export supports {', '.join(sorted(ARCHS))} models; this one is "
                          f"'{mt}'")
    rp = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    rope_type = rp.get("rope_type", rp.get("type", "default")) if isinstance(rp, dict) else "default"
    if rope_type not in (None, "default"):
        raise ExportError(f"GGUF export does not write RoPE scaling ('{rope_type}') yet")
    return ARCHS[mt]



def _to_llama_layout(cfg, hf_name: str, data: np.ndarray) -> np.ndarray:
    """llama's q/k rows permuted for llama.cpp's RoPE; every other tensor as it is."""
    _, permute = _check_supported(cfg)
    n_head = cfg.num_attention_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_head
    if permute and hf_name.endswith("self_attn.q_proj.weight"):
        return _permute(data, n_head, n_head)
    if permute and hf_name.endswith("self_attn.k_proj.weight"):
        return _permute(data, n_head, n_kv)
    return data


def gguf_tensors(model) -> dict[str, tuple[str, np.ndarray]]:
    """GGUF name → (Hugging Face name, float32 array in llama.cpp's layout), tied head left out."""
    import gguf

    cfg = model.config
    arch, _ = _check_supported(cfg)
    arch_id = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    name_map = gguf.get_tensor_name_map(arch_id, cfg.num_hidden_layers)
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    out = {}
    for hf_name, t in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue
        gname = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gname is None:
            raise ExportError(f"no GGUF name for tensor '{hf_name}' ({arch})")
        data = t.detach().to(torch.float32).cpu().numpy()
        if not np.isfinite(data).all():
            raise ExportError(f"tensor '{hf_name}' holds NaN or infinite values; nothing written")
        out[gname] = (hf_name, _to_llama_layout(cfg, hf_name, data))
    return out


def to_hf_layout(model, hf_name: str, data: np.ndarray) -> np.ndarray:
    """A matrix as the file stores it, rows put back where the writer took them from. The row
    order comes from applying the writer's own layout to row numbers, so this does not depend on
    any reader's idea of the layout (the file check compares with transformers' reader)."""
    rows = np.arange(data.shape[0], dtype=np.float64)[:, None]
    order = _to_llama_layout(model.config, hf_name, rows)[:, 0].astype(np.int64)
    out = np.empty_like(data)
    out[order] = data
    return out


def write_gguf(model, tok, path: Path, *, quant: str = "f16", name: str = "model",
               tensors: dict | None = None, types: dict | None = None) -> tuple[dict, dict]:
    """Write ``model`` (a float transformers causal LM) and ``tok`` to ``path`` in ``quant``
    (a key of :data:`.quantize.QUANTS`; ``types`` overrides the per-tensor plan, e.g. all F32
    for llama.cpp's quantizer). Returns (counts and plan, {HF name: matrix as stored, decoded,
    HF layout})."""
    import gguf

    cfg = model.config
    arch, _ = _check_supported(cfg)
    tk = tokenizer_fields(tok, cfg.vocab_size)
    tensors = gguf_tensors(model) if tensors is None else tensors
    n_head = cfg.num_attention_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_head
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    p = plan({g: a.shape for g, (_, a) in tensors.items()}, quant, int(cfg.num_hidden_layers))
    if types is not None:
        p.types, p.fallbacks = dict(types), {}

    w = gguf.GGUFWriter(str(path), arch)
    if cfg.model_type == "mistral" and "mistral" not in name.lower():
        name = f"{name}-mistral"            # transformers reads llama + "mistral" name as Mistral
    w.add_name(name)
    w.add_type("model")
    w.add_context_length(int(cfg.max_position_embeddings))
    w.add_embedding_length(int(cfg.hidden_size))
    w.add_block_count(int(cfg.num_hidden_layers))
    w.add_feed_forward_length(int(cfg.intermediate_size))
    w.add_head_count(int(n_head))
    w.add_head_count_kv(int(n_kv))
    w.add_rope_dimension_count(int(head_dim))
    if head_dim != cfg.hidden_size // n_head:
        w.add_key_length(int(head_dim))
        w.add_value_length(int(head_dim))
    w.add_rope_freq_base(_rope_theta(cfg))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_vocab_size(int(cfg.vocab_size))
    w.add_file_type(QUANTS[quant][0] if types is None else gguf.LlamaFileType.ALL_F32)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    w.add_tokenizer_model(tk["model"])
    w.add_tokenizer_pre(tk["pre"])
    w.add_token_list(tk["tokens"])
    w.add_token_types(tk["token_type"])
    w.add_token_merges(tk["merges"])
    for key, add in (("bos_id", w.add_bos_token_id), ("eos_id", w.add_eos_token_id),
                     ("unk_id", w.add_unk_token_id), ("pad_id", w.add_pad_token_id)):
        if key in tk:
            add(tk[key])
    w.add_add_bos_token(tk["add_bos"])
    w.add_add_eos_token(tk["add_eos"])
    w.add_add_space_prefix(False)
    if tk["chat_template"]:
        w.add_chat_template(tk["chat_template"])

    stored = {}
    for gname, (hf_name, data) in tensors.items():
        t = p.types[gname]
        raw = encode(data, t)
        if t in (T.F32, T.F16):
            w.add_tensor(gname, raw)
        else:
            w.add_tensor(gname, raw, raw_dtype=t)
        if data.ndim >= 2:
            stored[hf_name] = to_hf_layout(model, hf_name, decode(raw, t, data.shape))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    info = {"tensors": p.counts(), "types": {g: t.name for g, t in p.types.items()},
            "fallbacks": p.fallbacks, "pre_tokenizer": tk["pre"], "vocab": len(tk["tokens"])}
    return info, stored


def read_stored(model, path: Path, reader=None) -> dict:
    """{HF name: matrix} as a GGUF file stores them (decoded by the ``gguf`` reader, Hugging Face
    layout): the model a file written by another quantizer (llama.cpp) must reproduce."""
    import gguf

    by_gguf = {g: hf for g, (hf, _) in gguf_tensors(model).items()}
    out = {}
    for t in (reader or gguf.GGUFReader(str(path))).tensors:
        hf = by_gguf.get(t.name)
        if hf is None or len(t.shape) < 2:
            continue
        shape = tuple(int(s) for s in reversed(t.shape))           # GGUF lists ne[0] first
        data = decode(np.asarray(t.data), T(t.tensor_type), shape)
        out[hf] = to_hf_layout(model, hf, data)
    return out
