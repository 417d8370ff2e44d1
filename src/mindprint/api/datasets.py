"""``mindprint.datasets``: check, measure, convert, mix and split data files from Python.

The functions of ``mindprint data validate | stats | convert | mix | split``, with the same
checks and messages (a bad line is named ``file:line`` with its field; a file-level problem
raises :class:`~mindprint.errors.DataError`). Every format and file kind the trainer reads is
accepted (:mod:`mindprint.data.formats`, :mod:`mindprint.data.sources`). Outputs are written
atomically; an existing output is an error unless ``force=True``. Summaries and dropped-line
counts go to ``log`` (default: stderr, as on the command line).

(``mindprint.data`` is the data-layer package itself; these are its user-facing functions.)
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..config import DEFAULT_MODEL, DataConfig
from ..data.columns import parse_columns
from ..data.convert import Answers, AnswersFactory, ConvertResult
from ..data.convert import convert as _convert
from ..data.importers.prose import approx_tokens
from ..data.records import Message
from ..data.synth import SynthResult
from ..data.synth import synth as _synth
from ..data.tools import FileStats, MixSource, SplitResult, file_stats
from ..data.tools import mix as _mix
from ..data.tools import split as _split
from ..data.validate import ValidationReport, format_report, validate_file

PathLike = str | os.PathLike


def _columns(columns: dict[str, str] | str | None) -> dict[str, str] | None:
    return parse_columns(columns) if isinstance(columns, str) else columns


def validate(path: PathLike, *, format: str | None = None,
             columns: dict[str, str] | str | None = None) -> ValidationReport:
    """Check every record of ``path``: a :class:`~mindprint.data.validate.ValidationReport`
    (``ok``, ``valid`` / ``invalid`` counts, ``problems`` as ``file:line: field: what``
    strings, ``warnings`` for unused keys, ``topics``). ``format`` forces a format (default:
    detected); ``columns`` maps record keys to a table's columns (``{"prompt": "question"}`` or
    ``"prompt=question"``). A missing or empty file raises DataError."""
    return validate_file(path, format, columns=_columns(columns))


def report(result: ValidationReport) -> str:
    """``mindprint data validate``'s text for one :func:`validate` result."""
    return format_report(result)


def stats(path: PathLike, *, model: str | None = None, format: str | None = None,
          max_length: int | None = None, columns: dict[str, str] | str | None = None,
          log=None) -> FileStats:
    """Token statistics of ``path`` with ``model``'s tokenizer (default: the bundled model's; no
    weights load): records, token length percentiles, how many exceed ``max_length`` (default:
    ``data.max_length``'s) and are truncated or dropped, trained tokens, topics."""
    from ..backends.common import load_tokenizer     # transformers: only when stats are asked
    from ..models import resolve

    cols = _columns(columns)
    length = max_length or DataConfig.model_fields["max_length"].default
    tokenizer = load_tokenizer(resolve(model or DEFAULT_MODEL).path)
    return file_stats(path, tokenizer, fmt=format, max_length=length, columns=cols,
                      **({"log": log} if log else {}))


def base_answers(model: str | None = None, *, max_new_tokens: int = 200, batch_size: int = 8,
                 device: str = "auto") -> AnswersFactory:
    """The factory :func:`convert` and :func:`synth` take their generated answers from: ``model``'s
    greedy answers (default: the bundled model), loaded when the first answer is needed."""
    def answers(total: int) -> Answers:
        # torch is an optional extra: validate, stats, mix and split must work without it,
        # so the generator loads here, when a model must answer
        from ..backends.torch.generate import BaseAnswers
        return BaseAnswers(model, max_new_tokens=max_new_tokens, batch_size=batch_size,
                           device=device, total=total)
    return answers


def convert(path: PathLike, out: PathLike, *, to: str, format: str | None = None,
            system_prompt: str | None = None, model: str | None = None, generate: bool = False,
            max_new_tokens: int = 200, batch_size: int = 8, device: str = "auto",
            force: bool = False, columns: dict[str, str] | str | None = None,
            log=None) -> ConvertResult:
    """Convert ``path`` into format ``to`` at ``out`` (``chat``, ``prompt``, ``preference``,
    ``kto`` ...). Preference data needs rejected answers: the base ``model`` writes them (as
    does ``generate=True`` for KTO). Returns the output path and counts."""
    answers = base_answers(model, max_new_tokens=max_new_tokens, batch_size=batch_size,
                           device=device)
    return _convert(path, out, to=to, fmt=format, system_prompt=system_prompt, answers=answers,
                    generate=generate, force=force, columns=_columns(columns),
                    **({"log": log} if log else {}))


def synth(path: PathLike, out: PathLike, *, model: str | None = None,
          endpoint: str | None = None, api_key_env: str | None = None, max_length: int = 1024,
          count=approx_tokens, max_new_tokens: int = 64, batch_size: int = 8,
          device: str = "auto", force: bool = False, log=None) -> SynthResult:
    """Monologue text (a talk, essays; ``.txt``/``.md`` or ``{"text": …}`` JSONL) → chat records:
    each passage (paragraphs packed under ``max_length`` tokens of ``count``) becomes the answer
    to the question a model asks for it — ``model`` locally (default: the bundled model), or the
    OpenAI-compatible server at ``endpoint`` (its key in the environment variable
    ``api_key_env``)."""
    local = base_answers(model, max_new_tokens=max_new_tokens, batch_size=batch_size,
                         device=device)

    def ask_for(total: int):
        answers = local(total)
        return lambda prompts: answers([(Message("user", p),) for p in prompts])

    return _synth(path, out, ask_for=None if endpoint else ask_for, model=model,
                  endpoint=endpoint, api_key_env=api_key_env, max_length=max_length, count=count,
                  max_new_tokens=max_new_tokens, batch_size=batch_size, force=force,
                  **({"log": log} if log else {}))


def mix(sources: Sequence[str], out: PathLike, *, seed: int = 0, dedupe: str = "exact",
        cap: int | None = None, format: str | None = None, force: bool = False,
        log=None) -> list[MixSource]:
    """Weighted mix of files into ``out``: each of ``sources`` is ``"file"`` or ``"file:weight"``
    (every record used ``weight`` times), invalid lines and duplicates (``dedupe``: exact,
    normalized or none) removed, ``cap`` records at most per file, shuffled with ``seed``."""
    return _mix(list(sources), out, seed=seed, dedupe=dedupe, cap=cap, fmt=format, force=force,
                **({"log": log} if log else {}))


def split(path: PathLike, *, eval_fraction: float | None = None, eval_count: int | None = None,
          seed: int = 0, prefix: PathLike | None = None, train_out: PathLike | None = None,
          eval_out: PathLike | None = None, format: str | None = None, force: bool = False,
          log=None) -> SplitResult:
    """Stratified train/eval split of ``path`` (each topic gives its share of the eval set):
    ``eval_fraction`` (default 0.1) or ``eval_count`` records held out, drawn with ``seed``;
    written to ``PREFIX_train.jsonl`` / ``PREFIX_eval.jsonl`` for ``prefix``, or to both of
    ``train_out`` and ``eval_out``. Both outputs keep the input's order."""
    if eval_fraction is None and eval_count is None:
        eval_fraction = 0.1
    return _split(path, eval_fraction=eval_fraction, eval_count=eval_count, seed=seed,
                  prefix=prefix, train_out=train_out, eval_out=eval_out, fmt=format, force=force,
                  **({"log": log} if log else {}))


__all__ = ["ConvertResult", "FileStats", "MixSource", "SplitResult", "SynthResult",
           "ValidationReport", "base_answers", "convert", "mix", "report", "split", "stats",
           "synth", "validate"]
