"""Eval and compare jobs: ``mindprint eval`` on a run's adapter (base vs tuned, report.json and
report.html) and ``mindprint compare`` (answers of the base and several adapters side by side);
their reports, logs, cancel, re-run and delete.

Jobs of both kinds share the ``/api/evals`` paths; an eval's config names its ``run``, a
compare's its ``runs``. Reports are served from the job's directory with scripts disabled.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse
from markdown_it import MarkdownIt
from markdown_it.token import Token
from pydantic import BaseModel, Field

from ...outputs import current_keys
from .. import jobs as J
from ..common import (Context, EvalId, cancel, dataset, delete_job, job, job_file, job_out,
                      log_tail, requeue)
from ..security import REPORT_HEADERS
from ..store import ID_PATTERN, Store, new_id

KINDS = ("eval", "compare")


class EvalRequest(BaseModel):
    run: str = Field(..., pattern=ID_PATTERN, description="the run whose adapter is evaluated")
    prompts: list[str] = Field(default_factory=list, description="dataset ids: prompts with answers")
    chat: list[str] = Field(default_factory=list, description="dataset ids: chat records (perplexity)")
    preference: list[str] = Field(default_factory=list, description="dataset ids: preference pairs")
    person: list[str] = Field(default_factory=list, description="dataset ids: the person's answers "
                              "that define the voice (voice_match); default: the run's data.train")
    max_prompts: int | None = Field(None, ge=1, le=1000)
    max_records: int | None = Field(None, ge=1, le=100000)
    max_new_tokens: int | None = Field(None, ge=1, le=4096)
    compare_base: bool = True


class CompareRequest(BaseModel):
    runs: list[str] = Field(..., min_length=1, max_length=8)
    prompts: list[str] = Field(..., min_length=1, description="dataset ids")
    max_new_tokens: int | None = Field(None, ge=1, le=4096)


def router(ctx: Context) -> APIRouter:
    r = APIRouter()
    store, ws = ctx.store, ctx.ws

    @r.post("/api/evals", status_code=201, tags=["evals"])
    def create_eval(req: EvalRequest):
        """Queue ``mindprint eval`` on a run's adapter: base vs tuned → report.json/html."""
        run = job(store, req.run, "train")
        adapter = J.run_dir(run) / "adapter"
        if run["status"] != "completed" and not (adapter / "adapter_config.json").exists():
            raise HTTPException(409, f"run {req.run} has no adapter yet ({run['status']})")
        files = {k: [dataset(store, i, k)["path"] for i in getattr(req, k)]
                 for k in ("prompts", "chat", "preference")}
        if not any(files.values()):
            raise HTTPException(422, "give at least one dataset in prompts, chat or preference")
        # the voice is the run's training data unless the user names other files; a training file
        # deleted since the run is left out here and the report's voice_score says it was skipped
        person = ([dataset(store, i, "person")["path"] for i in req.person]
                  or [p for p in (run["config"].get("data") or {}).get("train") or []
                      if Path(p).exists()])
        cfg = {"adapter": str(adapter), "run": req.run, **files, "person": person,
               **req.model_dump(include={"max_prompts", "max_records", "max_new_tokens",
                                         "compare_base"})}
        job_id = new_id("e")
        row = store.add_job(id=job_id, kind="eval", name=f"eval of {run['name']}", config=cfg,
                            dir=str(J.job_dir(ws, job_id)))
        return job_out(row)

    @r.post("/api/compares", status_code=201, tags=["evals"])
    def create_compare(req: CompareRequest):
        """Queue ``mindprint compare``: answers of the base model and each run's adapter."""
        runs = [job(store, i, "train") for i in req.runs]
        adapters = []
        for run in runs:
            a = J.run_dir(run) / "adapter"
            if not (a / "adapter_config.json").exists():
                raise HTTPException(409, f"run {run['id']} has no adapter yet ({run['status']})")
            adapters.append(str(a))
        prompts = [dataset(store, i, "prompts")["path"] for i in req.prompts]
        job_id = new_id("c")
        cfg = {"adapters": adapters, "runs": req.runs, "prompts": prompts,
               "max_new_tokens": req.max_new_tokens}
        row = store.add_job(id=job_id, kind="compare", name="compare " + ", ".join(
            run["name"] for run in runs), config=cfg, dir=str(J.job_dir(ws, job_id)))
        return job_out(row)

    @r.get("/api/evals", tags=["evals"])
    def list_evals(run: str | None = Query(None, pattern=ID_PATTERN)):
        out = [j for j in store.list_jobs() if j["kind"] in KINDS]
        if run:
            out = [j for j in out if run == j["config"].get("run") or run in j["config"].get("runs", [])]
        return [job_out(j, brief=True) for j in out]

    @r.get("/api/evals/{job_id}", tags=["evals"])
    def get_eval(job_id: EvalId):
        return job_out(job(store, job_id, KINDS))

    @r.get("/api/evals/{job_id}/report", tags=["artefacts"])
    def eval_report(job_id: EvalId):
        """report.json of an eval job (every number and every sample)."""
        p = job_file(job(store, job_id, "eval"), "eval/report.json", "report")
        return JSONResponse(current_keys(json.loads(p.read_text(encoding="utf-8"))))

    @r.get("/api/evals/{job_id}/report.html", tags=["artefacts"], response_class=HTMLResponse)
    def eval_report_html(job_id: EvalId):
        row = job(store, job_id, KINDS)
        rel = "eval/report.html" if row["kind"] == "eval" else "compare/compare.html"
        p = job_file(row, rel, "report")
        return FileResponse(p, media_type="text/html", headers=REPORT_HEADERS)

    @r.get("/api/evals/{job_id}/compare", tags=["artefacts"])
    def compare_result(job_id: EvalId):
        """The compare job's answers (compare.md) as text."""
        p = job_file(job(store, job_id, "compare"), "compare/compare.md", "result")
        return PlainTextResponse(p.read_text(encoding="utf-8"))

    @r.get("/api/evals/{job_id}/compare/view", tags=["artefacts"])
    def compare_view(job_id: EvalId):
        """compare.md rendered to HTML (:func:`render_compare`: text escaped, no raw HTML), its
        columns named by run name instead of the CLI's adapter-directory labels (``run``,
        ``run-2``); ``names`` maps each label to the name shown."""
        row = job(store, job_id, "compare")
        text = job_file(row, "compare/compare.md", "result").read_text(encoding="utf-8")
        names = column_names(store, row)
        return {"html": render_compare(text, names), "names": names}

    @r.get("/api/evals/{job_id}/log", tags=["evals"], response_class=PlainTextResponse)
    def eval_log(job_id: EvalId, tail: int = Query(200, ge=1, le=10000)):
        return log_tail(job(store, job_id, KINDS), tail)

    @r.post("/api/evals/{job_id}/cancel", tags=["evals"])
    def cancel_eval(job_id: EvalId):
        return job_out(cancel(ctx, job(store, job_id, KINDS), job_id))

    @r.post("/api/evals/{job_id}/resume", tags=["evals"])
    def rerun_eval(job_id: EvalId):
        """Run an interrupted, cancelled or failed eval/compare job again."""
        return job_out(requeue(store, job(store, job_id, KINDS)))

    @r.delete("/api/evals/{job_id}", status_code=204, tags=["evals"])
    def delete_eval(job_id: EvalId):
        delete_job(store, job(store, job_id, KINDS), ws)

    return r


def column_names(store: Store, row: dict) -> dict[str, str]:
    """compare.json's column labels (``run``, ``run-2``: adapter directories) → the runs' names
    (a name two runs share gets its run id; a run deleted since keeps its label). The job's
    config lists the adapters and their runs in the same order."""
    result = json.loads(job_file(row, "compare/compare.json", "result").read_text(encoding="utf-8"))
    run_of = {str(Path(a).resolve()): i for a, i in zip(row["config"].get("adapters") or [],
                                                      row["config"].get("runs") or [])}
    runs = {i: store.get_job(i) for i in run_of.values()}
    taken = [r["name"] for r in runs.values() if r]
    names = {}
    for label, path in (result.get("adapters") or {}).items():
        run = runs.get(run_of.get(str(Path(path).resolve())))
        if run is None:
            names[label] = label
        else:
            names[label] = run["name"] if taken.count(run["name"]) == 1 else \
                f"{run['name']} ({run['id']})"
    return names


# CommonMark with tables, raw HTML off (escaped as text) and markdown-it's own link check (no
# javascript: links): markdown-it-py is the well-kept port of markdown-it the rich package
# already brings; compare.md uses headings, paragraphs and tables, and <br> for line breaks in
# a table cell, which is turned into a line break here rather than allowing raw HTML.
_MD = MarkdownIt("commonmark", {"html": False}).enable("table")
_PATH_NOTE = re.compile(r"(\S+) \((/[^()]*)\)")      # "label (/absolute/path)"


def render_compare(text: str, names: dict[str, str]) -> str:
    """compare.md as safe HTML, its column labels replaced by ``names`` in the header cells and
    the paragraphs above the first answer (the adapters, voice and kept lines; an adapter's
    server path there is dropped); answers are never rewritten."""
    tokens = _MD.parse(text)
    label = None
    if names:
        label = re.compile(r"(?<![\w/.-])(" + "|".join(map(re.escape, sorted(names, key=len,
                                                                             reverse=True)))
                           + r")(?![\w/-])")
    header = True
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open" and tok.tag == "h2":
            header = False
        if tok.type != "inline" or not tok.children:
            continue
        before = tokens[i - 1].type
        if label is not None and (before == "th_open" or (header and before == "paragraph_open")):
            for c in tok.children:
                if c.type == "text":
                    if header:           # "run (/server/…/adapter)": the run's name says it
                        c.content = _PATH_NOTE.sub(r"\1", c.content)
                    c.content = label.sub(lambda m: names[m.group(1)], c.content)
        if before == "td_open":
            tok.children = _breaks(tok.children)
    return _MD.renderer.render(tokens, _MD.options, {})


def _breaks(children: list[Token]) -> list[Token]:
    """compare.md writes a line break inside a table cell as ``<br>``: a hard break token."""
    out = []
    for c in children:
        if c.type != "text" or "<br>" not in c.content:
            out.append(c)
            continue
        for j, part in enumerate(c.content.split("<br>")):
            if j:
                out.append(Token("hardbreak", "br", 0))
            if part:
                t = Token("text", "", 0)
                t.content = part
                out.append(t)
    return out


def latest_eval(store: Store, run_id: str) -> dict | None:
    """The summary of the newest completed eval of a run (for runs side by side), or None."""
    for j in store.list_jobs(kind="eval", status=("completed",)):
        if j["config"].get("run") == run_id:
            p = Path(j["dir"]) / "eval" / "report.json"
            try:
                rep = current_keys(json.loads(p.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
            return {"id": j["id"], "variants": rep.get("variants"), "summary": rep.get("summary")}
    return None
