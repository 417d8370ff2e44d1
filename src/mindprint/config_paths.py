"""File paths inside a config: which keys hold them and what a relative one is relative to.

Rule (docker-compose's and LLaMA-Factory's ``dataset_dir``): a relative path written in a YAML
file is resolved against **that file's directory**, so a config works from any current
directory and can travel with its data. Paths given on the command line (``--set``, ``--data``,
``MINDPRINT_*`` variables) stay relative to the current directory, like any other CLI argument.

Keys resolved against the config file's directory (:data:`DATA_KEYS`): ``data.train``,
``data.eval``, ``eval.prompts``, ``eval.chat``, ``eval.preference``, ``grpo.voice_person`` and each curriculum topic's
``data`` and ``eval``. ``model.name`` is resolved there only when that path exists, since
``org/name`` may equally be a hub id.

Outputs are not inputs: ``output_dir`` and ``eval.output_dir`` stay relative to the current
directory, as with the Hugging Face Trainer and TRL — ``mindprint train examples/quickstart.yaml``
from the repository root writes ``runs/quickstart`` there, not inside ``examples/``.

A Hugging Face Hub dataset id (``org/name``, no file suffix) that exists neither beside the config
nor in the current directory is left as it is: the data loader reads it through ``datasets``.

Compatibility: configs written before this rule named data relative to the directory they were
run from (``examples/data/persona_train.jsonl``). A relative path that does not exist beside the
config file but does exist in the current directory is used from there, with a
:class:`ConfigPathWarning` asking to rewrite it.

:func:`absolute_paths` turns every path of a resolved config (outputs included, against the
current directory) into an absolute one: the ``config.yaml`` a run writes then loads back the same
from anywhere.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

# (section, key) pairs whose values are data files (a string or a list of strings)
DATA_KEYS = (("data", "train"), ("data", "eval"), ("eval", "prompts"), ("eval", "chat"),
             ("eval", "preference"), ("grpo", "voice_person"))
TOPIC_KEYS = ("data", "eval")


# a Hub id: one slash, no file suffix a data file would have
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt")


def is_hub_id(value: str) -> bool:
    """``value`` reads as a Hub id (``org/name``) rather than a relative file path."""
    return bool(HUB_ID.fullmatch(value)) and not value.lower().endswith(DATA_SUFFIXES)


class ConfigPathWarning(UserWarning):
    """A config's relative path was found relative to the current directory, not to the file."""


def _join(base: Path, p: str) -> str:
    return os.path.normpath(base / p)


def _resolve_one(value: Any, base: Path, cwd: Path, where: str, source: str) -> Any:
    if not isinstance(value, str) or not value or os.path.isabs(os.path.expanduser(value)):
        return os.path.expanduser(value) if isinstance(value, str) else value
    beside = _join(base, value)
    if not os.path.exists(beside) and base != cwd and os.path.exists(_join(cwd, value)):
        here = _join(cwd, value)
        warnings.warn(f"{source}: {where} '{value}' is not in the config's folder ({base}); using "
                      f"{here} relative to the current directory. Relative paths in a config are "
                      f"read from the config's folder: write '{os.path.relpath(here, base)}' "
                      "(this fallback will be removed)", ConfigPathWarning, stacklevel=4)
        return here
    if not os.path.exists(beside) and not os.path.exists(_join(cwd, value)) and is_hub_id(value):
        return value    # a Hub dataset id, for the data loader
    return beside


def _resolve_list(value: Any, base: Path, cwd: Path, where: str, source: str) -> Any:
    if isinstance(value, list):
        return [_resolve_one(v, base, cwd, where, source) for v in value]
    return _resolve_one(value, base, cwd, where, source)


def resolve_file_paths(raw: dict, config_file: str | Path, cwd: str | Path | None = None) -> dict:
    """A copy of the YAML mapping ``raw`` with its relative input paths made absolute against
    ``config_file``'s directory (see the module docstring). Values of the wrong type are left for
    the schema to reject with its own message."""
    base = Path(config_file).expanduser().absolute().parent
    cwd = Path(cwd or os.getcwd()).absolute()
    source = str(config_file)
    out = dict(raw)
    for section, key in DATA_KEYS:
        sec = out.get(section)
        if isinstance(sec, dict) and key in sec:
            out[section] = sec = dict(sec)
            sec[key] = _resolve_list(sec[key], base, cwd, f"{section}.{key}", source)
    model = out.get("model")
    name = model.get("name") if isinstance(model, dict) else model
    if isinstance(name, str) and name and not os.path.isabs(os.path.expanduser(name)) \
            and os.path.exists(_join(base, name)):
        resolved = _join(base, name)
        out["model"] = {**model, "name": resolved} if isinstance(model, dict) else resolved
    cur = out.get("curriculum")
    if isinstance(cur, dict) and isinstance(cur.get("topics"), list):
        topics = []
        for i, t in enumerate(cur["topics"]):
            if isinstance(t, dict):
                t = dict(t)
                for key in TOPIC_KEYS:
                    if key in t:
                        t[key] = _resolve_list(t[key], base, cwd,
                                               f"curriculum.topics[{i}].{key}", source)
            topics.append(t)
        out["curriculum"] = {**cur, "topics": topics}
    return out


def _abs(p: str) -> str:
    return os.path.abspath(os.path.expanduser(p))


def _abs_input(p: str) -> str:
    """An input path made absolute; a Hub dataset id stays as it is."""
    return p if not os.path.exists(os.path.expanduser(p)) and is_hub_id(p) else _abs(p)


def absolute_paths(d: dict) -> dict:
    """A config dict (``Config.to_dict()``) with every file path absolute against the current
    directory: inputs, ``output_dir``, ``eval.output_dir``, and ``model.name`` when it names an
    existing local path. Aliases and hub ids are left as they are."""
    d = {**d}
    for section, key in DATA_KEYS:
        if isinstance(d.get(section), dict) and isinstance(d[section].get(key), list):
            d[section] = {**d[section], key: [_abs_input(p) for p in d[section][key]]}
    if d.get("output_dir"):
        d["output_dir"] = _abs(d["output_dir"])
    if isinstance(d.get("eval"), dict) and d["eval"].get("output_dir"):
        d["eval"] = {**d["eval"], "output_dir": _abs(d["eval"]["output_dir"])}
    model = d.get("model")
    if isinstance(model, dict) and isinstance(model.get("name"), str) \
            and os.path.exists(os.path.expanduser(model["name"])):
        d["model"] = {**model, "name": _abs(model["name"])}
    cur = d.get("curriculum")
    if isinstance(cur, dict) and isinstance(cur.get("topics"), list):
        d["curriculum"] = {**cur, "topics": [
            {**t, **{k: [_abs_input(p) for p in t[k]] for k in TOPIC_KEYS
                     if isinstance(t.get(k), list)}}
            for t in cur["topics"]]}
    return d
