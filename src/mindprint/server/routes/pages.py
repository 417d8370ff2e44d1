"""The web page and its static files, and what the page asks first: ``/api/info`` (versions,
methods, rewards, limits) and ``/api/config/fields`` (every config key for the new-run form)."""

from __future__ import annotations

import importlib.util
import types
import typing
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from ... import __version__, registry
from ... import config as C
from ...data.formats import FORMATS, accepts
from ...data.sources import FILE_SUFFIXES
from ...reward_names import BUILTINS
from ..common import Context
from ..security import NO_STORE, TOKEN_COOKIE, token_ok

STATIC = Path(__file__).resolve().parent.parent / "static"


def mount_static(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")


def router(ctx: Context) -> APIRouter:
    r = APIRouter()

    @r.get("/", include_in_schema=False)
    def index(request: Request):
        """The page; opened with a valid ``?token=`` it sets the token cookie and redirects to
        the address without the token (the fragment, ``#/run/…``, is kept by the browser)."""
        given = request.query_params.get("token")
        if given and token_ok(given, ctx.token):
            resp = RedirectResponse("/", status_code=303, headers=NO_STORE)
            resp.set_cookie(TOKEN_COOKIE, given, httponly=True, samesite="strict", path="/")
            return resp
        return FileResponse(STATIC / "index.html", headers=NO_STORE)

    @r.get("/docs", include_in_schema=False)
    def docs():
        return FileResponse(STATIC / "docs.html")

    @r.get("/api/info", tags=["info"])
    def info():
        """Version, installed backends, methods (with the data they train on, the dataset
        formats that hold it, their option sections and backends, from mindprint.registry),
        built-in rewards, workspace."""
        backends = [b for b in registry.BACKENDS if importlib.util.find_spec(b) is not None]
        return {"version": __version__, "backends": backends, "methods": list(registry.NAMES),
                "method_info": {n: {"trains_on": list(s.trains_on), "options": list(s.options),
                                    "backends": list(s.backends),
                                    "formats": method_formats(s.trains_on)}
                                for n, s in registry.METHODS.items()},
                "rewards": list(BUILTINS), "workspace": str(ctx.ws),
                "token_required": bool(ctx.token), "max_upload_bytes": ctx.max_upload_bytes,
                "upload_suffixes": list(FILE_SUFFIXES),
                "max_concurrent": ctx.runner.max_concurrent}

    @r.get("/api/config/fields", tags=["info"])
    def config_fields():
        """Every config key with its default, meaning and kind (for the new-run form)."""
        return config_field_list()

    return r


def method_formats(trains_on) -> list[str]:
    """The data formats (a dataset's detected ``format``) whose records a method trains on: the
    data layer's own rule (:func:`mindprint.data.formats.accepts`: the same record type), so the
    form's dataset picker needs no table of its own."""
    return [f for f in FORMATS if accepts(f, trains_on)]


def _kind_of(ann) -> dict:
    """The form input a config annotation needs: choice (with ``free`` when other values are
    allowed too), bool, int, float, list or text; ``nullable`` for ``X | None``."""
    origin = typing.get_origin(ann)
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    if origin is typing.Literal:
        return {"kind": "choice", "choices": list(typing.get_args(ann))}
    if origin in (typing.Union, types.UnionType):
        lits = [a for a in args if typing.get_origin(a) is typing.Literal]
        if lits:
            return {"kind": "choice", "choices": list(typing.get_args(lits[0])), "free": True}
        return {**_kind_of(args[0]), "nullable": True} if args else {"kind": "text"}
    simple = {bool: "bool", int: "int", float: "float"}
    if ann in simple:
        return {"kind": simple[ann]}
    if origin in (list, tuple):
        return {"kind": "list"}
    return {"kind": "text"}


def config_field_list() -> list[dict]:
    """(key, default, meaning) from the config schema plus the kind of input each key needs
    and its bounds; the curriculum and ``output_dir`` (the server chooses it) are left out."""
    fields = []

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
            k = _kind_of(ann)
            for m in f.metadata:
                for attr in ("ge", "gt", "le", "lt"):
                    if getattr(m, attr, None) is not None:
                        k[attr] = getattr(m, attr)
            fields.append({"key": key, "default": default if not isinstance(default, tuple)
                           else list(default), "description": f.description or "", **k})

    walk(C.Config, "")
    return [f for f in fields if not f["key"].startswith("curriculum")
            and f["key"] != "output_dir"]
