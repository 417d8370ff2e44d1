"""``mindprint data stats | convert | mix | split``: the subcommands next to ``data validate``.

Summaries and dropped lines go to stderr; stdout carries only the output path(s) (or, for
``stats``, the statistics), so the tools compose in shell scripts. Format and mode names are
checked by the tools themselves, so a typo gives the one-line ``error: …`` of every user mistake.
"""

from __future__ import annotations

import json
from dataclasses import asdict


def cmd_stats(args) -> int:
    from mindprint.backends.torch.model import load_tokenizer
    from mindprint.config import DEFAULT_MODEL, DataConfig
    from mindprint.data.columns import parse_columns
    from mindprint.data.stream import Source
    from mindprint.data.tools import file_stats, format_stats
    from mindprint.models import resolve

    max_length = args.max_length or DataConfig.model_fields["max_length"].default
    columns = parse_columns(args.columns)
    for p in args.files:  # a typo in a file name should not wait for a tokenizer to load
        Source(p, args.format, columns=columns)
    tokenizer = load_tokenizer(resolve(args.model or DEFAULT_MODEL).path)  # no weights needed
    stats = [file_stats(p, tokenizer, fmt=args.format, max_length=max_length, columns=columns)
             for p in args.files]
    if args.json:
        print(json.dumps([asdict(s) for s in stats], indent=2))
    else:
        print("\n".join(format_stats(s) for s in stats))
    return 0


def cmd_convert(args) -> int:
    from mindprint.data.convert import convert

    result = convert(args.file, args.output, to=args.to, fmt=args.format, system_prompt=args.system,
                     model=args.model, generate=args.generate, max_new_tokens=args.max_new_tokens,
                     batch_size=args.batch_size, device=args.device, force=args.force)
    print(result.output)
    return 0


def cmd_mix(args) -> int:
    from mindprint.data.tools import mix

    mix(args.files, args.output, seed=args.seed, dedupe=args.dedupe, cap=args.cap, fmt=args.format,
        force=args.force)
    print(args.output)
    return 0


def cmd_split(args) -> int:
    from mindprint.data.tools import split

    fraction = args.eval_fraction
    if fraction is None and args.eval_count is None:
        fraction = 0.1
    result = split(args.file, eval_fraction=fraction, eval_count=args.eval_count,
                   seed=args.seed, prefix=args.output, train_out=args.train_out,
                   eval_out=args.eval_out, fmt=args.format, force=args.force)
    print(result.train_out)
    print(result.eval_out)
    return 0


def _common(p, *, output: bool = True) -> None:
    p.add_argument("--format", metavar="F",
                   help="input format (chat, alpaca, completion, text, sharegpt, preference, kto, "
                        "prompt, …: see README, Data formats); default: detected")
    if output:
        p.add_argument("--force", action="store_true", help="replace existing output files")


def add_parsers(dsub) -> None:
    st = dsub.add_parser("stats", help="counts per format and topic, token lengths, truncation "
                                       "forecast")
    st.add_argument("files", nargs="+", metavar="FILE")
    st.add_argument("--model", help="whose tokenizer counts tokens (default: the bundled model)")
    st.add_argument("--max-length", type=int, metavar="N",
                    help="forecast truncation at N tokens (default: data.max_length's default)")
    st.add_argument("--json", action="store_true", help="as JSON (per file: format, records, "
                                                         "trained_tokens, lengths, …)")
    st.add_argument("--columns", metavar="KEY=COL,...",
                    help="table files: which column fills which record key, e.g. "
                         "prompt=question,completion=reply")
    _common(st, output=False)
    st.set_defaults(func=cmd_stats)

    cv = dsub.add_parser("convert", help="alpaca → chat; chat → prompt, preference or kto; "
                                         "preference → kto")
    cv.add_argument("file", metavar="FILE")
    cv.add_argument("--to", required=True, metavar="FORMAT", help="chat, prompt, preference or kto")
    cv.add_argument("-o", "--output", required=True, metavar="FILE")
    cv.add_argument("--system", metavar="TEXT", help="system message for alpaca records")
    cv.add_argument("--generate", action="store_true",
                    help="chat → kto: add the base model's answers as undesirable examples "
                         "(chat → preference always generates its rejected side)")
    cv.add_argument("--model", help="the base model that answers (default: the bundled model)")
    cv.add_argument("--max-new-tokens", type=int, default=200, metavar="N")
    cv.add_argument("--batch-size", type=int, default=8, metavar="N")
    cv.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    _common(cv)
    cv.set_defaults(func=cmd_convert)

    mx = dsub.add_parser("mix", help="weighted mix of files, deduplicated and shuffled")
    mx.add_argument("files", nargs="+", metavar="FILE[:WEIGHT]",
                    help="a weight is how many times each record is used (default 1; 0.5 = a "
                         "random half, 3 = three times)")
    mx.add_argument("-o", "--output", required=True, metavar="FILE")
    mx.add_argument("--seed", type=int, default=0)
    mx.add_argument("--dedupe", default="exact", metavar="MODE",
                    help="exact (default), normalized (whitespace and case ignored) or none")
    mx.add_argument("--cap", type=int, metavar="N", help="at most N records per file (a random N)")
    _common(mx)
    mx.set_defaults(func=cmd_mix)

    sp = dsub.add_parser("split", help="train/eval split, stratified by topic")
    sp.add_argument("file", metavar="FILE")
    size = sp.add_mutually_exclusive_group()
    size.add_argument("--eval-fraction", type=float, metavar="F", help="share for eval (default 0.1)")
    size.add_argument("--eval-count", type=int, metavar="N", help="records for eval")
    sp.add_argument("-o", "--output", metavar="PREFIX",
                    help="write PREFIX_train.jsonl and PREFIX_eval.jsonl")
    sp.add_argument("--train-out", metavar="FILE")
    sp.add_argument("--eval-out", metavar="FILE")
    sp.add_argument("--seed", type=int, default=0)
    _common(sp)
    sp.set_defaults(func=cmd_split)
