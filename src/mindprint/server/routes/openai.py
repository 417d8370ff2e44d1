"""The OpenAI-compatible API: ``GET /v1/models`` and ``POST /v1/chat/completions`` (plain, or
``stream: true`` as server-sent events), answered by the server's :class:`~..engine.ChatEngine`.

``model`` names ``base`` (the base model without adapter), an adapter registered at start with
``--adapter NAME=PATH``, or a training run of the workspace that has an adapter (its id, or its
name when no other run has that name). Supported request fields: ``model``, ``messages`` (roles
system/developer/user/assistant; content as text or a list of text parts), ``temperature``
(default 1), ``top_p`` (default 1), ``max_tokens`` / ``max_completion_tokens`` (default 256,
never past the model's context), ``stop`` (a string or up to 4), ``seed``, ``n`` (1 only),
``stream``, ``stream_options.include_usage``. Any other field is refused with 400 naming it (never
silently ignored). Errors have OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Stream framing, as OpenAI's: ``data: {chunk}\\n\\n`` per ``chat.completion.chunk`` (the first
carries ``delta.role``, the last an empty delta and ``finish_reason``), an optional usage chunk,
then ``data: [DONE]\\n\\n``. The response starts once the first token (or an error) is there, so
a request the engine refuses (unknown base, prompt too long) gets a plain 400, not a broken stream.
Security is the ``/api`` one (:mod:`..security`): the token, when the server has one, is the
client's API key (``Authorization: Bearer``).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.exception_handlers import (http_exception_handler,
                                        request_validation_exception_handler)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import jobs as J
from ..common import Context
from ..engine import RequestError, Settings
from ..security import STREAM_HEADERS

BASE = "base"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatRequest(_Strict):
    model: str = Field(..., min_length=1, max_length=200)
    messages: list[Message] = Field(..., min_length=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(None, ge=1, le=32768)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1, le=1, description="one answer per request")
    stream: bool = False
    stream_options: StreamOptions | None = None


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None,
                 type_: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.type, self.code = (status, message, param,
                                                                       type_, code)


def error_response(status: int, message: str, param: str | None = None,
                   type_: str = "invalid_request_error", code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param,
                                   "code": code}}, status_code=status)


def install(app: FastAPI) -> None:
    """Errors under ``/v1`` in OpenAI's shape (other paths keep FastAPI's ``detail``)."""
    @app.exception_handler(OpenAIError)
    async def oai_error(request, exc: OpenAIError):
        return error_response(exc.status, exc.message, exc.param, exc.type, exc.code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        if not request.url.path.startswith("/v1"):
            return await request_validation_exception_handler(request, exc)
        errs = exc.errors()
        first = errs[0] if errs else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        param = ".".join(loc) or None
        if first.get("type") == "extra_forbidden":
            msg = f"{param}: not supported by this server"
        elif param == "n":
            msg = "n: this server answers with one choice per request (n=1)"
        else:
            msg = f"{param or 'body'}: {first.get('msg', 'invalid request')}"
        more = f" (and {len(errs) - 1} more problem(s))" if len(errs) > 1 else ""
        return error_response(400, msg + more, param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if not request.url.path.startswith("/v1"):
            return await http_exception_handler(request, exc)
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(exc.status_code, str(exc.detail), None, kind)


def _runs_with_adapters(ctx: Context) -> list[dict]:
    return [j for j in ctx.store.list_jobs(kind="train")
            if (J.run_dir(j) / "adapter" / "adapter_config.json").exists()]


def model_names(ctx: Context) -> list[tuple[str, str | None]]:
    """(name, adapter dir) of every model the API answers to: base, registered adapters, runs
    (by name when it is unique among runs with adapters, else by id)."""
    out = [(BASE, None)] + [(n, str(p)) for n, p in ctx.adapters.items()]
    runs = _runs_with_adapters(ctx)
    names = [j["name"] for j in runs]
    taken = {n for n, _ in out}
    for j in runs:
        unique = names.count(j["name"]) == 1 and j["name"] not in taken
        out.append((j["name"] if unique else j["id"], str(J.run_dir(j) / "adapter")))
    return out


def resolve_model(ctx: Context, name: str) -> str | None:
    """The adapter directory ``name`` means (None: the base); OpenAIError 404 when unknown."""
    if name == BASE:
        return None
    if name in ctx.adapters:
        return str(ctx.adapters[name])
    runs = _runs_with_adapters(ctx)
    hits = [j for j in runs if j["id"] == name] or [j for j in runs if j["name"] == name]
    if len(hits) > 1:
        raise OpenAIError(400, f"model: {len(hits)} runs are named {name!r} "
                          f"({', '.join(j['id'] for j in hits)}); use a run id", "model")
    if hits:
        return str(J.run_dir(hits[0]) / "adapter")
    known = ", ".join(n for n, _ in model_names(ctx))
    raise OpenAIError(404, f"model: no model {name!r} here (known: {known}); a run is "
                      "available once it has an adapter", "model", "not_found_error",
                      "model_not_found")


def _messages(req: ChatRequest) -> list[dict]:
    out = []
    for m in req.messages:
        text = m.content if isinstance(m.content, str) else "".join(p.text for p in m.content)
        out.append({"role": "system" if m.role == "developer" else m.role, "content": text})
    return out


def _settings(req: ChatRequest) -> Settings:
    if req.max_tokens is not None and req.max_completion_tokens is not None \
            and req.max_tokens != req.max_completion_tokens:
        raise OpenAIError(400, "give max_tokens or max_completion_tokens, not two different "
                          "values", "max_tokens")
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > 4 or any(not s for s in stop):
        raise OpenAIError(400, "stop: up to 4 non-empty strings", "stop")
    return Settings(temperature=req.temperature, top_p=req.top_p,
                    max_tokens=req.max_tokens or req.max_completion_tokens, stop=stop,
                    seed=req.seed)


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def router(ctx: Context) -> APIRouter:
    r = APIRouter(tags=["openai"])

    @r.get("/v1/models")
    def list_models():
        now = int(time.time())
        return {"object": "list", "data": [{"id": n, "object": "model", "created": now,
                                            "owned_by": "mindprint"} for n, _ in model_names(ctx)]}

    @r.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest):
        adapter = resolve_model(ctx, body.model)
        job = ctx.engine.submit(_messages(body), adapter, _settings(body))
        try:
            first = await asyncio.to_thread(job.next_event)
        except asyncio.CancelledError:
            job.cancel()
            raise
        if first[0] == "error":
            raise _engine_error(first[1])
        cid, created = f"chatcmpl-{secrets.token_hex(12)}", int(time.time())
        if not body.stream:
            parts, ev = [], first
            while ev[0] == "delta":
                parts.append(ev[1])
                ev = await asyncio.to_thread(job.next_event)
            if ev[0] == "error":
                raise _engine_error(ev[1])
            return {"id": cid, "object": "chat.completion", "created": created,
                    "model": body.model,
                    "choices": [{"index": 0, "message": {"role": "assistant",
                                                         "content": "".join(parts)},
                                 "finish_reason": ev[1], "logprobs": None}],
                    "usage": ev[2]}
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def chunk(delta: dict, finish: str | None = None) -> str:
            return _sse({"id": cid, "object": "chat.completion.chunk", "created": created,
                         "model": body.model, "choices": [{"index": 0, "delta": delta,
                                                           "finish_reason": finish,
                                                           "logprobs": None}]})

        async def events():
            try:
                yield chunk({"role": "assistant", "content": ""})
                ev = first
                while ev[0] == "delta":
                    yield chunk({"content": ev[1]})
                    ev = await asyncio.to_thread(job.next_event)
                if ev[0] == "error":
                    yield _sse({"error": {"message": str(ev[1]), "type": "server_error",
                                          "param": None, "code": None}})
                else:
                    yield chunk({}, ev[1])
                    if include_usage:
                        yield _sse({"id": cid, "object": "chat.completion.chunk",
                                    "created": created, "model": body.model, "choices": [],
                                    "usage": ev[2]})
                yield "data: [DONE]\n\n"
            finally:
                job.cancel()           # a client that went away stops its generation

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers=STREAM_HEADERS)

    return r


def _engine_error(exc: Exception) -> OpenAIError:
    """A request's mistake (RequestError: too long, adapter of another base) is a 400; anything
    else (the base model cannot load, a crash) a 500 with its one-line reason."""
    if isinstance(exc, RequestError):
        return OpenAIError(400, str(exc), exc.param)
    return OpenAIError(500, str(exc), None, "server_error")
