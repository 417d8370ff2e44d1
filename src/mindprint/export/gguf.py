"""``mindprint export gguf``: merge (verified), write one GGUF file in a llama.cpp file type,
verify it, report.

``--quant`` (a key of :data:`.quantize.QUANTS`: f16, bf16, q8_0, q6_k, q5_k_m, q4_k_m, q4_0)
chooses the file type; each tensor gets the type llama.cpp's mix gives it (:mod:`.quantize`).
The quantizer is llama.cpp's own (``llama_model_quantize`` on a float32 file written first) when
llama-cpp-python is installed, else this package's NumPy encoders (:mod:`.kquants` and the
``gguf`` package); ``--quantizer`` forces one. The file is written by :mod:`.gguf_write`.

Before the file is renamed into place it is checked (:mod:`.verify`): it must hold the model
(else nothing is written); what quantization costs in logits and in voice is measured and a
WARNING printed when it is large (``--strict``: refused instead). The checks are printed and
written atomically beside the file as ``<name>.export.json`` (``export.json`` in an Ollama
folder).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
from pathlib import Path

import torch

from .. import __version__
from ..errors import ConfigError, MindprintError, ModelError
from ..models import resolve
from ..outputs import write_atomic
from . import llamacpp
from .common import atomic_file, check_writable
from .gguf_write import ARCHS, ExportError, _check_supported, gguf_tensors, read_stored, \
    tokenizer_fields, write_gguf
from .merge import VerificationError, load_full_precision, merge_verified
from .probes import probe_batch, probe_logits
from .quantize import QUANTS, T, plan
from .verify import MAX_NEW_TOKENS, MAX_PROMPTS, MIN_TOP1, VoiceCheck, check_logits, \
    check_tokenizer

DTYPES = tuple(QUANTS)
QUANTIZERS = ("auto", "llama.cpp", "numpy")

__all__ = ["ARCHS", "DTYPES", "ExportError", "MIN_TOP1", "QUANTIZERS", "export_gguf",
           "load_gguf", "run_sources", "tokenizer_fields"]


@contextlib.contextmanager
def _one_parse():
    """transformers parses a GGUF file's metadata (100k token strings: ~5 s for this vocabulary)
    once for the config, once for the weights and once for the tokenizer; the reader is
    read-only, so one parse per file is shared by the three while this block runs."""
    import gguf

    real, cache = gguf.GGUFReader, {}

    def reader(path, *args, **kwargs):
        key = (str(Path(path).resolve()), args, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = real(path, *args, **kwargs)
        return cache[key]

    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.GGUFReader = real


def load_gguf(path: Path):
    """Model (float32) and tokenizer from a GGUF file, through transformers' GGUF loader."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    old = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"      # transformers' GGUF loader has its own progress bar
    try:
        with _one_parse():
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


def run_sources(adapter: str | None) -> dict:
    """What the run that trained ``adapter`` used, from its run directory's ``config.yaml``:
    held-out prompts (``data.eval``), the person's texts (``data.train``), the system prompt.
    Empty when the adapter is not inside a run directory."""
    from ..config import load

    cfg_path = Path(adapter).resolve().parent / "config.yaml" if adapter else None
    if cfg_path is None or not cfg_path.is_file():
        return {}
    try:
        cfg = load(cfg_path, use_env=False)
    except ConfigError as e:
        return {"note": f"{cfg_path}: not read ({e})"}
    d = cfg.data
    return {"prompts": [str(p) for p in d.eval], "person": [str(p) for p in d.train],
            "system_prompt": d.system_prompt, "config": str(cfg_path)}


def _pick_quantizer(quantizer: str, quant: str) -> str:
    if quantizer not in QUANTIZERS:
        raise MindprintError(f"--quantizer {quantizer}: choose one of {', '.join(QUANTIZERS)}")
    if quant in ("f16", "bf16"):
        return "numpy"                       # a cast: nothing for llama.cpp to do
    if quantizer == "auto":
        return "llama.cpp" if llamacpp.available() else "numpy"
    return quantizer


def _write(merged, tok, tmp: Path, quant: str, quantizer: str, name: str):
    """Write the file with the chosen quantizer; (info, stored matrices in HF layout)."""
    if quantizer == "numpy":
        return write_gguf(merged, tok, tmp, quant=quant, name=name)
    import gguf

    tensors = gguf_tensors(merged)
    f32 = tmp.with_name(tmp.name + ".f32")
    try:
        write_gguf(merged, tok, f32, quant=quant, name=name, tensors=tensors,
                   types={g: T.F32 for g in tensors})
        llamacpp.quantize_file(f32, tmp, quant)
    finally:
        if f32.exists():
            f32.unlink()
    reader = gguf.GGUFReader(str(tmp))
    got = {t.name: T(t.tensor_type).name for t in reader.tensors}
    want = plan({g: a.shape for g, (_, a) in tensors.items()}, quant,
                int(merged.config.num_hidden_layers))
    counts: dict[str, int] = {}
    for t in got.values():
        counts[t] = counts.get(t, 0) + 1
    # llama.cpp's own choice of types, and whether it is the mix this package would write
    info = {"tensors": dict(sorted(counts.items())), "types": got, "quantizer": "llama.cpp",
            "same_mix_as_numpy": got == {g: t.name for g, t in want.types.items()}}
    return info, read_stored(merged, tmp, reader)


def export_gguf(out: str, *, adapter: str | None = None, model: str | None = None,
                quant: str | None = None, dtype: str | None = None, device: str = "auto",
                dequantize: bool = False, overwrite: bool = False, strict: bool = False,
                quantizer: str = "auto", prompts=None, person=None,
                max_prompts: int = MAX_PROMPTS, max_new_tokens: int = MAX_NEW_TOKENS,
                report: str | Path | None = None, log=lambda s: None) -> dict:
    """Merge (verified) when an adapter is given, write ``out``, verify, report (see module).
    ``dtype`` is the former name of ``quant``. Returns the report written to ``report``
    (default ``<out stem>.export.json``)."""
    from ..backends.torch.adapters import attach_adapter, base_model_of
    from ..backends.torch.load import quiet_hf

    quiet_hf()
    quant = (quant or dtype or "f16").lower()
    if quant not in QUANTS:
        raise MindprintError(f"--quant {quant}: choose one of {', '.join(QUANTS)}")
    if not adapter and not model:
        raise MindprintError("give --adapter DIR (merged first) or --model DIR")
    qz = _pick_quantizer(quantizer, quant)
    out_path = check_writable(out, overwrite=overwrite, kind="file")
    if out_path.suffix.lower() != ".gguf":
        raise MindprintError(f"{out}: the output file should end in .gguf")
    report_path = Path(report) if report else out_path.with_name(out_path.stem + ".export.json")
    spec, _ = base_model_of(adapter, model)
    ref = resolve(spec)
    src = run_sources(adapter)
    voice = VoiceCheck(prompts=prompts or src.get("prompts", ()),
                       person=person or src.get("person", ()),
                       system_prompt=src.get("system_prompt"), max_prompts=max_prompts,
                       max_new_tokens=max_new_tokens)
    base, tok = load_full_precision(ref, device=device, dequantize=dequantize)
    _check_supported(base.config)
    info: dict = {"source": {"model": spec, "adapter": str(Path(adapter).resolve()) if adapter
                             else None, "run_config": src.get("config")},
                  "quant": quant, "quantizer": qz, "mindprint_version": __version__,
                  "context_length": int(base.config.max_position_embeddings)}
    batch = probe_batch(tok)
    base_answers = voice.answers(base, tok) if voice.active and adapter else None
    if adapter:
        merged, res = merge_verified(attach_adapter(base, adapter, spec), tok, log=log)
        info["merge_checks"] = res["checks"]
        source_logits = res["logits"]
    else:
        merged = base
        source_logits = probe_logits(merged, batch)
    merged.eval()
    source_answers = voice.answers(merged, tok) if voice.active else None
    name = Path(adapter).resolve().parent.name if adapter else Path(ref.path).name
    warnings: list[str] = []
    try:
        with atomic_file(out_path) as tmp:
            info["written"], stored = _write(merged, tok, tmp, quant, qz, name)
            with torch.no_grad():
                for pname, p in merged.named_parameters():
                    if pname in stored:
                        p.copy_(torch.from_numpy(stored[pname]).to(p.dtype))
            rounded_logits = probe_logits(merged, batch)
            del merged, base, stored
            gc.collect()
            loaded, tok2 = load_gguf(tmp)
            check_tokenizer(tok, tok2)
            checks, warnings = check_logits(probe_logits(loaded, batch), source_logits,
                                            rounded_logits, batch, quant)
            if voice.active:
                checks["voice"], w = voice.compare(source_answers, voice.answers(loaded, tok2),
                                                   base_answers)
                warnings += w
            else:
                checks["voice"] = {"skipped": voice.note}
            del loaded
            info["verification"] = checks
            v = checks["against_source"]
            log(f"GGUF check ({quant}): the file reproduces the source rounded as stored (max "
                f"|Δlogit| {checks['against_rounded_source']['max_abs_diff']:.2e}); against the "
                f"adapter model: max |Δlogit| {v['max_abs_diff']:.3g}, top-1 agreement "
                f"{v['top1_agreement']:.3f}")
            if strict and warnings:
                raise VerificationError("--strict: " + "; ".join(warnings) + "; nothing written")
    except OSError as e:
        raise MindprintError(f"{out_path}: cannot write the GGUF file ({e.strerror or e})") from None
    info["bytes"] = out_path.stat().st_size
    info["warnings"] = warnings
    info["report"] = str(report_path)
    try:
        write_atomic(report_path, json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    except OSError as e:
        raise ModelError(f"{report_path}: cannot write the export report ({e.strerror or e})") \
            from None
    return info
