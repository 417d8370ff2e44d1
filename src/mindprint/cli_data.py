"""``mindprint data stats | convert | mix | split | import | synth``: the subcommands next to
``data validate``. App code (it loads tokenizers and models through the API), so it sits next to
the cli, above the data layer it drives.

Summaries and dropped lines go to stderr; stdout carries only the output path(s) (or, for
``stats``, the statistics), so the tools compose in shell scripts. Format and mode names are
checked by the tools themselves, so a typo gives the one-line ``error: …`` of every user mistake.
"""

from __future__ import annotations

import json
from dataclasses import asdict


def cmd_stats(args) -> int:
    from mindprint.backends.common import load_tokenizer
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
    from mindprint.api.datasets import convert

    result = convert(args.file, args.output, to=args.to, format=args.format,
                     system_prompt=args.system, model=args.model, generate=args.generate,
                     max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                     device=args.device, force=args.force, columns=args.columns)
    print(result.output)
    return 0


def cmd_mix(args) -> int:
    from mindprint.data.columns import parse_columns
    from mindprint.data.tools import mix

    mix(args.files, args.output, seed=args.seed, dedupe=args.dedupe, cap=args.cap, fmt=args.format,
        force=args.force, columns=parse_columns(args.columns))
    print(args.output)
    return 0


def cmd_split(args) -> int:
    from mindprint.data.columns import parse_columns
    from mindprint.data.tools import split

    fraction = args.eval_fraction
    if fraction is None and args.eval_count is None:
        fraction = 0.1
    result = split(args.file, eval_fraction=fraction, eval_count=args.eval_count,
                   seed=args.seed, prefix=args.output, train_out=args.train_out,
                   eval_out=args.eval_out, fmt=args.format, force=args.force,
                   columns=parse_columns(args.columns))
    print(result.train_out)
    print(result.eval_out)
    return 0


def _token_counter(model):
    """Token counts with ``model``'s tokenizer (the bundled model's by default; no weights)."""
    from mindprint.backends.common import load_tokenizer
    from mindprint.config import DEFAULT_MODEL
    from mindprint.models import resolve

    tok = load_tokenizer(resolve(model or DEFAULT_MODEL).path)
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def _max_length(args) -> int:
    from mindprint.config import DataConfig

    return args.max_length or DataConfig.model_fields["max_length"].default


def cmd_import(args) -> int:
    from mindprint.data.importers.run import detect, import_sources
    from mindprint.data.importers.turns import TurnOptions
    from mindprint.data.stream import check_output

    check_output(args.output, args.force)   # before a tokenizer loads
    me = tuple(args.me or ())
    kinds = [args.source_kind or detect(s) for s in args.sources]
    count = _token_counter(args.model) if "prose" in kinds else None
    opts = TurnOptions(me=me, merge_window=args.merge_window, context=args.context,
                       min_words=args.min_words, session_gap=args.session_gap)
    result = import_sources(args.sources, args.output, me=me, kind=args.source_kind, options=opts,
                            scrub=not args.no_scrub, scrub_names=args.scrub_names,
                            phone_region=args.phone_region, max_length=_max_length(args),
                            force=args.force, **({"count": count} if count else {}))
    print(result.output)
    return 0


def cmd_synth(args) -> int:
    from mindprint.api.datasets import synth
    from mindprint.data.stream import check_output

    check_output(args.output, args.force)
    count = _token_counter(None if args.endpoint else args.model)
    result = synth(args.file, args.output, model=args.model, endpoint=args.endpoint,
                   api_key_env=args.api_key_env, max_length=_max_length(args), count=count,
                   max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                   device=args.device, force=args.force)
    print(result.output)
    return 0


def _common(p, *, output: bool = True) -> None:
    p.add_argument("--format", metavar="F",
                   help="input format (chat, alpaca, completion, text, sharegpt, preference, kto, "
                        "prompt, …: see README, Data formats); default: detected")
    p.add_argument("--columns", metavar="KEY=COL,...",
                   help="table files (CSV/TSV, Parquet, datasets): which column fills which "
                        "record key, e.g. prompt=question,completion=reply")
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


    from mindprint.data.importers import KINDS     # light: not the parsers themselves
    from mindprint.data.importers.turns import CONTEXT, MERGE_WINDOW, MIN_WORDS, SESSION_GAP

    im = dsub.add_parser("import", help="a person's chats, transcripts, subtitles, e-mail or prose "
                                        "→ chat (or text) records")
    im.add_argument("sources", nargs="+", metavar="SRC",
                    help="files (or a Slack export folder); kinds detected per file")
    im.add_argument("--me", action="append", metavar="NAME",
                    help="the person: a speaker's full name or e-mail address (case-insensitive), "
                         "or a first name / surname that picks exactly one speaker (accents "
                         "ignored); repeat for several (default for Q/A transcripts: the A speaker)")
    im.add_argument("-o", "--output", required=True, metavar="FILE")
    im.add_argument("--from", dest="source_kind", metavar="TYPE",
                    help=f"force the source kind: {', '.join(KINDS)}")
    im.add_argument("--merge-window", type=float, default=MERGE_WINDOW, metavar="SEC",
                    help=f"merge one speaker's consecutive messages this close (default "
                         f"{MERGE_WINDOW})")
    im.add_argument("--session-gap", type=float, default=SESSION_GAP, metavar="SEC",
                    help=f"silence that ends a conversation: context and merging never reach "
                         f"across it (default {SESSION_GAP:.0f} = 6 h)")
    im.add_argument("--context", type=int, default=CONTEXT, metavar="K",
                    help=f"earlier turns kept before each question (default {CONTEXT})")
    im.add_argument("--min-words", type=int, default=MIN_WORDS, metavar="N",
                    help=f"drop answers shorter than N words (default {MIN_WORDS})")
    im.add_argument("--no-scrub", action="store_true",
                    help="keep e-mail addresses, phone numbers, URLs, card numbers and IBANs")
    im.add_argument("--scrub-names", action="store_true",
                    help="replace the other speakers' names with [person N]")
    im.add_argument("--phone-region", default="US", metavar="CC",
                    help="country whose national phone numbers are found (default US; "
                         "+international numbers always)")
    im.add_argument("--max-length", type=int, metavar="N",
                    help="prose: tokens per passage (default: data.max_length's default)")
    im.add_argument("--model", help="prose: whose tokenizer counts tokens (default: bundled)")
    im.add_argument("--force", action="store_true", help="replace an existing output file")
    im.set_defaults(func=cmd_import)

    sy = dsub.add_parser("synth", help="monologue text → chat records: a model writes the "
                                       "question each passage answers")
    sy.add_argument("file", metavar="IN", help="a text/markdown file or {\"text\"} JSONL")
    sy.add_argument("-o", "--output", required=True, metavar="FILE")
    who = sy.add_mutually_exclusive_group()
    who.add_argument("--endpoint", metavar="URL",
                     help="an OpenAI-compatible server (POST URL/v1/chat/completions)")
    sy.add_argument("--model", help="the local model that asks (default: the bundled model); "
                                    "with --endpoint, the server's model name")
    sy.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the "
                                                         "endpoint's API key")
    sy.add_argument("--max-length", type=int, metavar="N",
                    help="tokens per passage (default: data.max_length's default)")
    sy.add_argument("--max-new-tokens", type=int, default=64, metavar="N")
    sy.add_argument("--batch-size", type=int, default=8, metavar="N")
    sy.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    sy.add_argument("--force", action="store_true", help="replace an existing output file")
    sy.set_defaults(func=cmd_synth)
