"""Held-out evaluation sets.

* prompts (voice fidelity, style): ``prompt`` records (``{"prompt", "answer"}``), chat records
  (the conversation up to its last assistant turn is the prompt, that turn the reference),
  preference records (the chosen answer is the reference), or a ``.txt`` file with one prompt
  per line (no reference: style only);
* chat (perplexity): chat or alpaca records;
* preference (preference accuracy): preference records.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.jsonl import load_many
from ..errors import DataError


@dataclass
class PromptItem:
    prompt: list[dict]            # messages ending in a user turn
    reference: str | None
    where: str
    topic: str | None = None

    @property
    def text(self) -> str:
        return self.prompt[-1]["content"]


def _msgs(messages) -> list[dict]:
    return [m.as_dict() for m in messages]


def load_prompts(paths, *, system_prompt: str | None = None, limit: int | None = None) -> list[PromptItem]:
    items: list[PromptItem] = []
    jsonl = []
    for p in paths:
        if str(p).endswith(".txt"):
            path = Path(p)
            if not path.is_file():
                raise DataError(f"{p}: no such file")
            lines = path.read_text(encoding="utf-8").splitlines()
            sys_msg = [{"role": "system", "content": system_prompt}] if system_prompt else []
            items += [PromptItem(sys_msg + [{"role": "user", "content": ln.strip()}], None,
                                 f"{p}:{i}") for i, ln in enumerate(lines, 1) if ln.strip()]
        else:
            jsonl.append(p)
    if jsonl:
        res = load_many(jsonl, None, system_prompt=system_prompt,
                        expect=("prompt", "chat", "alpaca", "preference"))
        for r in res.records:
            kind = type(r).__name__
            if kind == "PromptRecord":
                items.append(PromptItem(_msgs(r.prompt), r.answer, r.where, r.topic))
            elif kind == "ChatRecord":
                msgs = _msgs(r.messages)
                items.append(PromptItem(msgs[:-1], msgs[-1]["content"], r.where, r.topic))
            elif kind == "PreferenceRecord":
                items.append(PromptItem(_msgs(r.prompt), _msgs(r.chosen)[-1]["content"], r.where,
                                        r.topic))
    items = [it for it in items if it.prompt and it.prompt[-1]["role"] == "user"]
    return items[:limit] if limit else items


def load_chat(paths, *, system_prompt: str | None = None, limit: int | None = None):
    res = load_many(paths, None, system_prompt=system_prompt, expect=("chat", "alpaca"))
    return res.records[:limit] if limit else res.records


def load_preference(paths, *, limit: int | None = None):
    res = load_many(paths, None, expect=("preference",))
    return res.records[:limit] if limit else res.records


def data_format(paths) -> str | None:
    """The format of held-out files (to route ``data.eval`` to the metrics that can use it)."""
    try:
        return load_many(paths, None).format
    except DataError:
        return None
