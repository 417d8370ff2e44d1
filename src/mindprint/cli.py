"""``mindprint`` command line: subcommand → config → run.

User mistakes (missing file, bad config, bad data) print a one-line error and exit non-zero
without a traceback; bugs still show one.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from . import __version__, registry
from .config_paths import ConfigPathWarning
from .errors import DataError, MindprintError


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)


# -- train ---------------------------------------------------------------------------------------
def cmd_train(args) -> int:
    """``mindprint train``: the config (file, ``--data`` defaults or ``--reproduce``), then
    :func:`mindprint.api.train.train` — the function notebooks call."""
    from .api.train import train

    original = None
    if getattr(args, "reproduce", None):
        if args.config or args.resume or args.data:
            raise MindprintError("--reproduce RUN_DIR starts a new run from that run's manifest: "
                                 "give no CONFIG, --data or --resume with it")
        from .manifest import reproduce_config

        cfg, original = reproduce_config(args.reproduce, args.set, args.output_dir)
    else:
        cfg = _train_config(args)
    if args.output_dir:
        cfg.output_dir = args.output_dir
    # under torchrun / accelerate launch only rank 0 speaks (the trainer silences the others)
    say = print if os.environ.get("RANK", "0") == "0" else (lambda *a, **k: None)
    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    callbacks = None
    if original is not None:                      # the manifest writer warns about differences
        from .training import default_callbacks

        callbacks = default_callbacks(cfg, log, reproduce_of=original,
                                      reproduce_dir=str(args.reproduce))
    run = train(cfg, resume=args.resume, overwrite=args.overwrite, log=log, callbacks=callbacks)
    summary = run.summary
    if cfg.curriculum is not None:
        if summary["stopped_at"]:
            print(f"stopped at topic '{summary['stopped_at']}': its gate failed (see "
                  f"{summary['output_dir']}/curriculum.md)", file=sys.stderr)
        print(f"run directory: {summary['output_dir']}")
        if summary["adapter"]:
            print(f"adapter: {summary['adapter']}")
        return 0 if not summary["stopped_at"] else 4
    first, final = summary.get("first_eval_loss"), summary.get("final_eval_loss")
    ev = f"; eval loss {first:.4f} → {final:.4f}" if first is not None and final is not None else ""
    say(f"done: {summary['steps']} steps ({summary['stopped']}){ev}", file=sys.stderr)
    if original is not None:
        from .manifest import compare_outcome

        for line in compare_outcome(args.reproduce, summary):
            say(f"reproduce: {line}", file=sys.stderr)
    say(f"run directory: {summary['output_dir']}")
    say(f"adapter: {summary['adapter']}")
    return 0


# `mindprint train --data FILE` without a config: the method each kind of record trains with by
# default, whatever the file's format (chat, alpaca, sharegpt ... all read into chat records).
# Prompt-only data has no answers to imitate: it trains only with --method grpo (rewards).
DATA_METHOD = {"ChatRecord": "sft", "TextRecord": "sft", "PreferenceRecord": "dpo",
               "KTORecord": "kto"}
TRAIN_USAGE = ("mindprint train CONFIG  |  mindprint train --data FILE [--method M] [--eval FILE] "
               "[--model M]  |  mindprint train --reproduce RUN_DIR")


def _train_config(args):
    """The config of ``mindprint train``: the YAML file, or the defaults when only ``--data`` is
    given; then ``--data`` / ``--eval`` / ``--model`` / ``--method`` (paths relative to the
    current directory), then ``--set``."""
    from . import config as C
    from .data.columns import parse_columns
    from .models import preflight

    if not args.config and not args.data:
        raise MindprintError(f"give a config file or training data: {TRAIN_USAGE}")
    columns = parse_columns(args.columns)
    flags = [(key, value) for key, value in (("data.train", args.data), ("data.eval", args.eval),
                                             ("model.name", args.model), ("method", args.method),
                                             ("data.columns", columns))
             if value]
    base = None
    if not args.config:
        method = args.method or _method_for(args.data, columns)
        flags = [(k, v) for k, v in flags if k != "method"] + [("method", method)]
        base = {"output_dir": str(Path("runs") / Path(args.data[0]).stem)}
    cfg = C.load(args.config, args.set, base=base, flags=flags)
    preflight(cfg.model.name)          # an uncached hub id fails now, not after loading torch
    return cfg


def _method_for(files: list[str], columns: dict[str, str] | None = None) -> str:
    """The default method for ``files``: :data:`DATA_METHOD` of the record kind their detected
    format reads into (the first valid line tells; the trainer checks every line later)."""
    from .data.stream import Source

    formats, kinds = {}, {}
    for f in files:
        src = Source(f, columns=columns)
        formats[f] = src.format
        kinds[f] = next((type(line.record).__name__ for line in src), None)
        if kinds[f] is None:
            raise MindprintError(f"{f}: no valid {src.format} record; see mindprint data "
                                 f"validate {f}")
    prompt_only = [f for f, kind in kinds.items() if kind == "PromptRecord"]
    if prompt_only:
        raise MindprintError(f"{', '.join(prompt_only)}: prompt-only data (no answers to learn "
                             "from) trains only with reinforcement learning: add --method grpo "
                             "(rewards: --set grpo.rewards=[...]), or give chat or preference data")
    unknown = [f for f, kind in kinds.items() if kind not in DATA_METHOD]
    if unknown:
        raise MindprintError(f"{unknown[0]}: no default method for {formats[unknown[0]]} data: "
                             "pass --method")
    methods = {DATA_METHOD[kind] for kind in kinds.values()}
    if len(methods) > 1:
        found = ", ".join(f"{f} ({fmt})" for f, fmt in formats.items())
        raise MindprintError(f"these files train with different methods: {found}; convert them to "
                             "one format (mindprint data convert) or pass --method")
    method = methods.pop()
    print(f"{', '.join(sorted(set(formats.values())))} data → method {method} (--method to choose "
          "another)", file=sys.stderr)
    return method


# -- data ----------------------------------------------------------------------------------------
def cmd_data_validate(args) -> int:
    from .data.validate import cmd_validate

    return cmd_validate(args.files, args.format, args.columns)


# -- generate ------------------------------------------------------------------------------------
def cmd_generate(args) -> int:
    """``mindprint generate``: :func:`mindprint.api.model.load` and ``Model.generate``."""
    from .api.model import load

    prompts = list(args.prompt or [])
    if args.prompts_file:
        p = Path(args.prompts_file)
        if not p.exists():
            raise MindprintError(f"{p}: no such file")
        prompts += [line.strip() for line in p.read_text(encoding="utf-8").splitlines()
                    if line.strip()]
    if not prompts:
        raise MindprintError("give at least one --prompt TEXT (or --prompts-file FILE)")
    model = load(args.adapter, model=args.model, device=args.device)
    answers = model.generate(prompts, system=args.system, max_new_tokens=args.max_new_tokens,
                             temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    for text, ans in zip(prompts, answers):
        if len(prompts) > 1:
            print(f"### {text}")
        print(ans)
        if len(prompts) > 1:
            print()
    return 0


# -- config --------------------------------------------------------------------------------------
def cmd_config_show(args) -> int:
    from . import config as C

    cfg = C.load(args.config, args.set)
    print(C.dump_yaml(cfg), end="")
    return 0


def cmd_config_keys(args) -> int:
    from . import config as C

    if args.markdown:
        print("| key | default | meaning |\n|---|---|---|")
        for key, default, meaning in C.describe():
            print(f"| `{key}` | `{default}` | {meaning.replace('|', '/')} |")
        return 0
    for key, default, meaning in C.describe():
        print(f"{key:34s} {default:28s} {meaning}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mindprint", description="Turn an LLM into a person's voice.")
    p.add_argument("--version", action="version", version=f"mindprint {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train an adapter from a YAML config, or from a data file",
                       usage=TRAIN_USAGE.replace("  |  ", "\n       "))
    t.add_argument("config", nargs="?", help="YAML config file (optional with --data)")
    t.add_argument("--data", action="append", metavar="FILE",
                   help="training data file (repeatable); without CONFIG: the defaults, the method "
                        "from the data's format (chat-like: sft, preference pairs: dpo, kto: kto) "
                        "and output_dir runs/<file name>")
    t.add_argument("--eval", action="append", metavar="FILE", help="held-out JSONL file (repeatable)")
    t.add_argument("--method", metavar="M", help=f"training method: {', '.join(registry.NAMES[:-1])} "
                   f"or {registry.NAMES[-1]} (default with --data: from the data's format)")
    t.add_argument("--model", help="model spec: alias, local directory, .gguf file or hub id")
    t.add_argument("--columns", metavar="KEY=COL,...", help="table data (CSV/TSV, Parquet): "
                   "which column fills which record key, e.g. prompt=question,completion=reply "
                   "(data.columns)")
    t.add_argument("--reproduce", metavar="RUN_DIR",
                   help="re-run RUN_DIR from its manifest.json into RUN_DIR-reproduce (or "
                        "--output-dir), warning about every difference (versions, data, device)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.lr=1e-4 (repeatable)")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run in output_dir")
    t.add_argument("--output-dir", help="shortcut for --set output_dir=DIR")
    t.set_defaults(func=cmd_train)

    d = sub.add_parser("data", help="data tools")
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION")
    v = dsub.add_parser("validate", help="check JSONL files; one 'file:line: problem' per problem")
    v.add_argument("files", nargs="+")
    v.add_argument("--format", choices=[
        "chat", "alpaca", "completion", "text", "sharegpt", "preference", "sharegpt_preference",
        "alpaca_preference", "openai_preference", "kto", "chat_kto", "sharegpt_kto", "prompt"])
    v.add_argument("--columns", metavar="KEY=COL,...",
                   help="table files: which column fills which record key, e.g. "
                        "prompt=question,completion=reply")
    v.set_defaults(func=cmd_data_validate)
    from .cli_data import add_parsers as add_data_parsers   # stats, convert, mix, split

    add_data_parsers(dsub)

    g = sub.add_parser("generate", help="answer prompts with the base model or an adapter")
    g.add_argument("--model", help="model spec (default: the adapter's base, else the bundled model)")
    g.add_argument("--adapter", help="adapter directory, or a run directory (its adapter/)")
    g.add_argument("--prompt", action="append", help="user message (repeatable)")
    g.add_argument("--prompts-file", help="one prompt per line")
    g.add_argument("--system", help="system message")
    g.add_argument("--max-new-tokens", type=int, default=200)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    g.set_defaults(func=cmd_generate)

    c = sub.add_parser("config", help="inspect configs")
    csub = c.add_subparsers(dest="config_command", metavar="ACTION")
    cs = csub.add_parser("show", help="print the resolved config with every default")
    cs.add_argument("config")
    cs.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    cs.set_defaults(func=cmd_config_show)
    ck = csub.add_parser("keys", help="list every config key with its default and meaning")
    ck.add_argument("--markdown", action="store_true", help="as a Markdown table")
    ck.set_defaults(func=cmd_config_keys)

    from .evaluate.cli import add_parsers as add_eval_parsers   # eval, compare
    from .export.cli import add_parsers as add_export_parsers   # merge, export gguf
    from .export.adapters import add_parsers as add_adapter_parsers   # adapters convert

    add_eval_parsers(sub)
    add_export_parsers(sub)
    add_adapter_parsers(sub)
    from .server.cli import add_parsers as add_serve_parsers   # serve (web UI)

    add_serve_parsers(sub)

    r = sub.add_parser("runs", help="list, show and compare run directories")
    rsub = r.add_subparsers(dest="runs_command", metavar="ACTION")
    rl = rsub.add_parser("list", help="a table of the runs under DIR (default: runs)")
    rl.add_argument("dir", nargs="?", metavar="DIR")
    rl.add_argument("--json", action="store_true", help="as JSON")
    rl.set_defaults(func=lambda a: _runs().cmd_list(a.dir, a.json))
    rs = rsub.add_parser("show", help="one run: status, metrics, manifest, config")
    rs.add_argument("run", metavar="RUN", help="run directory (or a name under runs/)")
    rs.add_argument("--json", action="store_true", help="as JSON")
    rs.set_defaults(func=lambda a: _runs().cmd_show(a.run, a.json))
    rc = rsub.add_parser("compare", help="config differences and metrics side by side")
    rc.add_argument("runs", nargs="+", metavar="RUN")
    rc.add_argument("--json", action="store_true", help="as JSON")
    rc.set_defaults(func=lambda a: _runs().cmd_compare(a.runs, a.json))

    rp = sub.add_parser("report", help="write RUN_DIR/report.html: curves, config, manifest, summary")
    rp.add_argument("run_dir", metavar="RUN_DIR")
    rp.add_argument("--self-contained", action="store_true",
                    help="embed the charts in the HTML instead of writing RUN_DIR/report/*.png")
    rp.add_argument("--output", metavar="FILE", help="where to write the HTML (default: "
                    "RUN_DIR/report.html)")
    rp.set_defaults(func=cmd_report)
    return p


def _runs():
    from . import runs

    return runs


def cmd_report(args) -> int:
    from .report import write_report

    print(write_report(args.run_dir, self_contained=args.self_contained, output=args.output))
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings about what the user wrote read like the CLI's other warnings (no source line)."""
    if issubclass(category, ConfigPathWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _show_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        # a group without its action: show that group's help
        parser.parse_args((argv or sys.argv[1:]) + ["--help"])
        return 2
    try:
        return int(args.func(args) or 0)
    except DataError as e:
        _err(str(e))
        for line in e.problems:
            print(line, file=sys.stderr)
        return e.exit_code
    except MindprintError as e:
        for i, line in enumerate(str(e).splitlines() or [""]):
            (_err(line) if i == 0 else print(f"  {line}", file=sys.stderr))
        return e.exit_code
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
