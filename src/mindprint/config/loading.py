"""Reading a config: YAML files, ``MINDPRINT_*`` environment variables, ``--set`` overrides,
validation with one message per wrong key; writing it back (:func:`dump_yaml`) and the key
reference (:func:`describe`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..config_paths import absolute_paths, resolve_file_paths
from ..errors import ConfigError
from .schema import ALL_KEYS, Config, suggest


def _format_error(err: dict, source: str) -> str:
    loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int) or True)
    kind = err["type"]
    where = f"{source}: " if source else ""
    if kind == "extra_forbidden":
        hint = suggest(loc)
        tail = f"; did you mean '{hint}'?" if hint else ""
        return f"{where}unknown key '{loc}'{tail}"
    if kind == "missing":
        return f"{where}missing required key '{loc}'"
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if not loc:      # a check across keys: its message names them
        return f"{where}{msg}"
    return f"{where}{loc}: {msg}{shown}"


def from_dict(raw: dict, source: str = "") -> Config:
    """Validate a raw mapping; raise :class:`ConfigError` naming every wrong key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source or 'config'}: expected a mapping of keys, got {type(raw).__name__}")
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        lines = [_format_error(err, source) for err in e.errors()]
        raise ConfigError("\n".join(lines)) from None


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def set_key(raw: dict, dotted: str, value: Any, source: str) -> None:
    """Set ``a.b.c = value`` in a nested dict, refusing keys the schema does not know."""
    if dotted not in ALL_KEYS:
        hint = suggest(dotted)
        tail = f"; did you mean '{hint}'?" if hint else ""
        raise ConfigError(f"{source}: unknown key '{dotted}'{tail}")
    parts = dotted.split(".")
    node = raw
    for p in parts[:-1]:
        child = node.get(p)
        if p == "model" and isinstance(child, str):
            child = {"name": child}
        if not isinstance(child, dict):
            child = {}
        node[p] = child
        node = child
    node[parts[-1]] = value


def parse_overrides(pairs: list[str]) -> list[tuple[str, Any]]:
    out = []
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. --set train.lr=1e-4")
        key, _, value = pair.partition("=")
        out.append((key.strip(), _parse_scalar(value.strip())))
    return out


# MINDPRINT_* variables that set up the process, not a config key (every other MINDPRINT_* is one):
# the model cache, the web UI's home and token, torchrun's rendezvous timeout, MLX's BLAS, CPU
# malloc tuning
PROCESS_ENV = frozenset({"MINDPRINT_CACHE", "MINDPRINT_HOME", "MINDPRINT_TOKEN",
                         "MINDPRINT_DIST_TIMEOUT_MIN", "MINDPRINT_MLX_BLAS",
                         "MINDPRINT_MALLOC_TUNING"})


def env_overrides(environ: dict | None = None) -> list[tuple[str, Any]]:
    """``MINDPRINT_TRAIN__LR=1e-4`` → ``("train.lr", 1e-4)``; top-level keys use one part.
    The variables in :data:`PROCESS_ENV` are not config keys and are skipped."""
    environ = os.environ if environ is None else environ
    out = []
    for name, value in sorted(environ.items()):
        if not name.startswith("MINDPRINT_") or name in PROCESS_ENV:
            continue
        key = name[len("MINDPRINT_"):].lower().replace("__", ".")
        out.append((key, _parse_scalar(value)))
    return out


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: no such config file")
    if p.is_dir():
        raise ConfigError(f"{p}: is a directory, expected a YAML file")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}{line}: invalid YAML: {problem}") from None
    if raw is None:
        raise ConfigError(f"{p}: config file is empty")
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of keys at the top level")
    return raw


def load(path: str | Path | None, overrides: list[str] | None = None, *, use_env: bool = True,
         base: dict | None = None, flags: list[tuple[str, Any]] | None = None) -> Config:
    """Load YAML, apply environment variables, CLI ``flags`` (``(key, value)`` pairs such as
    ``mindprint train --data``'s), then ``--set`` overrides, and validate.

    Relative input paths in the YAML file (data, eval and curriculum files, a local model) are
    resolved against the file's directory; ``output_dir``, ``--set``, flag and environment values
    stay relative to the current directory (see :mod:`mindprint.config_paths`).
    """
    raw = dict(base or {})
    source = str(path) if path else "config"
    if path is not None:
        raw.update(resolve_file_paths(read_yaml(path), path))
    if use_env:
        for key, value in env_overrides():
            set_key(raw, key, value, f"environment MINDPRINT_{key.upper().replace('.', '__')}")
    for key, value in flags or []:
        set_key(raw, key, value, f"--{key.rsplit('.', 1)[-1]}")
    for key, value in parse_overrides(overrides or []):
        set_key(raw, key, value, f"--set {key}")
    return from_dict(raw, source)


def dump_yaml(cfg: Config) -> str:
    """The resolved config as YAML, every path absolute, so it loads back the same from any
    directory (a run's ``config.yaml``)."""
    return yaml.safe_dump(absolute_paths(cfg.to_dict()), sort_keys=False, allow_unicode=True)


def describe() -> list[tuple[str, str, str]]:
    """(key, default, meaning) for every key — the README's config reference is generated from it."""
    rows = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, f in model.model_fields.items():
            ann = f.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, prefix + name + ".")
                continue
            name = f.alias or name
            if f.is_required():
                default = "(required)"
            elif f.default_factory is not None:
                default = repr(f.default_factory())
            else:
                default = repr(f.default)
            rows.append((prefix + name, default, f.description or ""))

    walk(Config, "")
    return rows
