"""A run's live events as Server-Sent Events (``GET /api/runs/<id>/events``).

Events: ``metrics`` (new rows of metrics.jsonl, a JSON list), ``status`` (the run, when its
status changes), ``reset`` (metrics.jsonl was replaced or shortened, as a resume does when it
truncates to its checkpoint: start over), ``end`` (the run finished or was deleted; the stream
closes). The file is polled every 0.5 s from the byte offset already sent; a comment line keeps
an idle connection open every 15 s.
"""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from .. import jobs as J
from ..common import Context, RunId, job, job_out, read_rows
from ..security import STREAM_HEADERS
from ..store import TERMINAL, Store

POLL_S = 0.5
KEEP_ALIVE_S = 15


def router(ctx: Context) -> APIRouter:
    r = APIRouter()

    @r.get("/api/runs/{run_id}/events", tags=["metrics"])
    async def run_events(request: Request, run_id: RunId):
        """Server-Sent Events: ``metrics`` (new rows of metrics.jsonl, a JSON list), ``status``
        (the run, when its status changes), ``reset`` (metrics rewritten by a resume: start over),
        ``end`` (the run finished; the stream closes). EventSource sends ``?token=``."""
        row = job(ctx.store, run_id, "train")
        return StreamingResponse(event_stream(request, ctx.store, row["id"]),
                                 media_type="text/event-stream", headers=STREAM_HEADERS)

    return r


def sse(event: str, data) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


async def event_stream(request: Request, store: Store, job_id: str):
    offset, ident, last_status, idle = 0, None, None, 0.0
    while True:
        if await request.is_disconnected():
            return
        row = store.get_job(job_id)
        if row is None:
            yield sse("end", {"status": "deleted"})
            return
        path = J.run_dir(row) / "metrics.jsonl"
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
        if row["status"] != last_status:
            last_status = row["status"]
            yield sse("status", job_out(row, brief=True))
        if row["status"] in TERMINAL:
            yield sse("end", {"status": row["status"]})
            return
        idle += POLL_S
        if idle >= KEEP_ALIVE_S:
            idle = 0.0
            yield ": keep-alive\n\n"
        await asyncio.sleep(POLL_S)
