"""``mindprint eval`` and ``mindprint compare``: argument parsing and the glue to the runner."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import ConfigError
from ..outputs import adapter_dir


def add_parsers(sub) -> None:
    e = sub.add_parser("eval", help="voice match, content similarity, preference accuracy, "
                       "perplexity, style and general ability kept, base vs tuned → report.json "
                       "+ report.html")
    e.add_argument("config", nargs="?", help="a training config: its eval: block, model, data.eval "
                   "and output_dir/adapter are the defaults")
    e.add_argument("--adapter", help="adapter directory, or a run directory (its adapter/); "
                   "default: the config's output_dir/adapter")
    e.add_argument("--model", help="base model spec (default: the adapter's base)")
    e.add_argument("--prompts", action="append", help="held-out prompts with reference answers "
                   "(JSONL: prompt+answer, chat or preference; or .txt) (repeatable)")
    e.add_argument("--chat", action="append", help="held-out chat JSONL for perplexity (repeatable)")
    e.add_argument("--preference", action="append", help="held-out preference pairs (repeatable)")
    e.add_argument("--out", help="output directory (default: eval.output_dir, else next to the adapter)")
    e.add_argument("--max-prompts", type=int, help="prompts answered (eval.max_prompts)")
    e.add_argument("--max-records", type=int, help="chat records / pairs scored (eval.max_records)")
    e.add_argument("--max-new-tokens", type=int, help="tokens per answer (eval.max_new_tokens)")
    e.add_argument("--temperature", type=float, help="0 = greedy (default)")
    e.add_argument("--top-p", type=float)
    e.add_argument("--seed", type=int)
    e.add_argument("--batch-size", type=int)
    e.add_argument("--banned-phrase", action="append", help="replaces the default banned-phrase "
                   "list (repeatable)")
    e.add_argument("--no-base", action="store_true", help="skip the base-model column")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set eval.max_new_tokens=64")
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    v = e.add_argument_group("mindprint eval voice-score --person FILE... --texts FILE... [--json]",
                             "how much texts sound like the person: a verifier fitted on the "
                             "person's answers scores each text (0-1), by style, not topic")
    v.add_argument("--person", action="append", metavar="FILE", help="the person's answers "
                   "(chat/prompt/text/... data or .txt lines; repeatable); plain eval uses them "
                   "for voice_match too (default there: the config's data.train)")
    v.add_argument("--texts", action="append", metavar="FILE", help="texts to score, one score per "
                   "record (a chat record's last answer) or .txt line, in order (repeatable)")
    v.add_argument("--background", action="append", metavar="FILE", help="more not-the-person "
                   "answers (e.g. the base model's) besides the bundled background (repeatable)")
    v.add_argument("--json", action="store_true", help='{"scores": [...], "verifier_auc": ...}')
    e.set_defaults(func=cmd_eval)

    c = sub.add_parser("compare", help="answers of the base model and each adapter side by side "
                       "(compare.html + compare.md)")
    c.add_argument("--adapter", action="append", required=True, help="adapter directory, or a run "
                   "directory (its adapter/); repeatable")
    c.add_argument("--prompts", action="append", required=True,
                   help="prompts: .txt (one per line) or JSONL (repeatable)")
    c.add_argument("--model", help="base model spec (default: the adapters' base)")
    c.add_argument("--out", help="output directory (default: compare/ next to the first adapter)")
    c.add_argument("--system", help="system message")
    c.add_argument("--max-new-tokens", type=int, default=128)
    c.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    c.add_argument("--top-p", type=float, default=1.0)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--batch-size", type=int, default=8)
    c.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    c.add_argument("--person", action="append", metavar="FILE", help="the person's answers: score "
                   "every answer's voice (P the person's) and each column's voice_match (repeatable)")
    c.add_argument("--kept", type=int, default=20, metavar="N", help="general ability kept: each "
                   "adapter's likelihood of and similarity to the base model's answers to N "
                   "bundled everyday prompts (0: off; default 20)")
    c.set_defaults(func=cmd_compare)


def _eval_config(raw: dict, source: str):
    from pydantic import ValidationError

    from .. import config as C

    try:
        return C.EvalConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError("\n".join(C._format_error(x, source) for x in err.errors())) from None


def build_job(args):
    from .. import config as C
    from .runner import EvalJob

    flags = {"prompts": args.prompts, "chat": args.chat, "preference": args.preference,
             "max_prompts": args.max_prompts, "max_records": args.max_records,
             "max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
             "top_p": args.top_p, "seed": args.seed, "batch_size": args.batch_size,
             "banned_phrases": args.banned_phrase}
    flags = {k: v for k, v in flags.items() if v is not None}
    if args.adapter:
        args.adapter = str(adapter_dir(args.adapter))
    if args.no_base:
        flags["compare_base"] = False
    if args.config:
        cfg = C.load(args.config, args.set)
        ev = _eval_config({**cfg.eval.model_dump(), **flags}, "eval")
        default_adapter = Path(cfg.output_dir) / "adapter"
        adapter = args.adapter or (str(default_adapter) if default_adapter.exists() else None)
        out = args.out or ev.output_dir or str(Path(cfg.output_dir) / "eval")
        return EvalJob(ev, Path(out), model=args.model or cfg.model.name, adapter=adapter,
                       data_eval=list(cfg.data.eval), max_length=cfg.data.max_length,
                       system_prompt=cfg.data.system_prompt, device=args.device,
                       person=args.person or list(cfg.data.train),
                       background=args.background or [])
    raw: dict = {}
    for key, value in C.parse_overrides(args.set):
        if not key.startswith("eval."):
            raise ConfigError(f"--set {key}: without a config file only eval.* keys can be set")
        C.set_key(raw, key, value, f"--set {key}")
    ev = _eval_config({**raw.get("eval", {}), **flags}, "eval")
    if args.adapter:
        default_out = Path(args.adapter).resolve().parent / "eval"
    else:
        default_out = Path("runs") / "eval-base"
    return EvalJob(ev, Path(args.out or ev.output_dir or default_out), model=args.model,
                   adapter=args.adapter, device=args.device, person=args.person or [],
                   background=args.background or [])


VOICE_SCORE = "voice-score"


def cmd_eval(args) -> int:
    voice = (args.texts, args.json or None)
    if args.config == VOICE_SCORE:
        if not args.person or not args.texts:
            raise ConfigError("eval voice-score needs --person FILE (the person's answers) and "
                              "--texts FILE (what to score)")
        from .voicescore import cmd_voice_score

        return cmd_voice_score(args)
    if any(x is not None for x in voice):
        raise ConfigError("--texts and --json belong to 'mindprint eval voice-score'")
    from ..backends.torch.process import configure_process
    from .runner import run_eval, summary_lines

    job = build_job(args)
    configure_process(device=job.device)
    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    report = run_eval(job, log=log)
    for line in summary_lines(report):
        print(line)
    print(f"report: {job.out / 'report.html'}")
    return 0


def cmd_compare(args) -> int:
    from .compare import compare

    adapters = [str(adapter_dir(a)) for a in args.adapter]
    res = compare(adapters, args.prompts, args.out, model=args.model,
                  max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                  top_p=args.top_p, seed=args.seed, batch_size=args.batch_size, system=args.system,
                  device=args.device, person=args.person, kept=args.kept,
                  log=lambda s: print(s, file=sys.stderr))
    out = Path(res["out"])
    print(f"compare: {out / 'compare.html'}")
    print(f"         {out / 'compare.md'}")
    return 0
