"""``mindprint.train``: a config (object, dict or YAML file) and keyword overrides → a
:class:`~mindprint.runs.Run`.

Overrides are config keys as keyword arguments, applied after the file and the ``MINDPRINT_*``
environment variables, exactly like ``mindprint train --set``:

* ``train__lr=1e-4`` or ``train={"lr": 1e-4, "max_steps": 50}`` set ``train.lr`` (a double
  underscore is a dot; a dict sets each of its keys in that section);
* ``method="dpo"``, ``output_dir="runs/me"``, ``model="smollm2-135m-instruct"`` (a model spec
  string means ``model.name``).

An unknown key is a :class:`~mindprint.errors.ConfigError` with a did-you-mean, as in a YAML
file. Relative paths in a YAML file are read from the file's folder; relative paths in a dict or
an override from the current directory (:mod:`mindprint.config_paths`).

Progress: a live bar on a terminal, a ``tqdm`` bar in a notebook, periodic lines in a log
(:mod:`mindprint.progress`); ``log`` receives the loop's notes (default: ``print``).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Union

from .. import __version__
from .. import config as C
from .. import registry
from ..backends.process import configure_process
from ..config_paths import resolve_file_paths
from ..errors import ConfigError, MindprintError
from ..methods import get_method
from ..runs import Run
from ..training import run_training

ConfigLike = Union[C.Config, Mapping[str, Any], str, os.PathLike, None]


def override_pairs(overrides: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted key, value)`` pairs from keyword overrides (see the module docstring): a dict
    given for a section (a key with keys under it) sets each of its keys, merged into the
    section; a dict for a dict-valued key (``data.columns``) is that key's value."""
    pairs: list[tuple[str, Any]] = []
    for name, value in overrides.items():
        key = prefix + name.replace("__", ".")
        if isinstance(value, Mapping) and any(k.startswith(key + ".") for k in C.ALL_KEYS):
            pairs += override_pairs(value, key + ".")
        elif f"{key}.name" in C.ALL_KEYS:
            pairs.append((f"{key}.name", value))          # model="spec": the section's name
        else:
            pairs.append((key, value))
    return pairs


def load_config(config: ConfigLike = None, /, **overrides: Any) -> C.Config:
    """The validated :class:`~mindprint.config.Config` of ``config`` with ``overrides``.

    ``config`` is a Config (copied, never changed), a mapping in the YAML file's shape, a path to
    a YAML file, or None for the defaults. ``MINDPRINT_*`` environment variables apply to a file,
    a mapping and the defaults (a Config object is taken as already resolved).
    """
    if isinstance(config, C.Config):
        raw, source, use_env = config.model_dump(mode="json"), "config", False
    elif isinstance(config, Mapping):
        raw, source, use_env = copy.deepcopy(dict(config)), "config", True
    elif config is None:
        raw, source, use_env = {}, "config", True
    elif isinstance(config, (str, os.PathLike)):
        raw, source, use_env = resolve_file_paths(C.read_yaml(config), config), str(config), True
    else:
        raise ConfigError(f"config: expected a Config, a mapping or a YAML path, got "
                          f"{type(config).__name__}")
    if use_env:
        for key, value in C.env_overrides():
            C.set_key(raw, key, value, f"environment MINDPRINT_{key.upper().replace('.', '__')}")
    for key, value in override_pairs(overrides):
        C.set_key(raw, key, value, f"override {key.replace('.', '__')}=")
    return C.from_dict(raw, source)


def _check(cfg: C.Config) -> None:
    """Fail fast, before a model loads: the method runs on this backend and can be built (a bad
    reward module fails here); a curriculum's every topic too."""
    if cfg.curriculum is None:
        registry.check_backend(cfg.method, cfg.backend)
        get_method(cfg)
        return
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise MindprintError("a curriculum runs in one process in this version; start it "
                             "without torchrun / accelerate launch")
    for t in cfg.curriculum.topics:
        registry.check_backend(t.method or cfg.method, cfg.backend)
        get_method(cfg.model_copy(update={"method": t.method or cfg.method}))


def train(config: ConfigLike = None, /, *, resume: bool = False, overwrite: bool = False,
          log: Callable[[str], None] | None = print, callbacks: list | None = None,
          **overrides: Any) -> Run:
    """Train an adapter; return its :class:`~mindprint.runs.Run` (``summary``, ``metrics``,
    ``adapter``, ``path``).

    ``config`` and ``overrides``: see :func:`load_config`. ``resume`` continues the run in
    ``output_dir`` from its last checkpoint; ``overwrite`` replaces a run there (without either,
    an existing run is an error). ``callbacks`` replace the default run callbacks (the manifest
    writer and the ``report_to`` trackers, :func:`mindprint.training.default_callbacks`).
    A config with a ``curriculum:`` trains topic after topic (:mod:`mindprint.curriculum`); its
    ``Run.summary`` is the curriculum summary (``stopped_at`` names a topic whose gate failed).

    Process-wide tuning for the backend (:func:`mindprint.backends.process.configure_process`)
    is applied here, once per process: this call is the entry point.

    Example::

        run = mindprint.train("examples/quickstart.yaml", train__max_steps=20, overwrite=True)
        run.summary["final_eval_loss"], run.adapter
    """
    cfg = config if isinstance(config, C.Config) and not overrides else \
        load_config(config, **overrides)
    _check(cfg)
    log = log or _quiet
    if os.environ.get("RANK", "0") == "0":      # torchrun: rank 0 alone speaks
        what = (f"curriculum of {len(cfg.curriculum.topics)} topics" if cfg.curriculum
                else cfg.method)
        log(f"mindprint {__version__}: {what} on {cfg.model.name} ({cfg.backend}) → "
            f"{cfg.output_dir}")
    configure_process(cfg)
    if cfg.curriculum is not None:
        from ..curriculum import run_curriculum    # an app: imported only for a curriculum

        summary = run_curriculum(cfg, resume=resume, overwrite=overwrite, log=log)
    else:
        summary = run_training(cfg, resume=resume, overwrite=overwrite, log=log,
                               callbacks=callbacks, voice_probe=voice_probe)
    run = Run.load(Path(summary["output_dir"]))
    run.summary = dict(summary)
    return run


def voice_probe(cfg: C.Config, tokenizer):
    """``eval.every``'s probe for a run (:class:`mindprint.evaluate.probe.VoiceProbe`)."""
    from ..evaluate.probe import VoiceProbe     # torch: only when a torch run probes its voice

    return VoiceProbe(cfg, tokenizer)


def _quiet(*args, **kwargs) -> None:
    """``log=None``: no notes."""
