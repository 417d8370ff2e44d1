"""``mindprint data synth``: monologue material (a talk, a solo podcast, essays) → chat records.

The person's text is split into passages with the prose importer's splitter (paragraphs packed
under a token budget), and a model is asked, for each passage, the question it answers; the
record is ``user: question`` → ``assistant: passage``, so the person's words stay verbatim.

Who asks:

* a local model, passed in as ``ask`` or ``ask_for`` (the API and the CLI pass the bundled base model or any
  ``model=`` spec, greedy, through the same answers ``data convert`` generates with; the data
  layer loads no model itself);
* an OpenAI-compatible server (``endpoint=``): ``POST {endpoint}/v1/chat/completions``, through
  the ``openai`` client when it is installed, else plain ``urllib``; ``model=`` is then the
  server's model name, the key comes from the environment variable ``api_key_env`` names.

Generated questions are cleaned (first line, quotes and a "Question:" label removed); one that is
empty, shorter than two words, over 60 words, or a copy of the passage is dropped and counted.
Input: a text/markdown file, or JSONL ``{"text": …}`` records (``file:line`` errors).
"""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mindprint.data.importers import prose
from mindprint.data.jsonl import iter_lines
from mindprint.data.stream import Drops, atomic_output, check_output, write_record
from mindprint.errors import DataError, ModelError

Log = Callable[[str], None]
Ask = Callable[[list[str]], list[str]]      # prompts (passages) → raw generated questions
INSTRUCTION = ("Here is a passage a person said or wrote:\n\n{passage}\n\nWrite the single "
               "question an interviewer asked that this passage answers. Reply with the question "
               "only.")
_LABEL = re.compile(r"^\s*(?:\*\*)?(?:question|q|frage|interviewer)\s*[:.)\-]\s*(?:\*\*)?", re.I)


def _stderr(text: str) -> None:
    print(text, file=sys.stderr)


def question_of(raw: str, passage: str) -> str | None:
    """The usable question in a generation, or None (see the module docstring)."""
    lines = [ln.strip() for ln in raw.strip().split("\n") if ln.strip()]
    if not lines:
        return None
    q = _LABEL.sub("", lines[0]).strip().strip("\"'“”‘’*").strip()
    words = q.split()
    if len(words) < 2 or len(words) > 60 or not any(c.isalpha() for c in q):
        return None
    if q.casefold() in passage.casefold():       # an echo of the passage asks nothing
        return None
    return q


def read_passages(path, budget: int, count: prose.Count, drops: Drops) -> list[tuple[str, str]]:
    """(passage, place) from a text file or from the ``text`` of JSONL records."""
    if Path(path).suffix.lower() != ".jsonl":
        return prose.parse(str(path), drops, budget, count).passages
    out = []
    for n, _, raw in iter_lines(path):
        where = f"{path}:{n}"
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataError(f"{where}: invalid JSON ({err})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise DataError(f"{where}: text: missing or not a string (synth reads "
                            '{"text": …} records or a plain text file)')
        if not obj["text"].strip():
            drops.add("empty text", where)
            continue
        out += [(p, where) for p in prose.split_passages(obj["text"], budget, count)]
    return out


# ------------------------------------------------------------------------------------ askers

def _base_url(endpoint: str) -> str:
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


def endpoint_asker(endpoint: str, model: str, api_key: str | None, *, max_new_tokens: int,
                   use_openai: bool = True, timeout: float = 120.0) -> Ask:
    """One chat completion per passage from an OpenAI-compatible server (greedy)."""
    base = _base_url(endpoint)
    try:
        import openai       # optional: the real client when present, urllib otherwise
    except ImportError:
        openai = None
    if openai is not None and use_openai:
        client = openai.OpenAI(base_url=base, api_key=api_key or "not-needed", timeout=timeout,
                               max_retries=1)

        def one(prompt: str) -> str:
            try:
                r = client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": prompt}],
                    max_tokens=max_new_tokens, temperature=0)
            except openai.OpenAIError as err:
                raise ModelError(f"{base}/chat/completions: {err}") from None
            return (r.choices[0].message.content or "") if r.choices else ""
    else:
        def one(prompt: str) -> str:
            body = json.dumps({"model": model, "max_tokens": max_new_tokens, "temperature": 0,
                               "messages": [{"role": "user", "content": prompt}]}).encode()
            headers = {"Content-Type": "application/json"}
            if api_key:
                headers["Authorization"] = f"Bearer {api_key}"
            req = urllib.request.Request(f"{base}/chat/completions", body, headers)
            try:
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    data = json.loads(resp.read())
            except (urllib.error.URLError, OSError, json.JSONDecodeError) as err:
                raise ModelError(f"{base}/chat/completions: {err}") from None
            choices = data.get("choices") or [{}]
            return str((choices[0].get("message") or {}).get("content") or "")
    return lambda prompts: [one(p) for p in prompts]


# ------------------------------------------------------------------------------------ driver

@dataclass
class SynthResult:
    output: Path
    written: int
    drops: Drops


def synth(path, out, *, ask: Ask | None = None, ask_for: Callable[[int], Ask] | None = None,
          model: str | None = None,
          endpoint: str | None = None, api_key_env: str | None = None, max_length: int = 1024,
          count: prose.Count = prose.approx_tokens, max_new_tokens: int = 64, batch_size: int = 8,
          force: bool = False, log: Log = _stderr) -> SynthResult:
    """Write ``{"messages": [question, passage]}`` records for the passages of ``path``.

    The questions come from ``endpoint`` (an OpenAI-compatible server; ``model`` is its model
    name), from ``ask``, or from ``ask_for``: a factory given the number of passages that returns
    the asker (a local model, loaded only once the passages are known to be there)."""
    out = check_output(out, force)
    if not Path(path).is_file():
        raise DataError(f"{path}: no such file")
    drops = Drops()
    passages = read_passages(path, max_length, count, drops)
    if not passages:
        raise DataError(f"{path}: no text to make passages from")
    if endpoint:
        key = os.environ.get(api_key_env) if api_key_env else None
        if api_key_env and not key:
            raise DataError(f"--api-key-env {api_key_env}: that environment variable is not set")
        asker = endpoint_asker(endpoint, model or "default", key, max_new_tokens=max_new_tokens)
        log(f"asking {_base_url(endpoint)} for the questions ({len(passages)} passages)")
    elif ask is not None or ask_for is not None:
        asker = ask if ask is not None else ask_for(len(passages))
        log(f"asking {model or 'the bundled model'} for the questions ({len(passages)} passages)")
    else:
        raise DataError("data synth needs a model to ask the questions: a local one or an endpoint")
    written = 0
    try:
        with atomic_output(out) as f:
            for i in range(0, len(passages), max(batch_size, 1)):
                batch = passages[i: i + batch_size]
                raw = asker([INSTRUCTION.format(passage=p) for p, _ in batch])
                for (passage, where), gen in zip(batch, raw):
                    q = question_of(gen, passage)
                    if q is None:
                        drops.add("generated question empty or unusable", where)
                        continue
                    write_record(f, {"messages": [{"role": "user", "content": q},
                                                  {"role": "assistant", "content": passage}]})
                    written += 1
            if not written:   # raised inside the block, so no empty file replaces anything
                raise DataError(f"{path}: nothing to write; no passage got a usable question")
    finally:
        for line in drops.lines("passage"):
            log(line)
    log(f"wrote {written} chat records ({len(passages)} passages) to {out}")
    return SynthResult(out, written, drops)
