"""Mindprint: turn a small or mid-size LLM into a person's voice.

The Python API (each name is loaded on first use, so ``import mindprint`` stays light)::

    import mindprint

    report = mindprint.datasets.validate("me.jsonl")          # file:line problems, counts
    run = mindprint.train("examples/quickstart.yaml", train__max_steps=20, overwrite=True)
    run.summary["final_eval_loss"], run.metrics[-1], run.adapter
    model = mindprint.load(run)                               # or an adapter / run directory
    model.generate("Are we near the top of the market?")
    mindprint.evaluate(run, prompts="held_out.jsonl", person="me.jsonl")
    mindprint.voice_score(person="me.jsonl", texts="answers.txt")["voice_match"]
    mindprint.export(run, "me.gguf", to="gguf")

========================  ==================================================================
:func:`train`             train an adapter: config object, dict or YAML path + overrides
:class:`Run`              a run directory: ``summary``, ``metrics``, ``adapter``, ``config``
:func:`load_config`       the validated :class:`Config` a ``train`` call would use
:func:`load`              an adapter (or run, or base model) ready to answer: :class:`Model`
:func:`evaluate`          base vs tuned: content similarity, voice match, perplexity, style
:func:`voice_score`       how much texts sound like the person (no model needed)
:func:`export`            merged checkpoint, GGUF file, PEFT / mlx-lm adapter
:mod:`datasets`           ``validate``, ``stats``, ``convert``, ``mix``, ``split`` data files
errors                    :class:`MindprintError` and its :class:`ConfigError`,
                          :class:`DataError`, :class:`ModelError`, :class:`TrainingStopped`
========================  ==================================================================

These names are the stable surface (``__all__``); everything else is internal and may move.
The command line (``mindprint …``) calls the same functions.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name → "module:attribute" ("module" alone: the module itself), imported on first use
_LAZY = {
    "train": "mindprint.api.train:train",
    "load_config": "mindprint.api.train:load_config",
    "Run": "mindprint.runs:Run",
    "Config": "mindprint.config:Config",
    "load": "mindprint.api.model:load",
    "Model": "mindprint.api.model:Model",
    "evaluate": "mindprint.api.evaluation:evaluate",
    "voice_score": "mindprint.api.evaluation:voice_score",
    "export": "mindprint.api.export:export",
    "datasets": "mindprint.api.datasets",
    "MindprintError": "mindprint.errors:MindprintError",
    "ConfigError": "mindprint.errors:ConfigError",
    "DataError": "mindprint.errors:DataError",
    "ModelError": "mindprint.errors:ModelError",
    "TrainingStopped": "mindprint.errors:TrainingStopped",
}

__all__ = ["__version__", *_LAZY]

# ``mindprint.evaluate`` and ``mindprint.export`` are both functions (above) and subpackages (the
# apps). Python sets a package's attribute to a subpackage the first time that subpackage loads,
# which would replace the function whenever something imported the subpackage first; loading the
# two (docstring-only __init__s) here, then removing the module names, settles it: the function
# stays, and ``from mindprint.evaluate.runner import run_eval`` still imports the subpackage.
from . import evaluate as _evaluate_package, export as _export_package  # noqa: E402,F401

del evaluate, export   # noqa: F821 - bound by the import system as the subpackages loaded

if TYPE_CHECKING:      # what type checkers and IDEs see; at run time __getattr__ imports on use
    from .api import datasets
    from .api.evaluation import evaluate, voice_score
    from .api.export import export
    from .api.model import Model, load
    from .api.train import load_config, train
    from .config import Config
    from .errors import ConfigError, DataError, MindprintError, ModelError, TrainingStopped
    from .runs import Run


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'mindprint' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = importlib.import_module(module)
    if attr:
        value = getattr(value, attr)
    globals()[name] = value          # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
