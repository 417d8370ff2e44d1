"""``mindprint.load``: an adapter (or a run, or a bare model) ready to answer prompts.

The model runs on the torch backend (transformers + PEFT), which reads adapters of both backends'
runs: an mlx run writes its final adapter in PEFT format too. ``mindprint generate`` is this
module's :meth:`Model.generate` with its flags.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Union

from ..backends.process import configure_process
from ..errors import MindprintError
from ..outputs import adapter_dir
from ..runs import Run

Prompt = Union[str, Sequence[dict]]
"""A user message, or a chat: a list of ``{"role", "content"}`` messages ending in a user turn."""


class Model:
    """A loaded base model with its adapter (or none). Build it with :func:`load`.

    ``hf_model`` and ``tokenizer`` are the transformers objects, for anything this class does
    not cover; ``model_ref`` says which base model was resolved (bundled alias, directory ...).
    """

    def __init__(self, hf_model, tokenizer, model_ref, adapter: Path | None):
        self.hf_model, self.tokenizer, self.model_ref = hf_model, tokenizer, model_ref
        self.adapter = adapter

    def __repr__(self) -> str:
        adapter = str(self.adapter) if self.adapter else None
        return f"Model(base={self.model_ref.spec!r}, adapter={adapter!r})"

    def generate(self, prompts: Prompt | Sequence[Prompt], *, system: str | None = None,
                 max_new_tokens: int = 200, temperature: float = 0.0, top_p: float = 1.0,
                 seed: int = 0) -> str | list[str]:
        """Answer ``prompts``: one prompt (a string or a chat) gives a string, a list of them a
        list of strings, in order. ``system`` is put before each string prompt (a chat carries
        its own). ``temperature`` 0 is greedy (deterministic); above 0, sampling with ``top_p``
        and ``seed``. Generation stops at the end of the assistant's turn."""
        from ..backends.torch.generate import generate     # torch: only once a model runs

        single = isinstance(prompts, str) or (
            isinstance(prompts, Sequence) and bool(prompts) and isinstance(prompts[0], dict))
        items = [prompts] if single else list(prompts)
        if not items:
            raise MindprintError("generate: give at least one prompt")
        chats = [_chat(p, system, i) for i, p in enumerate(items)]
        answers = generate(self.hf_model, self.tokenizer, chats, max_new_tokens=max_new_tokens,
                           temperature=temperature, top_p=top_p, seed=seed)
        return answers[0] if single else answers


def _chat(prompt: Prompt, system: str | None, i: int) -> list[dict]:
    if isinstance(prompt, str):
        head = [{"role": "system", "content": system}] if system else []
        return head + [{"role": "user", "content": prompt}]
    msgs = [dict(m) for m in prompt]
    if not msgs or any(not isinstance(m.get("content"), str) or "role" not in m for m in msgs):
        raise MindprintError(f"generate: prompt {i} is neither a string nor a list of "
                             "{'role', 'content'} messages")
    if msgs[-1]["role"] != "user":
        raise MindprintError(f"generate: prompt {i} must end with a user message (got "
                             f"{msgs[-1]['role']!r})")
    return msgs


def load(adapter: str | os.PathLike | Run | None = None, *, model: str | None = None,
         device: str = "auto", dtype: str = "auto") -> Model:
    """Load ``adapter`` on its base model (or ``model``); without an adapter, the base model
    alone (default: the bundled one).

    ``adapter``: an adapter directory, a run directory (its ``adapter/``) or a :class:`Run`.
    ``model``: a model spec (bundled alias, local directory, ``.gguf`` file, cached hub id);
    default: the base the adapter was trained on. ``device``: "auto", "cpu", "cuda" or "mps".
    Applies the torch backend's process tuning for ``device`` (once per process).
    """
    from ..backends.torch.load import load_for_inference   # torch: only when a model loads

    path = adapter_dir(adapter.path if isinstance(adapter, Run) else adapter) \
        if adapter is not None else None
    configure_process(backend="torch", device=device)
    hf_model, tok, ref = load_for_inference(model, str(path) if path else None, dtype=dtype,
                                            device=device)
    return Model(hf_model, tok, ref, path)


__all__ = ["Model", "Prompt", "load"]
