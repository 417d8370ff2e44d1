"""What the route modules share: the server's context (workspace, store, runner, limits), path
parameters, lookups that answer 404, job state changes that answer 409, and a job as the API
shows it.

A job row (:mod:`.store`) becomes JSON through :func:`job_out`; a train job also reports its
progress, read from its run directory (metrics.jsonl, summary.json, checkpoints/).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import HTTPException, Path as PathParam

from ..runs import read_json_object
from . import jobs as J
from .engine import ChatEngine
from .store import ACTIVE, ID_PATTERN, Store

Id = Annotated[str, PathParam(pattern=ID_PATTERN, description="an id such as r-0123456789ab")]
# ids by kind: a path parameter of one kind never matches another's (a run page given a dataset
# id, or a path smuggled into an id, is refused before any lookup)
RunId = Annotated[str, PathParam(pattern=r"^r-[0-9a-f]{12}$", description="a run id, r-…")]
DatasetId = Annotated[str, PathParam(pattern=r"^d-[0-9a-f]{12}$", description="a dataset id, d-…")]
EvalId = Annotated[str, PathParam(pattern=r"^[ec]-[0-9a-f]{12}$",
                                  description="an eval (e-…) or compare (c-…) job id")]
RESUMABLE = ("interrupted", "cancelled", "failed")   # statuses a resume may apply to: see
                                                      # jobs.resumable for whether it can help


@dataclass
class Context:
    """One server: its workspace (``datasets/``, ``jobs/``, ``mindprint.db``) and settings."""

    ws: Path
    store: Store
    runner: J.JobRunner
    token: str | None
    max_upload_bytes: int
    cors_origins: list[str] = field(default_factory=list)
    engine: ChatEngine | None = None                       # answers /v1 (see .engine)
    adapters: dict[str, str] = field(default_factory=dict)  # --adapter NAME=PATH
    rewards: list[str] = field(default_factory=list)        # --reward module:function
    loopback: bool = True                                   # bound to this machine only


# -- lookups (404) -------------------------------------------------------------------------------
def dataset(store: Store, ds_id: str, key: str | None = None) -> dict:
    d = store.get_dataset(ds_id) if re.match(ID_PATTERN, ds_id or "") else None
    if d is None:
        where = f"{key}: " if key else ""
        raise HTTPException(404, f"{where}no dataset {ds_id!r} in this workspace")
    return d


def job(store: Store, job_id: str, kind: str | tuple | None = None) -> dict:
    row = store.get_job(job_id)
    kinds = (kind,) if isinstance(kind, str) else kind
    if row is None or (kinds and row["kind"] not in kinds):
        raise HTTPException(404, f"no {'/'.join(kinds) if kinds else 'job'} {job_id!r}")
    return row


def job_file(job: dict, rel: str, what: str) -> Path:
    """A file the job writes (``rel`` under its directory), or 404 while it is not there yet."""
    p = Path(job["dir"]) / rel
    if not p.exists():
        raise HTTPException(404, f"{job['kind']} {job['id']} has no {what} yet ({job['status']})")
    return p


# -- state changes (409) -------------------------------------------------------------------------
def cancel(ctx: Context, job: dict, what: str) -> dict:
    if job["status"] not in ACTIVE:
        raise HTTPException(409, f"{what} is {job['status']}, not queued or running")
    return ctx.runner.cancel(job)


def requeue(store: Store, job: dict) -> dict:
    if job["status"] not in RESUMABLE:
        raise HTTPException(409, f"{job['id']} is {job['status']}: only an interrupted, cancelled "
                            "or failed job can be resumed")
    if not J.resumable(job):           # a config or data error fails the same way again
        f = J.failure(job)
        raise HTTPException(409, f"{job['id']} failed with a {f['kind']} ({f['reason']}): "
                            f"{f['hint']}")
    return store.update_job(job["id"], status="queued", resume=1, cancel_requested=0, error=None,
                            exit_code=None, ended_at=None)


def delete_job(store: Store, job: dict, ws: Path) -> None:
    if job["status"] in ACTIVE:
        raise HTTPException(409, f"{job['id']} is {job['status']}: cancel it first")
    d = Path(job["dir"]).resolve()
    if d.is_relative_to((ws / "jobs").resolve()):
        shutil.rmtree(d, ignore_errors=True)
    store.delete_job(job["id"])


# -- reading a job's files -----------------------------------------------------------------------
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


def log_tail(job: dict, n: int) -> str:
    """The last ``n`` lines of the job's log (read from its last 256 KiB)."""
    p = J.log_path(job)
    if not p.exists():
        return ""
    with open(p, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 256 * 1024))
        lines = f.read().decode("utf-8", "replace").splitlines()
    return "\n".join(lines[-n:]) + "\n"


def job_out(job: dict, brief: bool = False) -> dict:
    """A job as the API shows it; ``brief`` (lists, stream status events) leaves out the config."""
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
                   resumable=J.resumable(job), failure=J.failure(job))
        if not brief:
            out.update(config=cfg, run_dir=str(rd))
    else:
        out.update(config=cfg, resumable=J.resumable(job), failure=J.failure(job),
                   has_report=(Path(job["dir"]) / ("eval/report.json" if job["kind"] == "eval"
                                                   else "compare/compare.md")).exists())
    return out
