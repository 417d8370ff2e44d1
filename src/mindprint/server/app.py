"""The FastAPI app behind ``mindprint serve``: REST API, live metrics (SSE) and the web page.

The server calls Mindprint's own capabilities and re-implements none: configs are validated by
:mod:`mindprint.config` (same schema, same messages as the CLI), uploads by
:mod:`mindprint.data.validate` (same ``line: field: what`` problems), and every job is the ordinary
CLI in a subprocess (:mod:`.jobs`). Everything lives under one workspace directory::

    WORKSPACE/mindprint.db            the job store (SQLite)
    WORKSPACE/datasets/<id>/<name>    uploaded JSONL files
    WORKSPACE/jobs/<id>/              job.yaml, log.txt, and run/ (a run directory) or eval/ or compare/
    WORKSPACE/feedback.json           which datasets hold the chat playground's feedback
    WORKSPACE/serve.lock              held by the one server of this workspace (:mod:`.lock`)

Where things are: request checks and response headers in :mod:`.security` (loopback by default;
a token on every ``/api`` and ``/v1`` call and the event stream when one is set, always when bound
elsewhere; a Host check against DNS rebinding; cross-origin writes refused; CORS closed unless
origins are given), the OpenAI-compatible chat API in :mod:`.routes.openai` (answered by
:mod:`.engine`: one base model, adapters on demand, one generation at a time), the chat
playground's feedback in :mod:`.routes.feedback`, the other routes by resource in :mod:`.routes`
(uploads size-limited, names sanitised, stored under the workspace only; no endpoint runs user
code), what they share in :mod:`.common`.
"""

from __future__ import annotations

import asyncio
import secrets
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from .. import __version__
from . import jobs as J
from . import security
from .common import Context
from .engine import ChatEngine
from .lock import WorkspaceLock
from .routes import datasets, evals, events, feedback, openai, pages, runs
from .store import Store

DEFAULT_MAX_UPLOAD = 100 * 2**20


def create_app(workspace: str | Path, *, host: str = "127.0.0.1", token: str | None = None,
               max_concurrent: int = 1, max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
               cors_origins: list[str] | None = None, start_runner: bool = True,
               model: str | None = None, adapters: dict[str, str] | None = None,
               device: str = "auto", rewards: list[str] | None = None,
               address: str = "") -> FastAPI:
    """The app for one workspace. ``token`` None on a loopback host means no token is asked.
    ``start_runner`` False leaves queued jobs queued (tests drive the runner themselves).
    ``model`` (default: the first adapter's base, else the bundled model) and ``adapters``
    (name -> adapter directory) are what ``/v1`` answers with; nothing loads before a request.
    ``rewards``: ``module:function`` rewards a request may use besides the built-in and
    registered ones (``--reward``). The workspace is locked (:mod:`.lock`) until shutdown:
    WorkspaceBusy when another server holds it. ``address`` is shown to a refused second server."""
    ws = Path(workspace).expanduser().resolve()
    (ws / "datasets").mkdir(parents=True, exist_ok=True)
    (ws / "jobs").mkdir(parents=True, exist_ok=True)
    if not security.is_loopback(host) and not token:
        raise ValueError("binding to a non-loopback address needs a token")
    lock = WorkspaceLock(ws, address).acquire()
    store = Store(ws / "mindprint.db")
    runner = J.JobRunner(store, ws, server_id=secrets.token_hex(8), max_concurrent=max_concurrent)
    adapters = dict(adapters or {})
    engine = ChatEngine(model, device=device, default_adapter=next(iter(adapters.values()), None))
    ctx = Context(ws=ws, store=store, runner=runner, token=token,
                  max_upload_bytes=max_upload_bytes, cors_origins=list(cors_origins or []),
                  engine=engine, adapters=adapters, rewards=list(rewards or []),
                  loopback=security.is_loopback(host))

    @asynccontextmanager
    async def lifespan(app):
        if start_runner:
            runner.start()
        try:
            yield
        finally:
            if start_runner:
                await asyncio.to_thread(runner.stop)
            engine.close()
            store.close()
            lock.release()

    app = FastAPI(title="Mindprint", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, description="Configure, launch, watch and compare Mindprint "
                  "runs. Every /api call needs the server's token when it has one (header "
                  "`Authorization: Bearer TOKEN`, or `?token=TOKEN` for links and the event "
                  "stream).")
    app.state.store, app.state.runner, app.state.workspace = store, runner, ws
    app.state.token, app.state.adapters, app.state.lock = token, adapters, lock
    security.install(app, host=host, token=token, cors_origins=ctx.cors_origins)
    datasets.install(app, ctx)
    openai.install(app)
    pages.mount_static(app)
    for module in (pages, datasets, runs, events, evals, openai, feedback):
        app.include_router(module.router(ctx))
    return app
