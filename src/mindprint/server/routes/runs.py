"""Training runs: create (the config goes through the CLI's own schema), list, cancel, resume,
delete, metrics, log, GRPO samples, the adapter as a zip, and runs side by side.

A run is a ``train`` job: ``WORKSPACE/jobs/<id>/job.yaml`` (the validated config, its output
directory set to ``jobs/<id>/run``) run by ``mindprint train`` in a subprocess (:mod:`..jobs`).
"""

from __future__ import annotations

import importlib.util
import re
import typing
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse, PlainTextResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from ... import config as C
from ...errors import ConfigError, ModelError
from ...models import preflight, resolve
from ...runs import Run, config_differences, metric_rows, read_json_object
from .. import jobs as J
from ..common import (Context, RunId, cancel, delete_job, job, job_out, log_tail, read_rows,
                      requeue)
from ..reward_check import reward_problems
from ..security import api_error
from ..store import ID_PATTERN, new_id
from ..speed import measured_speed
from .evals import latest_eval

# config keys whose values are files: in the web UI they name datasets of the workspace
DATA_KEYS = ("data.train", "data.eval", "eval.prompts", "eval.chat", "eval.preference")


class RunRequest(BaseModel):
    name: str | None = Field(None, max_length=120, description="a label for the run list")
    config: dict[str, Any] | None = Field(None, description="the run config as a mapping (the "
                                          "same keys as a YAML config); data files are dataset ids")
    config_yaml: str | None = Field(None, max_length=200_000, description="or the config as YAML")
    overrides: list[str] = Field(default_factory=list, max_length=200, description="KEY=VALUE "
                                 "strings applied last, as `mindprint train --set` does")


def router(ctx: Context) -> APIRouter:
    r = APIRouter()
    store, ws = ctx.store, ctx.ws

    @r.post("/api/runs", status_code=201, tags=["runs"])
    def create_run(req: RunRequest):
        """Queue a training run. The config is validated by the CLI's schema: a mistake gives 422
        with the CLI's message (unknown keys with a did-you-mean, out-of-range values)."""
        try:
            cfg = validate_run_config(req, ctx)
        except (ConfigError, ModelError) as e:
            return api_error(422, str(e), errors=str(e).splitlines(),
                             fields=field_errors(str(e), "model.name" if isinstance(e, ModelError)
                                                 else None))
        run_id = new_id("r")
        d = J.job_dir(ws, run_id)
        cfg.output_dir = str(d / "run")
        d.mkdir(parents=True)
        (d / "job.yaml").write_text(C.dump_yaml(cfg), encoding="utf-8")
        name = (req.name or "").strip() or f"{cfg.method} {time.strftime('%m-%d %H:%M')}"
        row = store.add_job(id=run_id, kind="train", name=name, config=cfg.to_dict(), dir=str(d))
        return job_out(row)

    @r.get("/api/runs", tags=["runs"])
    def list_runs():
        return [job_out(j, brief=True) for j in store.list_jobs(kind="train")]

    @r.get("/api/speed", tags=["runs"])
    def training_speed():
        """The New-run form's time estimate: budget tokens per second (steps × batch × grad_accum
        × max_length over the training time) and start-up seconds of this workspace's finished
        runs, per model and method (see :mod:`..speed`), or a stated default."""
        return measured_speed(store.list_jobs(kind="train", status=("completed",)))

    @r.get("/api/runs/{run_id}", tags=["runs"])
    def get_run(run_id: RunId):
        """The run, plus ``datasets`` (each data key's files as workspace datasets: id, name,
        path) and ``trained_on`` (the files the run's manifest recorded, with their hashes)."""
        row = job(store, run_id, "train")
        return {**job_out(row), "datasets": dataset_refs(store, row["config"]),
                "trained_on": trained_on(store, row)}

    @r.post("/api/runs/{run_id}/cancel", tags=["runs"])
    def cancel_run(run_id: RunId):
        """Stop a run: it finishes its step, saves a checkpoint and can be resumed."""
        return job_out(cancel(ctx, job(store, run_id, "train"), f"run {run_id}"))

    @r.post("/api/runs/{run_id}/resume", tags=["runs"])
    def resume_run(run_id: RunId):
        """Queue an interrupted, cancelled or failed run again; it continues from its last
        checkpoint (or starts over when it never saved one)."""
        return job_out(requeue(store, job(store, run_id, "train")))

    @r.delete("/api/runs/{run_id}", status_code=204, tags=["runs"])
    def delete_run(run_id: RunId):
        delete_job(store, job(store, run_id, "train"), ws)

    @r.get("/api/runs/{run_id}/metrics", tags=["metrics"])
    def run_metrics(run_id: RunId):
        """Every row of the run's metrics.jsonl so far."""
        rows, _ = read_rows(J.run_dir(job(store, run_id, "train")) / "metrics.jsonl", 0)
        return rows

    @r.get("/api/runs/{run_id}/log", response_class=PlainTextResponse, tags=["runs"])
    def run_log(run_id: RunId, tail: int = Query(200, ge=1, le=10000)):
        return log_tail(job(store, run_id), tail)

    @r.get("/api/runs/{run_id}/samples", tags=["runs"])
    def run_samples(run_id: RunId, limit: int = Query(50, ge=1, le=1000)):
        """Sampled completions a GRPO run wrote to samples.jsonl (newest last)."""
        rows, _ = read_rows(J.run_dir(job(store, run_id, "train")) / "samples.jsonl", 0)
        return rows[-limit:]

    @r.get("/api/runs/{run_id}/adapter.zip", tags=["artefacts"])
    def download_adapter(run_id: RunId):
        """The final adapter (PEFT format, with mindprint.json) as a zip file."""
        row = job(store, run_id, "train")
        adapter = J.run_dir(row) / "adapter"
        if not (adapter / "adapter_config.json").exists():
            raise HTTPException(404, f"run {run_id} has no adapter yet")
        tmp = Path(tempfile.mkdtemp(prefix="mindprint-zip-"))
        archive = shutil.make_archive(str(tmp / f"{run_id}-adapter"), "zip", adapter)
        return FileResponse(archive, media_type="application/zip",
                            filename=f"{_slug(row['name'])}-{run_id}-adapter.zip",
                            background=BackgroundTask(shutil.rmtree, tmp, True))

    @r.get("/api/compare", tags=["runs"])
    def compare_runs(runs: str = Query(..., description="comma-separated run ids")):
        """Config keys that differ and final metrics side by side (``mindprint runs compare``)."""
        ids = [i for i in runs.split(",") if i]
        if not 1 <= len(ids) <= 8 or not all(re.match(ID_PATTERN, i) for i in ids):
            raise HTTPException(422, "runs: give 1 to 8 run ids, comma-separated")
        rows = [job(store, i, "train") for i in ids]
        loaded = [Run.load(J.run_dir(j), j["name"]) for j in rows]
        evals = {j["id"]: latest_eval(store, j["id"]) for j in rows}
        return {"runs": [{"id": j["id"], "name": j["name"], "status": j["status"]} for j in rows],
                "config_differences": [{"key": k, "values": v} for k, v in
                                       config_differences(loaded)],
                "metrics": [{"key": k, "values": v} for k, v in metric_rows(loaded)],
                "eval_reports": [evals[j["id"]] for j in rows]}

    return r


# a validation line names its key as "config: KEY: what", "config: missing required key 'KEY'",
# "config: unknown key 'KEY'; did you mean …" (mindprint.config; a YAML line number may follow
# "config"), or "--set KEY: what" for an override
_KEY_OF = (re.compile(r"^config(?::\d+)?: (?:missing required|unknown) key '([\w.-]+)'"),
           re.compile(r"^config(?::\d+)?: ([A-Za-z_][\w.-]*): "),
           re.compile(r"^--set ([A-Za-z_][\w.-]*): "))          # an override (KEY=VALUE line)


def field_errors(message: str, default_key: str | None = None) -> list[dict]:
    """``{"key", "message"}`` for each line of a validation message, so that the form shows each
    at its field; a line naming no key gets ``default_key`` (None: shown in the summary only)."""
    out = []
    for line in message.splitlines():
        if not line.strip():
            continue
        m = next((m for m in (p.match(line) for p in _KEY_OF) if m), None)
        out.append({"key": m.group(1) if m else default_key, "message": line})
    return out


def dataset_refs(store, cfg: dict) -> dict[str, list[dict]]:
    """Each data key's files (``data.train``: [paths]) as ``{"path", "id", "name"}``: the
    workspace dataset stored at that path, or id and name None when it is gone."""
    by_path = {d["path"]: d for d in store.list_datasets()}
    out = {}
    for key in DATA_KEYS:
        section, leaf = key.split(".")
        paths = (cfg.get(section) or {}).get(leaf) or []
        out[key] = [{"path": p, "id": by_path.get(p, {}).get("id"),
                     "name": by_path.get(p, {}).get("name")} for p in paths]
    return out


def trained_on(store, row: dict) -> list[dict]:
    """The data files the run's manifest.json recorded (role, path, sha256) with the workspace
    dataset's id and name, and the number of examples of each role; [] before the run starts."""
    data = read_json_object(J.run_dir(row) / "manifest.json").get("data") or {}
    by_path = {d["path"]: d for d in store.list_datasets()}
    counts = data.get("tokenized") or {}
    return [{"role": f.get("role"), "path": f.get("path"), "sha256": f.get("sha256"),
             "id": by_path.get(f.get("path"), {}).get("id"),
             "name": by_path.get(f.get("path"), {}).get("name"),
             "examples": counts.get(f"{f.get('role')}_examples")}
            for f in data.get("files") or [] if isinstance(f, dict)]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40] or "run"


def validate_run_config(req: RunRequest, ctx: Context):
    """The request's config through the CLI's schema (same messages) and the CLI's model check
    (:func:`check_model`), then server rules: data files are datasets of this workspace, the
    backend is installed, reward functions pass :mod:`..reward_check` (nothing is imported).
    Numbers are strict (:func:`strict_numbers`): JSON has types YAML text does not. Raises
    ConfigError (or ModelError for the model)."""
    store, ws = ctx.store, ctx.ws
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
        strict_numbers(raw)
    cfg = C.from_dict(raw, "config")
    check_model(cfg.model.name)
    if cfg.curriculum is not None:
        raise ConfigError("curriculum: not available in the web UI yet; run it with "
                          "mindprint train CONFIG")
    problems = []
    for key in DATA_KEYS:
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
        problems.extend(reward_problems(list(cfg.grpo.rewards), loopback=ctx.loopback,
                                        allowed=ctx.rewards,
                                        forbidden_dirs=[ws, Path.cwd()]))
    if problems:
        raise ConfigError("\n".join(problems))
    return cfg


def check_model(spec: str) -> None:
    """The model checks ``mindprint train`` makes before loading anything (:func:`preflight`:
    empty, unknown, an uncached hub id), plus a directory that is no model (``model: /etc``),
    which ``resolve`` names without loading or converting anything (a directory holding a .gguf
    is left to the run: converting it is the run's work). Raises ModelError."""
    preflight(spec)
    p = Path(str(spec).strip()).expanduser()
    if p.is_dir() and not any(p.glob("*.gguf")):
        resolve(str(spec))


def _int_keys(model, prefix: str = "") -> dict[str, type]:
    """Dotted config keys whose values are numbers, with the number type (int or float)."""
    out = {}
    for name, f in model.model_fields.items():
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(_int_keys(ann, prefix + name + "."))
            continue
        kinds = {a for a in (typing.get_args(ann) or (ann,)) if a in (int, float)}
        if kinds and bool not in typing.get_args(ann) and ann is not bool:
            out[prefix + (f.alias or name)] = int if kinds == {int} else float
    return out


def strict_numbers(raw: dict) -> None:
    """Refuse a JSON ``true`` where the schema wants a number and a fractional or float-written
    number where it wants a whole one (``max_steps: 1e15``): the schema's lax parsing would turn
    them into 1 and 10**15, where the same text in a YAML file fails with the CLI's message."""
    numeric = _int_keys(C.Config)
    problems = []

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            key = prefix + str(k)
            if isinstance(v, dict):
                walk(v, key + ".")
            elif key in numeric:
                if isinstance(v, bool):
                    problems.append(f"config: {key}: Input should be a valid number, not a "
                                    f"boolean (got {str(v).lower()})")
                elif numeric[key] is int and isinstance(v, float):
                    problems.append(f"config: {key}: Input should be a valid integer, written "
                                    f"without a decimal point or exponent (got {v!r})")

    walk(raw, "")
    if problems:
        raise ConfigError("\n".join(problems))
