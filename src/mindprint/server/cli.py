"""``mindprint serve``: argument parsing and startup (token, banner, uvicorn)."""

from __future__ import annotations

import secrets
import sys

from ..errors import MindprintError


def add_parsers(sub) -> None:
    s = sub.add_parser("serve", help="web UI and job service: upload data, launch, watch and "
                       "compare runs in a browser")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this "
                   "machine only; any other address requires a token)")
    s.add_argument("--port", type=int, default=7860)
    s.add_argument("--workspace", default="mindprint-workspace", metavar="DIR",
                   help="where datasets, runs and the job database live (default: "
                        "./mindprint-workspace)")
    s.add_argument("--token", help="API token (default: none on loopback; generated and printed "
                   "when binding elsewhere)")
    s.add_argument("--max-concurrent", type=int, default=1, metavar="N",
                   help="jobs run at the same time (default 1)")
    s.add_argument("--max-upload-mb", type=float, default=100.0, help="largest dataset upload")
    s.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow this browser origin to call the API (default: none)")
    s.set_defaults(func=cmd_serve)


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
    token = args.token
    if not token and not is_loopback(args.host):
        token = secrets.token_urlsafe(24)
    app = create_app(args.workspace, host=args.host, token=token,
                     max_concurrent=args.max_concurrent,
                     max_upload_bytes=int(args.max_upload_mb * 2**20),
                     cors_origins=args.cors_origin)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else shown}:{args.port}/"
    print(f"mindprint serve: workspace {app.state.workspace}", file=sys.stderr)
    if token:
        print(f"mindprint serve: API token {token}", file=sys.stderr)
        print(f"open {url}?token={token}", flush=True)
    else:
        print(f"open {url}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
