"""``mindprint merge`` and ``mindprint export gguf``: argument parsing and output."""

from __future__ import annotations

import argparse
import sys

from ..outputs import adapter_dir

# the keys of .quantize.QUANTS (kept here so `mindprint --help` does not import gguf/torch; a test
# checks they agree)
QUANT_CHOICES = ("f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0")
MLX_BITS = (2, 3, 4, 5, 6, 8)        # .mlx.BITS (same reason; the same test checks them)


def add_parsers(sub) -> None:
    m = sub.add_parser("merge", help="fold an adapter into its base model: a standalone Hugging "
                       "Face checkpoint, verified against the adapter model before it is written")
    m.add_argument("--adapter", required=True, help="adapter directory, or a run directory (its "
                   "adapter/)")
    m.add_argument("--out", required=True, help="output directory")
    m.add_argument("--model", help="base model spec (default: the adapter's base)")
    m.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="dtype of the written weights (the check always runs in float64)")
    m.add_argument("--dequantize", action="store_true",
                   help="merge into a full-precision copy of a quantised base")
    m.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    m.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    m.set_defaults(func=cmd_merge)

    x = sub.add_parser("export", help="export to other runtimes")
    xs = x.add_subparsers(dest="export_command", metavar="FORMAT")
    g = xs.add_parser("gguf", help="a GGUF file for llama.cpp-based runtimes, verified by reading "
                      "it back")
    g.add_argument("--adapter", help="adapter directory, or a run directory (its adapter/): "
                   "merged into its base first (verified)")
    g.add_argument("--model", help="a model directory (or any model spec) to convert as is; with "
                   "--adapter: the base to merge into (default: the adapter's base)")
    g.add_argument("--out", required=True, help="output .gguf file")
    _add_quant_args(g)
    g.add_argument("--dequantize", action="store_true",
                   help="accept a quantised base (merged in full precision)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    g.set_defaults(func=cmd_export_gguf)

    o = xs.add_parser("ollama", help="a folder for Ollama: a verified GGUF file and a Modelfile "
                      "(TEMPLATE from the chat template, stop tokens, the run's system prompt)")
    o.add_argument("--adapter", required=True, help="adapter directory, or a run directory")
    o.add_argument("--out", required=True, help="output folder")
    o.add_argument("--name", help="Ollama model name (default: the run directory's name)")
    o.add_argument("--model", help="the base to merge into (default: the adapter's base)")
    _add_quant_args(o, default="q4_k_m")
    o.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    o.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    o.set_defaults(func=cmd_export_ollama)

    ml = xs.add_parser("mlx", help="a fused mlx-lm model folder (adapter merged, optionally "
                       "quantized), verified by loading it with mlx_lm.load")
    ml.add_argument("--adapter", required=True, help="adapter directory, or a run directory")
    ml.add_argument("--out", required=True, help="output folder")
    ml.add_argument("--model", help="the base to merge into (default: the adapter's base)")
    ml.add_argument("--quantize", type=int, choices=list(MLX_BITS), default=None,
                    help="quantize the matrices to this many bits (mlx affine; default: none)")
    ml.add_argument("--group-size", type=int, choices=[32, 64, 128], default=64,
                    help="weights per quantization group (default 64)")
    ml.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16",
                    help="dtype of the unquantized weights and the scales (default bfloat16)")
    _add_check_args(ml)
    ml.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    ml.set_defaults(func=cmd_export_mlx)


def _add_quant_args(g, default: str = "f16") -> None:
    g.add_argument("--quant", choices=list(QUANT_CHOICES), default=None,
                   help=f"llama.cpp file type (default {default}); k-quant mixes as llama.cpp "
                   "assigns them per tensor")
    g.add_argument("--dtype", choices=list(QUANT_CHOICES), default=None, help=argparse.SUPPRESS)
    g.add_argument("--quantizer", choices=["auto", "llama.cpp", "numpy"], default="auto",
                   help="auto: llama.cpp's own when llama-cpp-python is installed, else NumPy")
    _add_check_args(g)


def _add_check_args(g) -> None:
    g.add_argument("--strict", action="store_true",
                   help="refuse (write nothing) when quantization loses the voice or top-1 "
                   "agreement; without it these are warnings")
    g.add_argument("--prompts", action="append", help="held-out prompts for the voice check "
                   "(default: the run's data.eval)")
    g.add_argument("--person", action="append", help="the person's texts the voice verifier "
                   "is fitted on (default: the run's data.train)")
    g.add_argument("--voice-prompts", type=int, default=None,
                   help="held-out prompts answered greedily for the voice check (default 4; "
                   "0: off)")
    g.add_argument("--max-new-tokens", type=int, default=None,
                   help="tokens per voice-check answer (default 40)")


def _log(s: str) -> None:
    print(s, file=sys.stderr)


def cmd_merge(args) -> int:
    from .merge import merge

    adapter = str(adapter_dir(args.adapter))
    info = merge(adapter, args.out, model=args.model, dtype=args.dtype, device=args.device,
                 dequantize=args.dequantize, overwrite=args.overwrite, log=_log)
    c = info["checks"]["merge"]
    print(f"merged model: {args.out}")
    print(f"verified: max |Δlogit| {c['max_abs_diff']:.2e} ≤ {c['tolerance']:g} over "
          f"{c['probe_tokens']} probe tokens (details in {args.out}/mindprint-merge.json)")
    return 0


def _gguf_kwargs(args, default: str = "f16") -> dict:
    kw = dict(quant=args.quant or args.dtype or default, quantizer=args.quantizer,
              strict=args.strict, prompts=args.prompts, person=args.person,
              device=args.device, overwrite=args.overwrite, log=_log)
    if args.voice_prompts is not None:
        kw["max_prompts"] = args.voice_prompts
    if args.max_new_tokens is not None:
        kw["max_new_tokens"] = args.max_new_tokens
    return kw


def print_checks(info: dict, what: str = "file") -> None:
    """The verification summary and any warnings (stdout; warnings also on stderr)."""
    v = info["verification"]
    a, s = v["against_rounded_source"], v["against_source"]
    print(f"verified: the {what} reproduces the model rounded as stored (max |Δlogit| "
          f"{a['max_abs_diff']:.2e}); against the adapter model: top-1 agreement "
          f"{s['top1_agreement']:.3f}, max |Δlogit| {s['max_abs_diff']:.3g}")
    vo = v["voice"]
    if "skipped" in vo:
        print(f"voice: {vo['skipped']}")
    else:
        print(f"voice: voice_match {vo['file_voice_match']:.3f} from the {what} vs "
              f"{vo['adapter_voice_match']:.3f} from the adapter model ({vo['prompts']} held-out "
              f"prompts, {vo['identical_answers']} identical answers)")
    for w in info["warnings"]:
        print(f"WARNING: {w}")
        print(f"WARNING: {w}", file=sys.stderr)
    print(f"report: {info['report']}")


def cmd_export_gguf(args) -> int:
    from .gguf import export_gguf

    adapter = str(adapter_dir(args.adapter)) if args.adapter else None
    kw = _gguf_kwargs(args)
    info = export_gguf(args.out, adapter=adapter, model=args.model, dequantize=args.dequantize,
                       **kw)
    print(f"gguf: {args.out} ({info['bytes'] / 2**20:.1f} MiB, {info['quant']}, tensors "
          f"{info['written']['tensors']}, quantized by {info['quantizer']})")
    print_checks(info)
    return 0


def cmd_export_ollama(args) -> int:
    from .ollama import export_ollama

    adapter = str(adapter_dir(args.adapter))
    kw = _gguf_kwargs(args, default="q4_k_m")
    info = export_ollama(adapter, args.out, name=args.name, model=args.model, **kw)
    print(f"ollama: {args.out}: {info['name']}.gguf ({info['bytes'] / 2**20:.1f} MiB, "
          f"{info['quant']}), Modelfile")
    print_checks(info)
    print(f"next: {info['ollama_create']}  then  ollama run {info['name']}")
    return 0


def cmd_export_mlx(args) -> int:
    from .mlx import export_mlx

    adapter = str(adapter_dir(args.adapter))
    kw = dict(strict=args.strict, prompts=args.prompts, person=args.person,
              overwrite=args.overwrite, log=_log)
    if args.voice_prompts is not None:
        kw["max_prompts"] = args.voice_prompts
    if args.max_new_tokens is not None:
        kw["max_new_tokens"] = args.max_new_tokens
    info = export_mlx(adapter, args.out, model=args.model, quantize=args.quantize,
                      group_size=args.group_size, dtype=args.dtype, **kw)
    print(f"mlx: {args.out} ({info['bytes'] / 2**20:.1f} MiB, {info['label']}); load it with "
          f"mlx_lm.load({args.out!r}) or: mlx_lm.generate --model {args.out} --prompt ...")
    lay = info["verification"].get("layers")
    if lay and lay["kept_full_precision"]:
        k = lay["kept_full_precision"]
        print(f"note: {len(k)} matrices kept in full precision (rows not whole groups of "
              f"{args.group_size}): {', '.join(k[:4])}{' …' if len(k) > 4 else ''}")
    print_checks(info, what="folder")
    return 0
