"""``mindprint export ollama``: a verified GGUF file plus an Ollama ``Modelfile`` whose TEMPLATE
renders conversations exactly as the model's own chat template (the one training rendered with).

A model that "never stops" or "leaks template text" in Ollama almost always has a Modelfile
without a TEMPLATE or without stop tokens, so both are derived from the tokenizer rather than
written by hand:

* :func:`derive` renders a few sentinel conversations through the Jinja chat template and reads
  off the literal text around each turn: the preamble (before a first system message, or before
  the first user message when there is none: e.g. a default system prompt the template adds),
  each role's opening and closing text, and the generation prompt;
* :class:`ChatFormat` renders conversations from those pieces in Python (:meth:`render`) and
  writes the same rules as a Go template over Ollama's ``.Messages`` (:meth:`go_template`);
* :func:`derive` checks :meth:`render` against the Jinja template on sample conversations (with
  and without a system message, one and several turns, ending in a user turn with the generation
  prompt or in an assistant turn without) and refuses a template these pieces cannot reproduce
  (e.g. one that trims or rewrites message content) instead of writing a wrong Modelfile.
  ``tests/export/test_ollama.py`` renders the Go text with a small Go-template interpreter.

Scope: system (as the first message), user and assistant turns; tool calls are not templated.

Modelfile: ``FROM`` the GGUF beside it, the TEMPLATE, ``SYSTEM`` with the system prompt the run
trained with (``data.system_prompt``) when there is one, ``PARAMETER stop`` for every token that
ends an assistant turn (the tokenizer's EOS and end-of-turn markers), and sampling defaults
(:data:`SAMPLING`: moderate temperature and nucleus sampling with a mild repeat penalty, which keep
small tuned models on their voice without looping).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..data.render import end_of_turn_ids
from ..outputs import write_atomic
from .gguf_write import ExportError

SAMPLING = {"temperature": 0.7, "top_p": 0.9, "repeat_penalty": 1.1}
MAX_CTX = 4096
_S = ("QZSYSQZ", "QZUSERAQZ", "QZASSTAQZ", "QZUSERBQZ", "QZASSTBQZ")   # sentinels

SAMPLES = [
    [{"role": "user", "content": "How do you size a position?"}],
    [{"role": "system", "content": "You are Maren. Answer briefly."},
     {"role": "user", "content": "Rates are up again. Thoughts?"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey. What's up?"},
     {"role": "user", "content": "Tell me about 2008 — in two lines.\nNo lists."}],
    [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "One word: risk?"},
     {"role": "assistant", "content": "Asymmetric."}, {"role": "user", "content": "Why?"},
     {"role": "assistant", "content": "Because the downside compounds."},
     {"role": "user", "content": "Émoji ok? 🚀 {{braces}} and \"quotes\""}],
    [{"role": "user", "content": "Close this turn"}, {"role": "assistant", "content": "Closed."}],
]


@dataclass(frozen=True)
class ChatFormat:
    """The literal text of a chat template around each turn (see module docstring)."""

    pre_system: str      # before the content of a first system message
    pre_no_system: str   # before the first turn when there is no system message
    system_close: str
    user_open: str
    user_close: str
    assistant_open: str
    assistant_close: str
    generation: str      # after a final user turn

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The conversation as the Go template renders it (system only as the first message)."""
        first_system = bool(messages) and messages[0]["role"] == "system"
        out = [self.pre_system if first_system else self.pre_no_system]
        for i, m in enumerate(messages):
            role, content = m["role"], m["content"]
            if role == "system":
                out += [content, self.system_close]
            elif role == "user":
                out += [self.user_open, content, self.user_close]
                if i == len(messages) - 1 and add_generation_prompt:
                    out.append(self.generation)
            elif role == "assistant":
                out += [self.assistant_open, content, self.assistant_close]
        return "".join(out)

    def go_template(self) -> str:
        """The same rules as a Go text/template over Ollama's ``.Messages`` (no trim markers:
        the literal pieces' newlines matter)."""
        q = _go_literal
        return (
            "{{if .Messages}}{{if eq (index .Messages 0).Role \"system\"}}"
            f"{q(self.pre_system)}{{{{else}}}}{q(self.pre_no_system)}{{{{end}}}}"
            f"{{{{else}}}}{q(self.pre_no_system)}{{{{end}}}}"
            "{{range $i, $m := .Messages}}"
            f"{{{{if eq $m.Role \"system\"}}}}{{{{$m.Content}}}}{q(self.system_close)}"
            f"{{{{else if eq $m.Role \"user\"}}}}{q(self.user_open)}{{{{$m.Content}}}}"
            f"{q(self.user_close)}{{{{if eq (len (slice $.Messages $i)) 1}}}}"
            f"{q(self.generation)}{{{{end}}}}"
            f"{{{{else if eq $m.Role \"assistant\"}}}}{q(self.assistant_open)}{{{{$m.Content}}}}"
            f"{q(self.assistant_close)}{{{{end}}}}{{{{end}}}}")


def _go_literal(text: str) -> str:
    """Literal template text: ``{{`` would open an action, so it is written as one."""
    return text.replace("{{", "{{\"{{\"}}")


def _between(text: str, a: str | None, b: str | None) -> str:
    i = text.index(a) + len(a) if a else 0
    j = text.index(b, i) if b else len(text)
    return text[i:j]


def _strip_prefix(text: str, prefix: str, what: str) -> str:
    if not text.startswith(prefix):
        raise ExportError(f"the chat template renders {what} inconsistently: cannot write an "
                          "Ollama TEMPLATE for it")
    return text[len(prefix):]


def _strip_suffix(text: str, suffix: str, what: str) -> str:
    if suffix and not text.endswith(suffix):
        raise ExportError(f"the chat template renders {what} inconsistently: cannot write an "
                          "Ollama TEMPLATE for it")
    return text[:len(text) - len(suffix)] if suffix else text


def derive(tok) -> ChatFormat:
    """The :class:`ChatFormat` of ``tok``'s chat template, checked against it on :data:`SAMPLES`."""
    if not getattr(tok, "chat_template", None):
        raise ExportError("the tokenizer has no chat template: an Ollama TEMPLATE cannot be derived")
    s, u, a, u2, a2 = _S

    def jinja(msgs, gen):
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

    try:
        conv = jinja([{"role": "user", "content": u}, {"role": "assistant", "content": a},
                      {"role": "user", "content": u2}, {"role": "assistant", "content": a2}], False)
        with_sys = jinja([{"role": "system", "content": s}, {"role": "user", "content": u}], False)
        gen = jinja([{"role": "user", "content": u}], True)
        no_gen = jinja([{"role": "user", "content": u}], False)
    except Exception as e:  # noqa: BLE001 - a template may raise anything; the user needs one line
        raise ExportError(f"the chat template does not render plain user/assistant/system "
                          f"turns ({str(e).splitlines()[0][:200]})") from None
    assistant_close = _between(conv, a2, None)
    ua = _between(conv, u, a)                       # user_close + assistant_open
    au = _between(conv, a, u2)                      # assistant_close + user_open
    user_close = _between(conv, u2, a2)             # user_close + assistant_open, again
    if ua != user_close:
        raise ExportError("the chat template renders the same turn boundary differently: cannot "
                          "write an Ollama TEMPLATE for it")
    user_close = _between(no_gen, u, None)
    assistant_open = _strip_prefix(ua, user_close, "a user turn's end")
    user_open = _strip_prefix(au, assistant_close, "an assistant turn's end")
    pre_no_system = _strip_suffix(_between(conv, None, u), user_open, "the first user turn")
    system_close = _strip_suffix(_between(with_sys, s, u), user_open, "a system turn")
    fmt = ChatFormat(pre_system=_between(with_sys, None, s), pre_no_system=pre_no_system,
                     system_close=system_close, user_open=user_open, user_close=user_close,
                     assistant_open=assistant_open, assistant_close=assistant_close,
                     generation=_strip_prefix(gen, no_gen, "the generation prompt"))
    for msgs in SAMPLES:
        gen_prompt = msgs[-1]["role"] == "user"
        want, got = jinja(msgs, gen_prompt), fmt.render(msgs, gen_prompt)
        if want != got:
            at = next((i for i, (x, y) in enumerate(zip(want, got)) if x != y), min(len(want),
                                                                                   len(got)))
            raise ExportError(f"the chat template cannot be written as an Ollama TEMPLATE: on a "
                              f"sample conversation it renders {want[at:at + 40]!r} where the "
                              f"derived template gives {got[at:at + 40]!r}")
    return fmt


def stop_tokens(tok) -> list[str]:
    """Every token that ends an assistant turn, as text."""
    return [t for t in tok.convert_ids_to_tokens(end_of_turn_ids(tok)) if t]


def _quoted(value: str, what: str) -> str:
    if '"""' in value:
        raise ExportError(f"the {what} holds '\"\"\"', which a Modelfile cannot quote")
    return f'"""{value}"""'


def modelfile(tok, gguf_name: str, *, system_prompt: str | None, context_length: int,
              header: str = "") -> str:
    fmt = derive(tok)
    lines = [f"# {header}"] if header else []
    lines += [f"FROM ./{gguf_name}", f"TEMPLATE {_quoted(fmt.go_template(), 'chat template')}"]
    if system_prompt:
        lines.append(f"SYSTEM {_quoted(system_prompt, 'system prompt')}")
    for t in stop_tokens(tok):
        if '"' in t or "\n" in t:
            raise ExportError(f"stop token {t!r} cannot be written in a Modelfile")
        lines.append(f'PARAMETER stop "{t}"')
    for k, v in SAMPLING.items():
        lines.append(f"PARAMETER {k} {v}")
    lines.append(f"PARAMETER num_ctx {min(int(context_length), MAX_CTX)}")
    return "\n".join(lines) + "\n"


def model_name(name: str) -> str:
    """An Ollama model name: lowercase letters, digits, ``._-``."""
    n = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._")
    if not n:
        raise ExportError(f"--name {name!r}: needs letters or digits")
    return n


def export_ollama(adapter: str, out: str, *, quant: str = "q4_k_m", name: str | None = None,
                  overwrite: bool = False, log=lambda s: None, **kw) -> dict:
    """Write ``out``/NAME.gguf (verified), ``out``/Modelfile and ``out``/export.json atomically
    (a temporary folder renamed into place); returns the export report."""
    from ..backends.common import atomic_dir, load_tokenizer
    from ..backends.torch.adapters import base_model_of
    from ..models import resolve
    from .common import check_writable
    from .gguf import export_gguf, run_sources

    out_path = check_writable(out, overwrite=overwrite, kind="directory")
    src = Path(adapter).resolve().parent
    name = model_name(name or src.name)
    spec, _ = base_model_of(adapter, kw.get("model"))
    tok = load_tokenizer(resolve(spec).path)
    derive(tok)                               # refuse before the slow part
    system = run_sources(adapter).get("system_prompt")
    with atomic_dir(out_path) as tmp:
        info = export_gguf(str(tmp / f"{name}.gguf"), adapter=adapter, quant=quant,
                           report=tmp / "export.json", log=log, **kw)
        text = modelfile(tok, f"{name}.gguf", system_prompt=system,
                         context_length=info["context_length"],
                         header=f"{name}: {quant} GGUF exported by Mindprint from {adapter}")
        (tmp / "Modelfile").write_text(text, encoding="utf-8")
    info["modelfile"] = str(out_path / "Modelfile")
    info["gguf"] = str(out_path / f"{name}.gguf")
    info["report"] = str(out_path / "export.json")
    info["name"] = name
    info["ollama_create"] = f"ollama create {name} -f {out_path / 'Modelfile'}"
    write_atomic(out_path / "export.json", json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return info
