"""The FastAPI app behind ``mindprint serve``: REST API, live metrics (SSE) and the web page.

The server calls Mindprint's own capabilities and re-implements none: configs are validated by
:mod:`mindprint.config` (same schema, same messages as the CLI), uploads by
:mod:`mindprint.data.validate` (same ``line: field: what`` problems), and every job is the ordinary
CLI in a subprocess (:mod:`.jobs`). Everything lives under one workspace directory::

    WORKSPACE/mindprint.db            the job store (SQLite)
    WORKSPACE/datasets/<id>/<name>    uploaded JSONL files
    WORKSPACE/jobs/<id>/              job.yaml, log.txt, and run/ (a run directory) or eval/ or compare/

Security (see README, Web UI): loopback by default; a token is required on every ``/api`` call
and the event stream when one is set (always when bound elsewhere); a Host check against DNS
rebinding on loopback; cross-origin writes refused; CORS closed unless origins are given; uploads
size-limited, names sanitised, stored under the workspace only; no endpoint runs user code.
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.util
import ipaddress
import json
import os
import re
import secrets
import shutil
import tempfile
import time
import typing
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import yaml
from fastapi import Body, FastAPI, HTTPException, Path as PathParam, Query, Request
from fastapi.responses import (FileResponse, HTMLResponse, JSONResponse, PlainTextResponse,
                               StreamingResponse)
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from .. import __version__
from ..errors import ConfigError, DataError
from ..runs import read_json_object
from . import jobs as J
from .store import ACTIVE, ID_PATTERN, TERMINAL, Store, new_id

STATIC = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD = 100 * 2**20
Id = Annotated[str, PathParam(pattern=ID_PATTERN, description="an id such as r-0123456789ab")]
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
_DATA_KEYS = ("data.train", "data.eval", "eval.prompts", "eval.chat", "eval.preference")


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _TooLarge(Exception):
    pass


def api_error(status: int, detail: str, **extra) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status)


# -- request bodies ------------------------------------------------------------------------------
class RunRequest(BaseModel):
    name: str | None = Field(None, max_length=120, description="a label for the run list")
    config: dict[str, Any] | None = Field(None, description="the run config as a mapping (the "
                                          "same keys as a YAML config); data files are dataset ids")
    config_yaml: str | None = Field(None, max_length=200_000, description="or the config as YAML")
    overrides: list[str] = Field(default_factory=list, max_length=200, description="KEY=VALUE "
                                 "strings applied last, as `mindprint train --set` does")


class EvalRequest(BaseModel):
    run: str = Field(..., pattern=ID_PATTERN, description="the run whose adapter is evaluated")
    prompts: list[str] = Field(default_factory=list, description="dataset ids: prompts with answers")
    chat: list[str] = Field(default_factory=list, description="dataset ids: chat records (perplexity)")
    preference: list[str] = Field(default_factory=list, description="dataset ids: preference pairs")
    max_prompts: int | None = Field(None, ge=1, le=1000)
    max_records: int | None = Field(None, ge=1, le=100000)
    max_new_tokens: int | None = Field(None, ge=1, le=4096)
    compare_base: bool = True


class CompareRequest(BaseModel):
    runs: list[str] = Field(..., min_length=1, max_length=8)
    prompts: list[str] = Field(..., min_length=1, description="dataset ids")
    max_new_tokens: int | None = Field(None, ge=1, le=4096)


# -- the app -------------------------------------------------------------------------------------
def create_app(workspace: str | Path, *, host: str = "127.0.0.1", token: str | None = None,
               max_concurrent: int = 1, max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
               cors_origins: list[str] | None = None, start_runner: bool = True) -> FastAPI:
    """The app for one workspace. ``token`` None on a loopback host means no token is asked."""
    ws = Path(workspace).expanduser().resolve()
    (ws / "datasets").mkdir(parents=True, exist_ok=True)
    (ws / "jobs").mkdir(parents=True, exist_ok=True)
    if not is_loopback(host) and not token:
        raise ValueError("binding to a non-loopback address needs a token")
    store = Store(ws / "mindprint.db")
    runner = J.JobRunner(store, ws, server_id=secrets.token_hex(8), max_concurrent=max_concurrent)

    @asynccontextmanager
    async def lifespan(app):
        if start_runner:
            runner.start()
        try:
            yield
        finally:
            if start_runner:
                await asyncio.to_thread(runner.stop)
            store.close()

    app = FastAPI(title="Mindprint", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, description="Configure, launch, watch and compare Mindprint "
                  "runs. Every /api call needs the server's token when it has one (header "
                  "`Authorization: Bearer TOKEN`, or `?token=TOKEN` for links and the event "
                  "stream).")
    app.state.store, app.state.runner, app.state.workspace = store, runner, ws
    app.state.token = token
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins),
                           allow_methods=["*"], allow_headers=["*"])

    # -- security middleware -------------------------------------------------------------------
    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path
        if is_loopback(host):
            # DNS rebinding: a foreign site's name resolving to 127.0.0.1 carries its own Host
            hostname = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]").lower()
            if request.headers.get("host", "").startswith("["):
                hostname = request.headers["host"].split("]")[0].strip("[").lower()
            if hostname not in _LOOPBACK_NAMES and hostname != host:
                return api_error(403, f"host '{hostname}' is not allowed (this server answers "
                                 "to localhost only)")
        if path.startswith("/api"):
            if token:
                given = request.headers.get("x-mindprint-token") or ""
                auth = request.headers.get("authorization") or ""
                if auth.lower().startswith("bearer "):
                    given = given or auth[7:].strip()
                given = given or request.query_params.get("token", "")
                if not given:
                    return api_error(401, "missing token: send 'Authorization: Bearer TOKEN' (the "
                                     "token mindprint serve printed at start)")
                if not hmac.compare_digest(given.encode(), token.encode()):
                    return api_error(403, "wrong token")
            origin = request.headers.get("origin")
            if request.method not in ("GET", "HEAD", "OPTIONS") and origin:
                own = f"{request.url.scheme}://{request.headers.get('host', '')}"
                if origin != own and origin not in (cors_origins or []):
                    return api_error(403, f"cross-origin request from {origin} refused")
        return await call_next(request)

    @app.exception_handler(_TooLarge)
    async def too_large(request, exc):
        return api_error(413, f"upload larger than the limit of {max_upload_bytes} bytes")

    # -- pages ---------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/docs", include_in_schema=False)
    def docs():
        return FileResponse(STATIC / "docs.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # -- info ----------------------------------------------------------------------------------
    @app.get("/api/info", tags=["info"])
    def info():
        """Version, installed backends, methods (with the data they train on, their option
        sections and backends, from mindprint.registry), built-in rewards, workspace."""
        from .. import registry
        from ..rewards import BUILTINS

        backends = [b for b in registry.BACKENDS if importlib.util.find_spec(b) is not None]
        return {"version": __version__, "backends": backends, "methods": list(registry.NAMES),
                "method_info": {n: {"trains_on": list(s.trains_on), "options": list(s.options),
                                    "backends": list(s.backends)}
                                for n, s in registry.METHODS.items()},
                "rewards": list(BUILTINS), "workspace": str(ws), "token_required": bool(token),
                "max_upload_bytes": max_upload_bytes, "max_concurrent": runner.max_concurrent}

    @app.get("/api/config/fields", tags=["info"])
    def config_fields():
        """Every config key with its default, meaning and kind (for the new-run form)."""
        return config_field_list()

    # -- datasets ------------------------------------------------------------------------------
    @app.post("/api/datasets", status_code=201, tags=["datasets"])
    async def upload_dataset(request: Request):
        """Upload one JSONL file (multipart field ``file``); returns the validation report."""
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_upload_bytes + 64 * 1024:
            return api_error(413, f"upload larger than the limit of {max_upload_bytes} bytes")
        _limit_body(request, max_upload_bytes + 64 * 1024)
        form = await request.form(max_files=1, max_fields=2, max_part_size=64 * 1024)
        up = form.get("file")
        if up is None or isinstance(up, str):
            return api_error(400, "send the file as multipart form field 'file'")
        try:
            name = safe_filename(up.filename or "")
        except ValueError as e:
            return api_error(400, str(e))
        ds_id = new_id("d")
        root = (ws / "datasets").resolve()
        dest = (root / ds_id / name).resolve()
        if not dest.is_relative_to(root):            # belt and braces after safe_filename
            return api_error(400, "file name outside the workspace")
        dest.parent.mkdir(parents=True)
        size = 0
        try:
            with open(dest, "wb") as f:
                while chunk := await up.read(1 << 20):
                    size += len(chunk)
                    if size > max_upload_bytes:
                        raise _TooLarge
                    f.write(chunk)
            report = await asyncio.to_thread(_validate, dest, name)
        except _TooLarge:
            shutil.rmtree(dest.parent, ignore_errors=True)
            return api_error(413, f"upload larger than the limit of {max_upload_bytes} bytes")
        except DataError as e:
            shutil.rmtree(dest.parent, ignore_errors=True)
            msg = str(e).replace(str(dest), name)
            return api_error(422, msg, problems=[p.replace(str(dest), name) for p in e.problems])
        finally:
            await up.close()
        row = store.add_dataset(id=ds_id, name=name, path=str(dest), bytes=size, **report)
        return _dataset_out(row)

    @app.get("/api/datasets", tags=["datasets"])
    def list_datasets():
        return [_dataset_out(d) for d in store.list_datasets()]

    @app.get("/api/datasets/{ds_id}", tags=["datasets"])
    def get_dataset(ds_id: Id):
        return _dataset_out(_dataset(store, ds_id))

    @app.get("/api/datasets/{ds_id}/preview", tags=["datasets"])
    def preview_dataset(ds_id: Id, limit: int = Query(20, ge=1, le=500)):
        """The first ``limit`` lines, parsed (a line that is not JSON is shown as text)."""
        d = _dataset(store, ds_id)
        rows = []
        with open(d["path"], "rb") as f:
            for i, raw in enumerate(f, 1):
                if len(rows) >= limit:
                    break
                text = raw.decode("utf-8", "replace").strip()
                if not text:
                    continue
                try:
                    rows.append({"line": i, "record": json.loads(text)})
                except ValueError:
                    rows.append({"line": i, "text": text[:2000]})
        return {"id": ds_id, "name": d["name"], "rows": rows}

    @app.delete("/api/datasets/{ds_id}", status_code=204, tags=["datasets"])
    def delete_dataset(ds_id: Id):
        d = _dataset(store, ds_id)
        for job in store.list_jobs(status=ACTIVE):
            if d["path"] in json.dumps(job["config"]):
                raise HTTPException(409, f"dataset {ds_id} is used by {job['kind']} job "
                                    f"{job['id']} ({job['status']})")
        shutil.rmtree(Path(d["path"]).parent, ignore_errors=True)
        store.delete_dataset(ds_id)

    # -- runs ----------------------------------------------------------------------------------
    @app.post("/api/runs", status_code=201, tags=["runs"])
    def create_run(req: RunRequest):
        """Queue a training run. The config is validated by the CLI's schema: a mistake gives 422
        with the CLI's message (unknown keys with a did-you-mean, out-of-range values)."""
        try:
            cfg = validate_run_config(req, store, ws)
        except ConfigError as e:
            return api_error(422, str(e), errors=str(e).splitlines())
        from .. import config as C

        run_id = new_id("r")
        d = J.job_dir(ws, run_id)
        cfg.output_dir = str(d / "run")
        d.mkdir(parents=True)
        (d / "job.yaml").write_text(C.dump_yaml(cfg), encoding="utf-8")
        name = (req.name or "").strip() or f"{cfg.method} {time.strftime('%m-%d %H:%M')}"
        job = store.add_job(id=run_id, kind="train", name=name, config=cfg.to_dict(), dir=str(d))
        return _job_out(job)

    @app.get("/api/runs", tags=["runs"])
    def list_runs():
        return [_job_out(j, brief=True) for j in store.list_jobs(kind="train")]

    @app.get("/api/runs/{run_id}", tags=["runs"])
    def get_run(run_id: Id):
        return _job_out(_job(store, run_id, "train"))

    @app.post("/api/runs/{run_id}/cancel", tags=["runs"])
    def cancel_run(run_id: Id):
        """Stop a run: it finishes its step, saves a checkpoint and can be resumed."""
        job = _job(store, run_id, "train")
        if job["status"] not in ACTIVE:
            raise HTTPException(409, f"run {run_id} is {job['status']}, not queued or running")
        return _job_out(runner.cancel(job))

    @app.post("/api/runs/{run_id}/resume", tags=["runs"])
    def resume_run(run_id: Id):
        """Queue an interrupted, cancelled or failed run again; it continues from its last
        checkpoint (or starts over when it never saved one)."""
        return _job_out(_requeue(store, _job(store, run_id, "train")))

    @app.delete("/api/runs/{run_id}", status_code=204, tags=["runs"])
    def delete_run(run_id: Id):
        _delete_job(store, _job(store, run_id, "train"), ws)

    @app.get("/api/runs/{run_id}/metrics", tags=["metrics"])
    def run_metrics(run_id: Id):
        """Every row of the run's metrics.jsonl so far."""
        job = _job(store, run_id, "train")
        rows, _ = read_rows(J.run_dir(job) / "metrics.jsonl", 0)
        return rows

    @app.get("/api/runs/{run_id}/events", tags=["metrics"])
    async def run_events(request: Request, run_id: Id):
        """Server-Sent Events: ``metrics`` (new rows of metrics.jsonl, a JSON list), ``status``
        (the run, when its status changes), ``reset`` (metrics rewritten by a resume: start over),
        ``end`` (the run finished; the stream closes). EventSource sends ``?token=``."""
        job = _job(store, run_id, "train")
        return StreamingResponse(_event_stream(request, store, job["id"]),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get("/api/runs/{run_id}/log", tags=["runs"], response_class=PlainTextResponse)
    def run_log(run_id: Id, tail: int = Query(200, ge=1, le=10000)):
        return _log_tail(_job(store, run_id), tail)

    @app.get("/api/runs/{run_id}/samples", tags=["runs"])
    def run_samples(run_id: Id, limit: int = Query(50, ge=1, le=1000)):
        """Sampled completions a GRPO run wrote to samples.jsonl (newest last)."""
        rows, _ = read_rows(J.run_dir(_job(store, run_id, "train")) / "samples.jsonl", 0)
        return rows[-limit:]

    @app.get("/api/runs/{run_id}/adapter.zip", tags=["artefacts"])
    def download_adapter(run_id: Id):
        """The final adapter (PEFT format, with mindprint.json) as a zip file."""
        job = _job(store, run_id, "train")
        adapter = J.run_dir(job) / "adapter"
        if not (adapter / "adapter_config.json").exists():
            raise HTTPException(404, f"run {run_id} has no adapter yet")
        tmp = Path(tempfile.mkdtemp(prefix="mindprint-zip-"))
        archive = shutil.make_archive(str(tmp / f"{run_id}-adapter"), "zip", adapter)
        return FileResponse(archive, media_type="application/zip",
                            filename=f"{_slug(job['name'])}-{run_id}-adapter.zip",
                            background=BackgroundTask(shutil.rmtree, tmp, True))

    @app.get("/api/compare", tags=["runs"])
    def compare_runs(runs: str = Query(..., description="comma-separated run ids")):
        """Config keys that differ and final metrics side by side (``mindprint runs compare``)."""
        from ..runs import Run, config_differences, metric_rows

        ids = [r for r in runs.split(",") if r]
        if not 1 <= len(ids) <= 8 or not all(re.match(ID_PATTERN, i) for i in ids):
            raise HTTPException(422, "runs: give 1 to 8 run ids, comma-separated")
        jobs = [_job(store, i, "train") for i in ids]
        loaded = [Run.load(J.run_dir(j), j["name"]) for j in jobs]
        evals = {j["id"]: _latest_eval(store, j["id"]) for j in jobs}
        return {"runs": [{"id": j["id"], "name": j["name"], "status": j["status"]} for j in jobs],
                "config_differences": [{"key": k, "values": v} for k, v in
                                       config_differences(loaded)],
                "metrics": [{"key": k, "values": v} for k, v in metric_rows(loaded)],
                "eval_reports": [evals[j["id"]] for j in jobs]}

    # -- eval and compare jobs -----------------------------------------------------------------
    @app.post("/api/evals", status_code=201, tags=["evals"])
    def create_eval(req: EvalRequest):
        """Queue ``mindprint eval`` on a run's adapter: base vs tuned → report.json/html."""
        run = _job(store, req.run, "train")
        adapter = J.run_dir(run) / "adapter"
        if run["status"] != "completed" and not (adapter / "adapter_config.json").exists():
            raise HTTPException(409, f"run {req.run} has no adapter yet ({run['status']})")
        files = {k: [_dataset(store, i, k)["path"] for i in getattr(req, k)]
                 for k in ("prompts", "chat", "preference")}
        if not any(files.values()):
            raise HTTPException(422, "give at least one dataset in prompts, chat or preference")
        cfg = {"adapter": str(adapter), "run": req.run, **files,
               **req.model_dump(include={"max_prompts", "max_records", "max_new_tokens",
                                         "compare_base"})}
        job_id = new_id("e")
        job = store.add_job(id=job_id, kind="eval", name=f"eval of {run['name']}", config=cfg,
                            dir=str(J.job_dir(ws, job_id)))
        return _job_out(job)

    @app.post("/api/compares", status_code=201, tags=["evals"])
    def create_compare(req: CompareRequest):
        """Queue ``mindprint compare``: answers of the base model and each run's adapter."""
        runs = [_job(store, r, "train") for r in req.runs]
        adapters = []
        for r in runs:
            a = J.run_dir(r) / "adapter"
            if not (a / "adapter_config.json").exists():
                raise HTTPException(409, f"run {r['id']} has no adapter yet ({r['status']})")
            adapters.append(str(a))
        prompts = [_dataset(store, i, "prompts")["path"] for i in req.prompts]
        job_id = new_id("c")
        cfg = {"adapters": adapters, "runs": req.runs, "prompts": prompts,
               "max_new_tokens": req.max_new_tokens}
        job = store.add_job(id=job_id, kind="compare", name="compare " + ", ".join(
            r["name"] for r in runs), config=cfg, dir=str(J.job_dir(ws, job_id)))
        return _job_out(job)

    @app.get("/api/evals", tags=["evals"])
    def list_evals(run: str | None = Query(None, pattern=ID_PATTERN)):
        out = [j for j in store.list_jobs() if j["kind"] in ("eval", "compare")]
        if run:
            out = [j for j in out if run == j["config"].get("run") or run in j["config"].get("runs", [])]
        return [_job_out(j, brief=True) for j in out]

    @app.get("/api/evals/{job_id}", tags=["evals"])
    def get_eval(job_id: Id):
        return _job_out(_job(store, job_id, ("eval", "compare")))

    @app.get("/api/evals/{job_id}/report", tags=["artefacts"])
    def eval_report(job_id: Id):
        """report.json of an eval job (every number and every sample)."""
        p = _job_file(_job(store, job_id, "eval"), "eval/report.json", "report")
        return JSONResponse(json.loads(p.read_text(encoding="utf-8")))

    @app.get("/api/evals/{job_id}/report.html", tags=["artefacts"], response_class=HTMLResponse)
    def eval_report_html(job_id: Id):
        job = _job(store, job_id, ("eval", "compare"))
        rel = "eval/report.html" if job["kind"] == "eval" else "compare/compare.html"
        p = _job_file(job, rel, "report")
        return FileResponse(p, media_type="text/html",
                            headers={"Content-Security-Policy": "script-src 'none'"})

    @app.get("/api/evals/{job_id}/compare", tags=["artefacts"])
    def compare_result(job_id: Id):
        """The compare job's answers (compare.md) as text."""
        p = _job_file(_job(store, job_id, "compare"), "compare/compare.md", "result")
        return PlainTextResponse(p.read_text(encoding="utf-8"))

    @app.get("/api/evals/{job_id}/log", tags=["evals"], response_class=PlainTextResponse)
    def eval_log(job_id: Id, tail: int = Query(200, ge=1, le=10000)):
        return _log_tail(_job(store, job_id, ("eval", "compare")), tail)

    @app.post("/api/evals/{job_id}/cancel", tags=["evals"])
    def cancel_eval(job_id: Id):
        job = _job(store, job_id, ("eval", "compare"))
        if job["status"] not in ACTIVE:
            raise HTTPException(409, f"{job_id} is {job['status']}, not queued or running")
        return _job_out(runner.cancel(job))

    @app.post("/api/evals/{job_id}/resume", tags=["evals"])
    def rerun_eval(job_id: Id):
        """Run an interrupted, cancelled or failed eval/compare job again."""
        return _job_out(_requeue(store, _job(store, job_id, ("eval", "compare"))))

    @app.delete("/api/evals/{job_id}", status_code=204, tags=["evals"])
    def delete_eval(job_id: Id):
        _delete_job(store, _job(store, job_id, ("eval", "compare")), ws)

    return app


# -- helpers -------------------------------------------------------------------------------------
def _limit_body(request: Request, limit: int) -> None:
    """Count the bytes of the request body as they arrive; raise _TooLarge past ``limit``
    (a chunked upload has no Content-Length to check up front)."""
    receive = request._receive
    seen = 0

    async def counted():
        nonlocal seen
        msg = await receive()
        if msg["type"] == "http.request":
            seen += len(msg.get("body", b""))
            if seen > limit:
                raise _TooLarge
        return msg

    request._receive = counted


_NAME_OK = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(raw: str) -> str:
    """A stored file name from an uploaded one: paths and ``..`` are refused, other characters
    become ``_``; the name must end in ``.jsonl``."""
    if not raw or not raw.strip():
        raise ValueError("the upload has no file name")
    if "\0" in raw:
        raise ValueError("file name contains a NUL byte")
    if raw.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", raw):
        raise ValueError(f"absolute paths are not allowed: {raw!r}; upload a file name only")
    parts = re.split(r"[/\\]", raw)
    if any(p in ("..", ".") for p in parts):
        raise ValueError(f"'..' is not allowed in a file name: {raw!r}")
    if len(parts) > 1:
        raise ValueError(f"give a file name without directories: {raw!r}")
    name = _NAME_OK.sub("_", raw).lstrip(".-_")[:120]
    if not name.lower().endswith(".jsonl") or len(name) <= len(".jsonl"):
        raise ValueError(f"{raw!r}: upload a JSON Lines file named *.jsonl")
    return name


def _validate(path: Path, name: str) -> dict:
    from ..data.validate import validate_file

    rep = validate_file(path)
    prefix = f"{path}:"
    problems = [p[len(prefix):] if p.startswith(prefix) else p for p in rep.problems]
    return {"format": rep.format, "total": rep.total, "valid": rep.valid, "invalid": rep.invalid,
            "topics": {**rep.topics, **({"(none)": rep.no_topic} if rep.no_topic else {})},
            "problems": problems[:1000]}


def _dataset_out(d: dict) -> dict:
    rows = []
    for p in d["problems"]:
        line, _, what = p.partition(": ")
        rows.append({"line": int(line) if line.isdigit() else None,
                     "problem": what if line.isdigit() else p})
    return {"id": d["id"], "name": d["name"], "bytes": d["bytes"], "format": d["format"],
            "created_at": d["created_at"], "ok": d["invalid"] == 0,
            "report": {"total": d["total"], "valid": d["valid"], "invalid": d["invalid"],
                       "topics": d["topics"], "problems": rows,
                       "text": [f"{r['line']}: {r['problem']}" if r["line"] else r["problem"]
                                for r in rows]}}


def _dataset(store: Store, ds_id: str, key: str | None = None) -> dict:
    d = store.get_dataset(ds_id) if re.match(ID_PATTERN, ds_id or "") else None
    if d is None:
        where = f"{key}: " if key else ""
        raise HTTPException(404, f"{where}no dataset {ds_id!r} in this workspace")
    return d


def _job(store: Store, job_id: str, kind: str | tuple | None = None) -> dict:
    job = store.get_job(job_id)
    kinds = (kind,) if isinstance(kind, str) else kind
    if job is None or (kinds and job["kind"] not in kinds):
        raise HTTPException(404, f"no {'/'.join(kinds) if kinds else 'job'} {job_id!r}")
    return job


def _job_file(job: dict, rel: str, what: str) -> Path:
    """A file the job writes (``rel`` under its directory), or 404 while it is not there yet."""
    p = Path(job["dir"]) / rel
    if not p.exists():
        raise HTTPException(404, f"{job['kind']} {job['id']} has no {what} yet ({job['status']})")
    return p


def _requeue(store: Store, job: dict) -> dict:
    if job["status"] not in ("interrupted", "cancelled", "failed"):
        raise HTTPException(409, f"{job['id']} is {job['status']}: only an interrupted, cancelled "
                            "or failed job can be resumed")
    return store.update_job(job["id"], status="queued", resume=1, cancel_requested=0, error=None,
                            exit_code=None, ended_at=None)


def _delete_job(store: Store, job: dict, ws: Path) -> None:
    if job["status"] in ACTIVE:
        raise HTTPException(409, f"{job['id']} is {job['status']}: cancel it first")
    d = Path(job["dir"]).resolve()
    if d.is_relative_to((ws / "jobs").resolve()):
        shutil.rmtree(d, ignore_errors=True)
    store.delete_job(job["id"])


def _latest_eval(store: Store, run_id: str) -> dict | None:
    for j in store.list_jobs(kind="eval", status=("completed",)):
        if j["config"].get("run") == run_id:
            p = Path(j["dir"]) / "eval" / "report.json"
            try:
                rep = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            return {"id": j["id"], "variants": rep.get("variants"), "summary": rep.get("summary")}
    return None


def _job_out(job: dict, brief: bool = False) -> dict:
    out = {k: job[k] for k in ("id", "kind", "name", "status", "created_at", "started_at",
                               "ended_at", "exit_code", "error", "attempts")}
    cfg = job["config"]
    if job["kind"] == "train":
        out.update(method=cfg.get("method"), backend=cfg.get("backend"),
                   model=(cfg.get("model") or {}).get("name"),
                   max_steps=(cfg.get("train") or {}).get("max_steps"))
        rd = J.run_dir(job)
        summary = read_json_object(rd / "summary.json")
        rows, _ = read_rows(rd / "metrics.jsonl", 0)
        steps = [r["step"] for r in rows if isinstance(r.get("step"), int) and "loss" in r]
        losses = [r["loss"] for r in rows if isinstance(r.get("loss"), (int, float))]
        evals = [r["eval_loss"] for r in rows if isinstance(r.get("eval_loss"), (int, float))]
        out.update(step=max(steps) if steps else 0, loss=losses[-1] if losses else None,
                   eval_loss=evals[-1] if evals else None, summary=summary or None,
                   has_adapter=(rd / "adapter" / "adapter_config.json").exists(),
                   checkpoints=sum(1 for _ in (rd / "checkpoints").glob("step-*/state.json")),
                   resumable=job["status"] in ("interrupted", "cancelled", "failed"))
        if not brief:
            out.update(config=cfg, run_dir=str(rd))
    else:
        out.update(config=cfg, resumable=job["status"] in ("interrupted", "cancelled", "failed"),
                   has_report=(Path(job["dir"]) / ("eval/report.json" if job["kind"] == "eval"
                                                   else "compare/compare.md")).exists())
    return out


def _log_tail(job: dict, n: int) -> str:
    p = J.log_path(job)
    if not p.exists():
        return ""
    with open(p, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 256 * 1024))
        lines = f.read().decode("utf-8", "replace").splitlines()
    return "\n".join(lines[-n:]) + "\n"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40] or "run"


def read_rows(path: Path, offset: int) -> tuple[list[dict], int]:
    """JSON rows of ``path`` from byte ``offset``; a last line without its newline yet (being
    written) is left for the next read. Returns (rows, new offset)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    rows = []
    for line in data[:end].splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows, offset + end + 1


async def _event_stream(request: Request, store: Store, job_id: str):
    def sse(event: str, data) -> str:
        return f"event: {event}\ndata: {json.dumps(data)}\n\n"

    offset, ident, last_status, idle = 0, None, None, 0.0
    while True:
        if await request.is_disconnected():
            return
        job = store.get_job(job_id)
        if job is None:
            yield sse("end", {"status": "deleted"})
            return
        path = J.run_dir(job) / "metrics.jsonl"
        try:
            st = path.stat()
            now = (st.st_ino, st.st_dev)
            if ident is not None and (now != ident or st.st_size < offset):
                offset = 0            # rewritten (a resume truncates to its checkpoint)
                yield sse("reset", {})
            ident = now
        except OSError:
            pass
        rows, offset = read_rows(path, offset)
        if rows:
            idle = 0.0
            yield sse("metrics", rows)
        if job["status"] != last_status:
            last_status = job["status"]
            yield sse("status", _job_out(job, brief=True))
        if job["status"] in TERMINAL:
            yield sse("end", {"status": job["status"]})
            return
        idle += 0.5
        if idle >= 15:
            idle = 0.0
            yield ": keep-alive\n\n"
        await asyncio.sleep(0.5)


# -- config --------------------------------------------------------------------------------------
def validate_run_config(req: RunRequest, store: Store, ws: Path):
    """The request's config through the CLI's schema (same messages), then server rules: data
    files are datasets of this workspace, the backend is installed, reward functions are
    built-ins or installed modules. Raises ConfigError."""
    from .. import config as C

    if (req.config is None) == (req.config_yaml is None):
        raise ConfigError("config: send either 'config' (a mapping) or 'config_yaml' (text)")
    raw = req.config
    if raw is None:
        try:
            raw = yaml.safe_load(req.config_yaml)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"config{line}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
        if raw is None:
            raise ConfigError("config: config is empty")
    raw = dict(raw) if isinstance(raw, dict) else raw
    if isinstance(raw, dict):
        for key, value in C.parse_overrides(req.overrides):
            C.set_key(raw, key, value, f"--set {key}")
        raw.pop("output_dir", None)      # the server chooses: WORKSPACE/jobs/<id>/run
    cfg = C.from_dict(raw, "config")
    if cfg.curriculum is not None:
        raise ConfigError("curriculum: not available in the web UI yet; run it with "
                          "mindprint train CONFIG")
    problems = []
    for key in _DATA_KEYS:
        section, leaf = key.split(".")
        values = getattr(getattr(cfg, section), leaf)
        paths = []
        for v in values:
            d = store.get_dataset(v) if re.match(ID_PATTERN, str(v)) else None
            if d is None:
                problems.append(f"config: {key}: {v!r} is not a dataset of this workspace (upload "
                                "it on the Datasets page and use its id, e.g. d-0123456789ab)")
            else:
                paths.append(d["path"])
        setattr(getattr(cfg, section), leaf, paths)
    if importlib.util.find_spec(cfg.backend) is None:
        problems.append(f"config: backend: '{cfg.backend}' is not installed on this server")
    if cfg.method == "grpo":
        for name in cfg.grpo.rewards:
            if ":" in name:
                problems.extend(_check_reward_module(name, ws))
    if problems:
        raise ConfigError("\n".join(problems))
    return cfg


def _check_reward_module(name: str, ws: Path) -> list[str]:
    """A "module:function" reward must come from an installed module, never from the workspace
    (whose files arrive by upload) or the server's working directory."""
    mod = name.partition(":")[0]
    try:
        spec = importlib.util.find_spec(mod)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        return [f"config: grpo.rewards: module '{mod}' (reward '{name}') is not installed on this "
                "server; the web UI runs only built-in rewards and installed modules"]
    origin = Path(spec.origin).resolve()
    for forbidden in (ws, Path.cwd().resolve()):
        if origin.is_relative_to(forbidden):
            return [f"config: grpo.rewards: module '{mod}' is a file in {forbidden}, not an "
                    "installed module; install it (pip install) to use it from the web UI"]
    return []


def config_field_list() -> list[dict]:
    """(key, default, meaning) from config.describe() plus the kind of input each key needs."""
    from .. import config as C

    fields = []

    def kind_of(ann) -> dict:
        origin = typing.get_origin(ann)
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if origin is typing.Literal:
            return {"kind": "choice", "choices": list(typing.get_args(ann))}
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            lits = [a for a in args if typing.get_origin(a) is typing.Literal]
            if lits:
                return {"kind": "choice", "choices": list(typing.get_args(lits[0])), "free": True}
            return {**kind_of(args[0]), "nullable": True} if args else {"kind": "text"}
        if ann is bool:
            return {"kind": "bool"}
        if ann is int:
            return {"kind": "int"}
        if ann is float:
            return {"kind": "float"}
        if origin in (list, tuple):
            return {"kind": "list"}
        return {"kind": "text"}

    def walk(model, prefix: str) -> None:
        for name, f in model.model_fields.items():
            ann = f.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, prefix + name + ".")
                continue
            key = prefix + (f.alias or name)
            if f.is_required():
                default = None
            elif f.default_factory is not None:
                default = f.default_factory()
            else:
                default = f.default
            k = kind_of(ann)
            for m in f.metadata:
                for attr in ("ge", "gt", "le", "lt"):
                    if getattr(m, attr, None) is not None:
                        k[attr] = getattr(m, attr)
            fields.append({"key": key, "default": default if not isinstance(default, tuple)
                           else list(default), "description": f.description or "", **k})

    walk(C.Config, "")
    return [f for f in fields if not f["key"].startswith("curriculum")
            and f["key"] != "output_dir"]
