"""``mindprint export gguf``: a GGUF file written with the ``gguf`` package, verified by reading it
back through transformers' GGUF loader.

No llama.cpp build is needed. What is written, following llama.cpp's ``convert_hf_to_gguf.py``:

* hyperparameters under the architecture's keys (``llama.*``, ``qwen2.*``, ``qwen3.*``);
* tensors under GGUF names (``blk.N.attn_q.weight``…, mapped by ``gguf.get_tensor_name_map``);
  llama's q/k projections are permuted from Hugging Face's rotate-half RoPE layout to the
  interleaved one llama.cpp computes with (transformers undoes this when it loads the file);
  1-D tensors (norms, biases) stay float32, matrices become f16 or q8_0 (q8_0 needs rows that
  are a multiple of 32 long; other matrices fall back to f16, as llama.cpp does);
* the tokenizer (byte-level BPE: tokens, types, merges, special ids, pre-tokenizer name) and the
  chat template.

Verification, before the file is renamed into place. The tokenizer read back from the file must
encode the probe conversations to the same ids and carry the same chat template. The model read
back is compared on the probe inputs (:mod:`.probes`) twice:

* with the source (merged) model whose matrices were rounded exactly as the file stores them:
  max |Δlogit| ≤ ``FILE_TOLERANCE`` (1e-2). This proves the file holds the model (names, q/k
  permutation, shapes, tied head);
* with the unrounded source model: top-1 agreement on the natural-text probe tokens
  ≥ ``MIN_TOP1`` (f16 0.99, q8_0 0.98). An absolute bound here would only measure rounding:
  f16 weights alone move the bundled model's logits (magnitude ~60) by ~0.04, q8_0 by ~1.
"""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import MindprintError, ModelError
from ..models import resolve
from .common import atomic_file, check_writable
from .merge import VerificationError, load_full_precision, merge_verified
from .probes import PROBE_CHATS, compare_logits, probe_batch, probe_logits

FILE_TOLERANCE = 1e-2                     # file vs source rounded as the file stores it
MIN_TOP1 = {"f16": 0.99, "q8_0": 0.98}   # file vs the unrounded source: top-1 agreement
DTYPES = ("f16", "q8_0")

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


def write_gguf(model, tok, path: Path, *, dtype: str = "f16", name: str = "model") -> dict:
    """Write ``model`` (a float transformers causal LM) and ``tok`` to ``path``; returns counts."""
    import gguf

    cfg = model.config
    arch, permute = _check_supported(cfg)
    tk = tokenizer_fields(tok, cfg.vocab_size)
    n_head, n_kv = cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    arch_id = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    name_map = gguf.get_tensor_name_map(arch_id, cfg.num_hidden_layers)

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
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)
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

    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    counts = {"F32": 0, "F16": 0, "Q8_0": 0}
    for hf_name, t in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue
        gname = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gname is None:
            raise ExportError(f"no GGUF name for tensor '{hf_name}' ({arch})")
        data = t.detach().to(torch.float32).cpu().numpy()
        if permute and hf_name.endswith("self_attn.q_proj.weight"):
            data = _permute(data, n_head, n_head)
        elif permute and hf_name.endswith("self_attn.k_proj.weight"):
            data = _permute(data, n_head, n_kv)
        if data.ndim == 1:
            w.add_tensor(gname, np.ascontiguousarray(data, dtype=np.float32))
            counts["F32"] += 1
        elif dtype == "q8_0" and data.shape[-1] % 32 == 0:
            q = gguf.quants.quantize(np.ascontiguousarray(data), gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(gname, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            counts["Q8_0"] += 1
        else:
            w.add_tensor(gname, np.ascontiguousarray(data, dtype=np.float16))
            counts["F16"] += 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {"tensors": counts, "pre_tokenizer": tk["pre"], "vocab": len(tk["tokens"])}


# -- read back and verify ----------------------------------------------------------------------


def load_gguf(path: Path):
    """Model (float32) and tokenizer from a GGUF file, through transformers' GGUF loader."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    old = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"      # transformers' GGUF loader has its own progress bar
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                     dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    finally:
        if old is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old
    model.eval()
    return model, tok


@torch.no_grad()
def round_like_file(model, dtype: str) -> None:
    """Round ``model``'s matrices in place exactly as :func:`write_gguf` stores them, so the
    model's logits are what a correct file must reproduce."""
    import gguf

    q8 = gguf.GGMLQuantizationType.Q8_0
    for p in model.parameters():          # tied weights appear once
        if p.ndim < 2:
            continue
        if dtype == "q8_0" and p.shape[-1] % 32 == 0:
            a = p.detach().to(torch.float32).cpu().numpy()
            back = gguf.quants.dequantize(gguf.quants.quantize(a, q8), q8).reshape(a.shape)
            p.copy_(torch.from_numpy(back))
        else:
            p.copy_(p.to(torch.float16).to(p.dtype))


def verify_gguf(path: Path, source_tok, batch: dict, source_logits, rounded_logits, *,
                dtype: str) -> dict:
    """Check the file's tokenizer and logits; raises :class:`VerificationError`.

    ``source_logits``: the (merged) model's; ``rounded_logits``: the same model with its
    matrices rounded as the file stores them (:func:`round_like_file`).
    """
    loaded, tok2 = load_gguf(path)
    for chat in PROBE_CHATS:
        text = source_tok.apply_chat_template(chat, tokenize=False)
        a = source_tok(text, add_special_tokens=False)["input_ids"]
        b = tok2(text, add_special_tokens=False)["input_ids"]
        if a != b:
            raise VerificationError(f"the GGUF tokenizer encodes a probe text differently "
                                    f"({len(a)} vs {len(b)} tokens); nothing written")
    if (getattr(tok2, "chat_template", None) or None) != (source_tok.chat_template or None):
        raise VerificationError("the GGUF file's chat template differs from the model's; nothing written")
    logits = probe_logits(loaded, batch)
    del loaded
    exact = compare_logits(logits, rounded_logits, batch)
    if not exact["max_abs_diff"] <= FILE_TOLERANCE:
        raise VerificationError(
            f"GGUF verification failed ({dtype}): the file's logits differ by "
            f"{exact['max_abs_diff']:.3g} from the source model rounded to {dtype} (tolerance "
            f"{FILE_TOLERANCE:g}): the file does not hold the model; nothing written")
    fidelity = compare_logits(logits, source_logits, batch)
    need = MIN_TOP1[dtype]
    if not fidelity["top1_agreement"] >= need:
        raise VerificationError(
            f"GGUF verification failed ({dtype}): top-1 agreement with the source model is "
            f"{fidelity['top1_agreement']:.3f} (minimum {need:g}); nothing written")
    return {"against_rounded_source": {**exact, "tolerance": FILE_TOLERANCE},
            "against_source": {**fidelity, "min_top1_agreement": need}}


def export_gguf(out: str, *, adapter: str | None = None, model: str | None = None,
                dtype: str = "f16", device: str = "auto", dequantize: bool = False,
                overwrite: bool = False, log=lambda s: None) -> dict:
    """``mindprint export gguf``: merge (verified) when an adapter is given, write, verify."""
    from ..backends.torch.adapters import attach_adapter, base_model_of
    from ..backends.torch.load import quiet_hf

    quiet_hf()
    if dtype not in DTYPES:
        raise MindprintError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    if not adapter and not model:
        raise MindprintError("give --adapter DIR (merged first) or --model DIR")
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ModelError("GGUF export needs the 'gguf' package: pip install gguf") from None
    out_path = check_writable(out, overwrite=overwrite, kind="file")
    if out_path.suffix.lower() != ".gguf":
        raise MindprintError(f"{out}: the output file should end in .gguf")
    spec, _ = base_model_of(adapter, model)
    ref = resolve(spec)
    base, tok = load_full_precision(ref, device=device, dequantize=dequantize)
    _check_supported(base.config)
    info: dict = {"source": {"model": spec, "adapter": str(Path(adapter).resolve()) if adapter else None},
                  "dtype": dtype, "mindprint_version": __version__}
    batch = probe_batch(tok)
    if adapter:
        merged, res = merge_verified(attach_adapter(base, adapter, spec), tok, log=log)
        info["merge_checks"] = res["checks"]
        source_logits = res["logits"]
    else:
        merged = base
        source_logits = probe_logits(merged, batch)
    merged.eval()
    name = Path(adapter).resolve().parent.name if adapter else Path(ref.path).name
    try:
        with atomic_file(out_path) as tmp:
            info["written"] = write_gguf(merged, tok, tmp, dtype=dtype, name=name)
            round_like_file(merged, dtype)
            rounded_logits = probe_logits(merged, batch)
            del merged, base
            gc.collect()
            info["verification"] = verify_gguf(tmp, tok, batch, source_logits, rounded_logits,
                                               dtype=dtype)
            v = info["verification"]
            log(f"GGUF check ({dtype}): max |Δlogit| {v['against_rounded_source']['max_abs_diff']:.2e} "
                f"against the source rounded to {dtype}; against the source: max |Δlogit| "
                f"{v['against_source']['max_abs_diff']:.3g}, top-1 agreement "
                f"{v['against_source']['top1_agreement']:.3f}")
    except OSError as e:
        raise MindprintError(f"{out_path}: cannot write the GGUF file ({e.strerror or e})") from None
    info["bytes"] = out_path.stat().st_size
    return info
