"""Datasets: upload one JSONL file, see its validation report, preview, delete.

An upload is validated by :func:`mindprint.data.validate.validate_file` (the problems
``mindprint data validate`` prints, as ``line: problem``) and stored as
``WORKSPACE/datasets/<id>/<name>``. Limits: the body is counted as it arrives (a chunked upload
has no Content-Length) and refused past ``max_upload_bytes`` with 413; the file name loses any
path (``..``, directories and absolute paths are refused) and must end in a data file suffix
(``.jsonl``, ``.json``, ``.csv``, ``.tsv``, ``.parquet``), validated by the same loader. A file
with file-level trouble (``DataError``: empty, unreadable) is refused with 422 and nothing is
kept; one with bad records is kept, with its problems in the report.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request

from ...data.sources import FILE_SUFFIXES
from ...data.validate import validate_file
from ...errors import DataError
from .. import jobs as J
from ..common import RESUMABLE, Context, DatasetId, dataset
from ..security import api_error
from ..store import ACTIVE, new_id

FORM_OVERHEAD = 64 * 1024       # multipart boundaries and headers around the file itself


class TooLarge(Exception):
    pass


def install(app: FastAPI, ctx: Context) -> None:
    """The 413 answer for a body that outgrows the limit while the form is being read."""
    @app.exception_handler(TooLarge)
    async def too_large(request, exc):
        return _too_large(ctx)


def _too_large(ctx: Context):
    return api_error(413, f"upload larger than the limit of {ctx.max_upload_bytes} bytes")


def router(ctx: Context) -> APIRouter:
    r = APIRouter(tags=["datasets"])
    store, ws, max_bytes = ctx.store, ctx.ws, ctx.max_upload_bytes

    @r.post("/api/datasets", status_code=201)
    async def upload_dataset(request: Request):
        """Upload one JSONL file (multipart field ``file``); returns the validation report."""
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_bytes + FORM_OVERHEAD:
            return _too_large(ctx)
        limit_body(request, max_bytes + FORM_OVERHEAD)
        form = await request.form(max_files=1, max_fields=2, max_part_size=FORM_OVERHEAD)
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
                    if size > max_bytes:
                        raise TooLarge
                    f.write(chunk)
            report = await asyncio.to_thread(_validate, dest)
        except TooLarge:
            shutil.rmtree(dest.parent, ignore_errors=True)
            return _too_large(ctx)
        except DataError as e:
            shutil.rmtree(dest.parent, ignore_errors=True)
            msg = str(e).replace(str(dest), name)
            return api_error(422, msg, problems=[p.replace(str(dest), name) for p in e.problems])
        finally:
            await up.close()
        row = store.add_dataset(id=ds_id, name=name, path=str(dest), bytes=size, **report)
        return dataset_out(row)

    @r.get("/api/datasets")
    def list_datasets():
        return [dataset_out(d) for d in store.list_datasets()]

    @r.get("/api/datasets/{ds_id}")
    def get_dataset(ds_id: DatasetId):
        return dataset_out(dataset(store, ds_id))

    @r.get("/api/datasets/{ds_id}/preview")
    def preview_dataset(ds_id: DatasetId, limit: int = Query(20, ge=1, le=500)):
        """The first ``limit`` lines, parsed (a line that is not JSON is shown as text)."""
        d = dataset(store, ds_id)
        rows = []
        try:
            f = open(d["path"], "rb")
        except OSError:
            raise HTTPException(404, f"dataset {ds_id} ({d['name']}): its file is gone from the "
                                "workspace; delete the dataset and upload the file again") from None
        with f:
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

    @r.delete("/api/datasets/{ds_id}", status_code=204)
    def delete_dataset(ds_id: DatasetId):
        d = dataset(store, ds_id)
        for job in store.list_jobs(status=ACTIVE + RESUMABLE):
            if job["status"] in RESUMABLE and (job["kind"] != "train" or not J.resumable(job)):
                continue            # a finished eval reads nothing again; a run may resume
                                    # (unless it failed in a way a resume cannot fix)
            if d["path"] in json.dumps(job["config"]):
                how = ("cancel it first" if job["status"] in ACTIVE
                       else "it can still be resumed; delete the run first")
                raise HTTPException(409, f"dataset {ds_id} is used by {job['kind']} job "
                                    f"{job['id']} ({job['status']}): {how}")
        shutil.rmtree(Path(d["path"]).parent, ignore_errors=True)
        store.delete_dataset(ds_id)

    return r


def limit_body(request: Request, limit: int) -> None:
    """Count the bytes of the request body as they arrive; raise TooLarge past ``limit``
    (a chunked upload has no Content-Length to check up front)."""
    receive = request._receive
    seen = 0

    async def counted():
        nonlocal seen
        msg = await receive()
        if msg["type"] == "http.request":
            seen += len(msg.get("body", b""))
            if seen > limit:
                raise TooLarge
        return msg

    request._receive = counted


_NAME_OK = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(raw: str) -> str:
    """A stored file name from an uploaded one: paths and ``..`` are refused, other characters
    become ``_``; the name must end in a data file suffix (``.jsonl``, ``.json``, ``.csv``,
    ``.tsv``, ``.parquet``: see :mod:`mindprint.data.sources`)."""
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
    suffix = next((x for x in FILE_SUFFIXES if name.lower().endswith(x)), None)
    if suffix is None or len(name) <= len(suffix):
        raise ValueError(f"{raw!r}: upload a data file named *{', *'.join(FILE_SUFFIXES)}")
    return name


def _validate(path: Path) -> dict:
    """The store's columns for a validated file; problems lose the path prefix (the name the
    user gave is shown instead) and are capped at 1000."""
    rep = validate_file(path)
    prefix = f"{path}:"
    problems = [p[len(prefix):] if p.startswith(prefix) else p for p in rep.problems]
    return {"format": rep.format, "total": rep.total, "valid": rep.valid, "invalid": rep.invalid,
            "topics": {**rep.topics, **({"(none)": rep.no_topic} if rep.no_topic else {})},
            "problems": problems[:1000]}


def dataset_out(d: dict) -> dict:
    """A dataset as the API shows it: the store's row with its problems split into line and text."""
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
