"""``mindprint.evaluate`` (base vs tuned report) and ``mindprint.voice_score`` (does a text sound
like the person).

:func:`evaluate` is ``mindprint eval``: the same job (:func:`mindprint.evaluate.cli.build_job`,
so defaults from a training config, adapter and output folder are resolved once, for both) and
the same runner (:func:`mindprint.evaluate.runner.run_eval`); it writes ``report.json`` and
``report.html`` into ``out`` and returns the report. :func:`voice_score` is ``mindprint eval
voice-score``'s function.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from typing import Any

from ..backends.process import configure_process
from ..evaluate.voicescore import voice_score as _voice_score
from ..runs import Run

PathLike = str | os.PathLike


def _paths(xs: PathLike | Sequence[PathLike] | None) -> list[str] | None:
    if xs is None:
        return None
    return [str(xs)] if isinstance(xs, (str, os.PathLike)) else [str(x) for x in xs]


def evaluate(adapter: PathLike | Run | None = None, *, config: PathLike | None = None,
             model: str | None = None, prompts: PathLike | Sequence[PathLike] | None = None,
             chat: PathLike | Sequence[PathLike] | None = None,
             preference: PathLike | Sequence[PathLike] | None = None,
             person: PathLike | Sequence[PathLike] | None = None,
             background: PathLike | Sequence[PathLike] | None = None,
             out: PathLike | None = None, compare_base: bool = True, device: str = "auto",
             max_prompts: int | None = None, max_records: int | None = None,
             max_new_tokens: int | None = None, temperature: float | None = None,
             top_p: float | None = None, seed: int | None = None,
             batch_size: int | None = None, banned_phrases: Sequence[str] | None = None,
             overrides: Sequence[str] = (),
             log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Evaluate ``adapter`` against its base model; return the report (``report.json``'s dict:
    ``summary`` rows of content similarity, voice match, preference accuracy, perplexity and
    style per column, the answers, and where the report was written: ``out``).

    ``adapter``: an adapter directory, a run directory or a :class:`Run` (None: the config's
    ``output_dir/adapter`` when it exists, else the base model alone). ``config``: a training
    config whose ``eval:`` block, ``model``, ``data.eval`` and ``output_dir`` are the defaults.
    ``prompts`` (reference answers), ``chat`` (perplexity), ``preference`` (accuracy),
    ``person`` (the person's answers, for ``voice_match``; default with a config: its
    ``data.train``) and ``background`` are files. The other keywords are the ``eval.*`` keys
    (None: the config's or the default); ``overrides`` are ``"eval.key=value"`` strings as for
    ``--set``. ``compare_base=False`` skips the base column.
    """
    from ..evaluate.cli import build_job          # torch-free; the runner below loads torch
    from ..evaluate.runner import run_eval

    if isinstance(adapter, Run):
        adapter = adapter.path
    args = argparse.Namespace(
        config=str(config) if config is not None else None,
        adapter=str(adapter) if adapter is not None else None, model=model,
        prompts=_paths(prompts), chat=_paths(chat), preference=_paths(preference),
        person=_paths(person), background=_paths(background),
        out=str(out) if out is not None else None, no_base=not compare_base, device=device,
        max_prompts=max_prompts, max_records=max_records, max_new_tokens=max_new_tokens,
        temperature=temperature, top_p=top_p, seed=seed, batch_size=batch_size,
        banned_phrase=list(banned_phrases) if banned_phrases is not None else None,
        set=list(overrides), texts=None, json=None)
    job = build_job(args)
    configure_process(backend="torch", device=job.device)
    report = run_eval(job, log=log or (lambda s: None))
    return {**report, "out": str(job.out)}


def voice_score(person: PathLike | Sequence[PathLike], texts: PathLike | Sequence[PathLike],
                background: PathLike | Sequence[PathLike] = ()) -> dict[str, Any]:
    """How much each text sounds like the person: a verifier fitted on the ``person`` files
    (their answers, any data format or ``.txt`` lines) against a bundled background of other
    voices (and the ``background`` files), by style rather than topic.

    Returns ``scores`` (P(the person's) per text of ``texts``, in order; a chat record's last
    answer, a ``.txt`` line), ``where`` (file:line of each), ``voice_match``,
    ``voice_attribution``, the verifier's held-out ``verifier_auc`` with ``n_person`` /
    ``n_background``, a ``warning`` when the verifier is weak, and ``notes``. No model loads.
    """
    return _voice_score(_paths(person), _paths(texts), _paths(background) or [])


__all__ = ["evaluate", "voice_score"]
