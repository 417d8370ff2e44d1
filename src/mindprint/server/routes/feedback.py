"""Feedback from the chat playground, appended to workspace datasets the New-run form offers.

``POST /api/feedback`` with ``kind``:

* ``preference``: a blind A/B pick (or an edited answer: the edit is ``chosen``, the model's
  answer ``rejected``) → one ``{"prompt": [messages], "chosen", "rejected"}`` record of the
  workspace's ``chat-preference.jsonl`` dataset (DPO, IPO, ORPO, SimPO, KTO train on it);
* ``kto``: a thumbs up or down → one ``{"prompt": [messages], "completion", "label"}`` record of
  ``chat-kto.jsonl`` (KTO).

The prompt is the conversation up to the answer (system and earlier turns included). Each record
is validated like an upload (:func:`mindprint.data.validate.validate_file`, e.g. ``chosen`` equal
to ``rejected`` is refused with 422 and the validator's words) before it is appended; the file is
rewritten atomically (temp file + rename) and the dataset's report updated. Which dataset holds a
kind's feedback is recorded in ``WORKSPACE/feedback.json``; a deleted one is started afresh.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from ...data.validate import validate_file
from ...errors import DataError
from ..common import Context
from ..store import new_id
from .datasets import _validate, dataset_out

NAMES = {"preference": "chat-preference.jsonl", "kto": "chat-kto.jsonl"}


class Turn(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(..., max_length=100_000)


class Feedback(BaseModel):
    kind: Literal["preference", "kto"]
    prompt: list[Turn] = Field(..., min_length=1, max_length=200,
                               description="the conversation before the judged answer")
    chosen: str | None = Field(None, max_length=100_000, description="preference: the pick")
    rejected: str | None = Field(None, max_length=100_000, description="preference: the other")
    completion: str | None = Field(None, max_length=100_000, description="kto: the answer")
    label: bool | None = Field(None, description="kto: thumbs up (true) or down (false)")


def record_of(fb: Feedback) -> dict:
    prompt = [t.model_dump() for t in fb.prompt]
    need = {"preference": ("chosen", "rejected"), "kto": ("completion", "label")}[fb.kind]
    missing = [k for k in need if getattr(fb, k) is None]
    other = [k for k in ("chosen", "rejected", "completion", "label")
             if k not in need and getattr(fb, k) is not None]
    if missing or other:
        raise HTTPException(422, f"{fb.kind} feedback takes {' and '.join(need)}"
                            + (f"; missing: {', '.join(missing)}" if missing else "")
                            + (f"; not used: {', '.join(other)}" if other else ""))
    return {"prompt": prompt, **{k: getattr(fb, k) for k in need}}


def _check_record(record: dict, kind: str) -> None:
    """The validator's problems for this one record, as a 422."""
    fd, tmp = tempfile.mkstemp(suffix=".jsonl")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        rep = validate_file(tmp, kind)
    except DataError as e:
        raise HTTPException(422, str(e).replace(tmp, "feedback")) from None
    finally:
        os.unlink(tmp)
    if rep.invalid:
        raise HTTPException(422, "; ".join(p.replace(f"{tmp}:1: ", "") for p in rep.problems))


def router(ctx: Context) -> APIRouter:
    r = APIRouter(tags=["datasets"])
    lock = threading.Lock()
    index = ctx.ws / "feedback.json"

    def dataset_for(kind: str) -> dict:
        ids = json.loads(index.read_text()) if index.exists() else {}
        d = ctx.store.get_dataset(ids.get(kind, "")) if ids.get(kind) else None
        if d is not None and Path(d["path"]).exists():
            return d
        ds_id = new_id("d")
        path = ctx.ws / "datasets" / ds_id / NAMES[kind]
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
        d = ctx.store.add_dataset(id=ds_id, name=NAMES[kind], path=str(path), bytes=0,
                                  format=kind, total=0, valid=0, invalid=0, topics={},
                                  problems=[])
        _write_atomic(index, json.dumps({**ids, kind: ds_id}, indent=1))
        return d

    @r.post("/api/feedback", status_code=201)
    def add_feedback(fb: Feedback):
        """Append one pick, edit or thumb to the workspace's feedback dataset of that kind;
        returns the dataset (id, counts) to train on."""
        record = record_of(fb)
        _check_record(record, fb.kind)
        with lock:
            d = dataset_for(fb.kind)
            path = Path(d["path"])
            data = path.read_bytes() + (json.dumps(record, ensure_ascii=False) + "\n").encode()
            _write_atomic(path, data)
            report = _validate(path)
            ctx.store.update_dataset(d["id"], bytes=len(data), **report)
        return dataset_out(ctx.store.get_dataset(d["id"]))

    return r


def _write_atomic(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    os.replace(tmp, path)
