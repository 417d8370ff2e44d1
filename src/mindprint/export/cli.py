"""``mindprint merge`` and ``mindprint export gguf``: argument parsing and output."""

from __future__ import annotations

import sys

from ..outputs import adapter_dir


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
    g.add_argument("--dtype", default="f16", choices=["f16", "q8_0"])
    g.add_argument("--dequantize", action="store_true",
                   help="accept a quantised base (merged in full precision)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    g.set_defaults(func=cmd_export_gguf)


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


def cmd_export_gguf(args) -> int:
    from .gguf import export_gguf

    adapter = str(adapter_dir(args.adapter)) if args.adapter else None
    info = export_gguf(args.out, adapter=adapter, model=args.model, dtype=args.dtype,
                       device=args.device, dequantize=args.dequantize, overwrite=args.overwrite,
                       log=_log)
    v = info["verification"]
    print(f"gguf: {args.out} ({info['bytes'] / 2**20:.1f} MiB, {args.dtype})")
    print(f"verified: read back through transformers; max |Δlogit| "
          f"{v['against_rounded_source']['max_abs_diff']:.2e} against the source rounded to "
          f"{args.dtype}, top-1 agreement {v['against_source']['top1_agreement']:.3f} with the source")
    return 0
