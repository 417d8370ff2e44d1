"""``mindprint serve`` (argument parsing and startup: token, adapters, banner, uvicorn) and
``mindprint chat`` (a terminal chat on the same engine as the server's ``/v1`` API)."""

from __future__ import annotations

import os
import re
import secrets
import sys
from pathlib import Path

from ..errors import MindprintError

_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def add_parsers(sub) -> None:
    s = sub.add_parser("serve", help="web UI, job service and OpenAI-compatible chat API: upload "
                       "data, launch, watch and compare runs, talk to them")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this "
                   "machine only; any other address requires a token)")
    s.add_argument("--port", type=int, default=7860)
    s.add_argument("--workspace", default="mindprint-workspace", metavar="DIR",
                   help="where datasets, runs and the job database live (default: "
                        "./mindprint-workspace)")
    s.add_argument("--token", help="API token (default: none on loopback; generated and printed "
                   "when binding elsewhere). Visible to other users in the process list: prefer "
                   "--token-file or the MINDPRINT_TOKEN environment variable")
    s.add_argument("--token-file", metavar="FILE", help="read the API token from FILE (its first "
                   "line)")
    s.add_argument("--reward", action="append", default=[], metavar="MODULE:FUNCTION",
                   help="a reward function web requests may name in grpo.rewards (repeatable); "
                        "besides the built-ins and functions registered under the "
                        "'mindprint.rewards' entry point, a server bound beyond this machine "
                        "accepts only these")
    s.add_argument("--max-concurrent", type=int, default=1, metavar="N",
                   help="jobs run at the same time (default 1)")
    s.add_argument("--max-upload-mb", type=float, default=100.0, help="largest dataset upload")
    s.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow this browser origin to call the API (default: none)")
    s.add_argument("--model", help="base model of the /v1 chat API (default: the first "
                   "--adapter's base, else the bundled model); loaded on the first request")
    s.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH",
                   help="an adapter (or run directory) the /v1 API answers to as model NAME "
                        "(repeatable); runs of the workspace are available by name without it")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="device of the /v1 chat model")
    s.set_defaults(func=cmd_serve)

    c = sub.add_parser("chat", help="talk to an adapter (or the base model) in the terminal; "
                       "/reset starts over, /quit (or end of input) leaves")
    c.add_argument("--adapter", help="adapter directory, or a run directory (its adapter/); "
                   "default: the base model")
    c.add_argument("--model", help="base model (default: the adapter's base, else the bundled "
                   "model)")
    c.add_argument("--system", help="system message")
    c.add_argument("--max-new-tokens", type=int, default=256, help="per answer (default 256)")
    c.add_argument("--temperature", type=float, default=0.7, help="0 = greedy (default 0.7)")
    c.add_argument("--top-p", type=float, default=0.95, help="nucleus mass (default 0.95)")
    c.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="end an answer before this text (repeatable)")
    c.add_argument("--seed", type=int, default=0, help="answer n uses seed + n (default 0)")
    c.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    c.set_defaults(func=cmd_chat)


def parse_adapters(items: list[str]) -> dict[str, str]:
    """``NAME=PATH`` pairs into {name: adapter directory}; MindprintError names a bad one."""
    from ..outputs import adapter_dir

    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        name = name.strip()
        if not sep or not path.strip():
            raise MindprintError(f"--adapter {item!r}: give NAME=PATH")
        if not _ADAPTER_NAME.match(name) or name == "base":
            raise MindprintError(f"--adapter {item!r}: NAME must be letters, digits, '.', '_' or "
                                 "'-' (at most 64), and not 'base'")
        if name in out:
            raise MindprintError(f"--adapter {item!r}: the name {name!r} is given twice")
        out[name] = str(adapter_dir(path.strip()).resolve())
    return out


def read_token(args) -> str | None:
    """The token from --token, --token-file or MINDPRINT_TOKEN (at most one of them)."""
    given = {"--token": args.token, "--token-file": args.token_file,
             "MINDPRINT_TOKEN": os.environ.get("MINDPRINT_TOKEN")}
    given = {k: v for k, v in given.items() if v}
    if len(given) > 1:
        raise MindprintError(f"give the token one way, not {' and '.join(given)}")
    if args.token_file:
        p = Path(args.token_file).expanduser()
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise MindprintError(f"--token-file {p}: cannot read it ({e.__class__.__name__})") \
                from None
        token = lines[0].strip() if lines else ""
        if not token:
            raise MindprintError(f"--token-file {p}: the file is empty (put the token on its "
                                 "first line)")
        return token
    token = (args.token or os.environ.get("MINDPRINT_TOKEN") or "").strip()
    if (args.token or os.environ.get("MINDPRINT_TOKEN")) and not token:
        raise MindprintError("the token is empty")
    return token or None


def parse_rewards(items: list[str]) -> list[str]:
    """``--reward module:function`` names, checked for form (nothing is imported)."""
    from ..reward_names import check_name

    for name in items:
        if ":" not in name:
            raise MindprintError(f"--reward {name!r}: give a function as package.module:function "
                                 "(built-in rewards need no --reward)")
        try:
            check_name(name)
        except ValueError as e:
            raise MindprintError(f"--reward: {e}") from None
    return list(items)


def cmd_serve(args) -> int:
    try:
        import uvicorn

        from .app import create_app
        from .security import is_loopback
    except ImportError as e:
        raise MindprintError(f"mindprint serve needs the web extra: pip install 'mindprint[ui]' "
                             f"({e.name} is missing)") from None
    if args.max_concurrent < 1:
        raise MindprintError("--max-concurrent must be at least 1")
    adapters = parse_adapters(args.adapter)
    rewards = parse_rewards(args.reward)
    token, generated = read_token(args), False
    if not token and not is_loopback(args.host):
        token, generated = secrets.token_urlsafe(24), True
    app = create_app(args.workspace, host=args.host, token=token,
                     max_concurrent=args.max_concurrent,
                     max_upload_bytes=int(args.max_upload_mb * 2**20),
                     cors_origins=args.cors_origin, model=args.model, adapters=adapters,
                     device=args.device, rewards=rewards, address=f"{args.host}:{args.port}")
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else shown}:{args.port}/"
    print(f"mindprint serve: workspace {app.state.workspace}", file=sys.stderr)
    if adapters:
        print(f"mindprint serve: /v1 models: base, {', '.join(adapters)} and the workspace's runs",
              file=sys.stderr)
    if token:
        if generated:
            print(f"mindprint serve: API token {token}", file=sys.stderr)
        print(f"open {url}?token={token}", flush=True)
    else:
        print(f"open {url}", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        app.state.lock.release()        # also when the server never started (port taken)
    return 0


def cmd_chat(args) -> int:
    """Lines from stdin are user turns; each answer streams to stdout and ends with a newline.
    The conversation is kept (multi-turn) until /reset; /quit or end of input ends."""
    from ..outputs import adapter_dir
    from .engine import ChatEngine, Settings

    if args.max_new_tokens < 1:
        raise MindprintError("--max-new-tokens must be at least 1")
    if args.temperature < 0 or not 0 < args.top_p <= 1:
        raise MindprintError("--temperature must be >= 0 and --top-p in (0, 1]")
    adapter = str(adapter_dir(args.adapter)) if args.adapter else None
    engine = ChatEngine(args.model, device=args.device, default_adapter=adapter)
    system = [{"role": "system", "content": args.system}] if args.system else []
    history: list[dict] = []
    tty = sys.stdin.isatty()
    turn = 0
    try:
        while True:
            if tty:
                print("you> ", end="", file=sys.stderr, flush=True)
            line = sys.stdin.readline()
            if not line:
                break
            text = line.strip()
            if not text:
                continue
            if text in ("/quit", "/exit"):
                break
            if text == "/reset":
                history = []
                print("(conversation reset)", file=sys.stderr, flush=True)
                continue
            if text.startswith("/") and " " not in text:
                print(f"unknown command {text}: /reset or /quit", file=sys.stderr, flush=True)
                continue
            history.append({"role": "user", "content": text})
            s = Settings(temperature=args.temperature, top_p=args.top_p,
                         max_tokens=args.max_new_tokens, stop=list(args.stop),
                         seed=args.seed + turn)
            req = engine.submit(system + history, adapter, s)
            answer = []
            for ev in req.stream():
                if ev[0] == "delta":
                    answer.append(ev[1])
                    print(ev[1], end="", flush=True)
                elif ev[0] == "error":
                    history.pop()
                    raise ev[1]
            print(flush=True)
            history.append({"role": "assistant", "content": "".join(answer)})
            turn += 1
    finally:
        engine.close()
    return 0
