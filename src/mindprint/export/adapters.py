"""``mindprint adapters convert``: a LoRA/DoRA adapter between PEFT and mlx-lm forms. The format
code is :mod:`mindprint.backends.adapter_format` (the mlx backend writes both forms); its names are
re-exported here for callers of this module."""

from __future__ import annotations

from pathlib import Path

from ..backends.adapter_format import (PEFT_PREFIX, _safetensors_load,  # noqa: F401
                                       _safetensors_save, convert, detect, mlx_config,
                                       mlx_to_peft, mlx_to_peft_name, peft_config, peft_to_mlx,
                                       peft_to_mlx_name, write_mlx, write_peft)
from ..outputs import adapter_dir


# -- CLI: mindprint adapters convert -----------------------------------------------------------
def add_parsers(sub) -> None:
    a = sub.add_parser("adapters", help="adapter tools")
    asub = a.add_subparsers(dest="adapters_command", metavar="ACTION")
    c = asub.add_parser("convert", help="convert a LoRA/DoRA adapter between PEFT and mlx-lm "
                        "formats (names, A/B transpose, alpha/r ⇄ scale, DoRA magnitudes)")
    c.add_argument("src", metavar="IN", help="adapter directory (PEFT or mlx-lm, detected), or a "
                   "run directory (its adapter/)")
    c.add_argument("dst", metavar="OUT", help="output directory (replaced atomically)")
    c.add_argument("--to", required=True, choices=["peft", "mlx"], help="output format")
    c.add_argument("--num-layers", type=int, default=None,
                   help="mlx-lm num_layers (default: the highest layer holding an adapter + 1)")
    c.set_defaults(func=cmd_convert)


def cmd_convert(args) -> int:
    src = adapter_dir(args.src)
    kind = convert(src, Path(args.dst), args.to, num_layers=args.num_layers)
    print(f"{src} ({kind}) → {args.dst} ({args.to})")
    return 0
