"""The Ollama Modelfile: its Go TEMPLATE renders conversations exactly as the model's Jinja chat
template (checked with a small Go text/template interpreter written here), stop tokens, SYSTEM,
and refusals for templates a Modelfile cannot express. Tokenizer only: no model is loaded."""

from __future__ import annotations

import copy
import re

import pytest

from mindprint.export.gguf_write import ExportError
from mindprint.export.ollama import SAMPLES, derive, model_name, modelfile, stop_tokens

# -- a Go text/template interpreter for the subset Modelfile templates use ------------------------
# actions: {{if X}} {{else if X}} {{else}} {{end}} {{range $i, $m := X}} {{X}};
# expressions: literals "..." and ints, .Field / $.Field / $var / $var.Field / (X).Field, and the
# builtins eq, ne, and, or, not, index, len, slice (as Go defines them).

_TOKEN = re.compile(r'\s*(\(|\)|"(?:[^"\\]|\\.)*"|-?\d+|[$.\w]+(?:\.\w+)*|\.\w+)')


def _parse_expr(tokens: list[str]):
    def atom():
        t = tokens.pop(0)
        if t == "(":
            e = call()
            assert tokens.pop(0) == ")"
            if tokens and tokens[0].startswith("."):
                return ("field", e, tokens.pop(0)[1:].split("."))
            return e
        return ("lit", t)

    def call():
        items = []
        while tokens and tokens[0] != ")":
            items.append(atom())
        return items[0] if len(items) == 1 else ("call", items)

    return call()


def _eval(e, scope):
    if e[0] == "field":
        v = _eval(e[1], scope)
        for f in e[2]:
            v = v[f.lower()] if isinstance(v, dict) else getattr(v, f)
        return v
    if e[0] == "call":
        fn, *args = e[1]
        name = fn[1]
        vals = [_eval(a, scope) for a in args]
        if name == "and":
            return next((v for v in vals if not v), vals[-1])
        if name == "or":
            return next((v for v in vals if v), vals[-1])
        return {"eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "not": lambda a: not a,
                "index": lambda a, i: a[i], "len": len,
                "slice": lambda a, i=0, j=None: a[i:j]}[name](*vals)
    t = e[1]
    if t.startswith('"'):
        return bytes(t[1:-1], "utf-8").decode("unicode_escape")
    if re.fullmatch(r"-?\d+", t):
        return int(t)
    head, *fields = t.split(".") if not t.startswith(".") else ["."] + t[1:].split(".")
    v = scope["."] if head in (".", "$") else scope[head]
    for f in fields:
        if f:
            v = v[f.lower()] if isinstance(v, dict) else getattr(v, f)
    return v


def _blocks(src: str):
    """Template text → nested nodes: ("text", s), ("expr", e), ("if", [(cond, body)...], else),
    ("range", ivar, mvar, expr, body)."""
    parts = re.split(r"({{.*?}})", src, flags=re.S)
    pos = 0

    def seq(stop):
        nonlocal pos
        out = []
        while pos < len(parts):
            p = parts[pos]
            pos += 1
            if not p.startswith("{{"):
                out.append(("text", p))
                continue
            act = p[2:-2].strip()
            if act.split(" ")[0] in stop or act.startswith("else"):
                return out, act
            if act.startswith("if "):
                branches, els = [], None
                cond = act[3:]
                while True:
                    body, end = seq({"end"})
                    branches.append((cond, body))
                    if end.startswith("else if "):
                        cond = end[8:]
                        continue
                    if end == "else":
                        els, end = seq({"end"})
                    break
                out.append(("if", branches, els))
            elif act.startswith("range "):
                m = re.fullmatch(r"range (\$\w+), (\$\w+) := (.+)", act)
                body, _ = seq({"end"})
                out.append(("range", m.group(1), m.group(2), m.group(3), body))
            else:
                out.append(("expr", act))
        return out, None

    return seq(set())[0]


def go_render(src: str, messages: list[dict]) -> str:
    def run(nodes, scope):
        out = []
        for n in nodes:
            if n[0] == "text":
                out.append(n[1])
            elif n[0] == "expr":
                out.append(str(_eval(_parse_expr(_TOKEN.findall(n[1])), scope)))
            elif n[0] == "if":
                for cond, body in n[1]:
                    if _eval(_parse_expr(_TOKEN.findall(cond)), scope):
                        out.append(run(body, scope))
                        break
                else:
                    out.append(run(n[2] or [], scope))
            else:
                _, iv, mv, expr, body = n
                for i, m in enumerate(_eval(_parse_expr(_TOKEN.findall(expr)), scope)):
                    out.append(run(body, {**scope, iv: i, mv: m}))
        return "".join(out)

    data = {"messages": messages}
    return run(_blocks(src), {".": data, "$": data})


def test_the_interpreter_follows_go_semantics():
    src = ('{{if .Messages}}{{if eq (index .Messages 0).Role "system"}}S{{else}}N{{end}}{{end}}'
           '{{range $i, $m := .Messages}}[{{$m.Content}}{{if eq (len (slice $.Messages $i)) 1}}'
           '!{{end}}]{{end}}{{"{{"}}')
    assert go_render(src, [{"role": "system", "content": "a"}, {"role": "user", "content": "b"}]) \
        == "S[a][b!]{{"
    assert go_render(src, [{"role": "user", "content": "x"}]) == "N[x!]{{"
    assert go_render(src, []) == "{{"


# -- templates -------------------------------------------------------------------------------------

LLAMA3 = ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + "
          "'<|end_header_id|>\n\n' + m['content'] + '<|eot_id|>' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
          "{% endif %}")
ZEPHYR = ("{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\n' + "
          "message['content'] + eos_token }}{% elif message['role'] == 'system' %}{{ '<|system|>\n'"
          " + message['content'] + eos_token }}{% elif message['role'] == 'assistant' %}"
          "{{ '<|assistant|>\n'  + message['content'] + eos_token }}{% endif %}"
          "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}{% endfor %}")
# system folded into the first user turn (Gemma/Mistral style): not expressible per turn
FOLDED = ("{% for m in messages %}{% if m['role'] == 'system' %}{% set sys = m['content'] %}"
          "{% elif m['role'] == 'user' %}{{ '[INST] ' + (messages[0]['content'] + '\n\n' "
          "if loop.index0 == 1 and messages[0]['role'] == 'system' else '') + m['content'] + "
          "' [/INST]' }}{% else %}{{ m['content'] + '</s>' }}{% endif %}{% endfor %}")
RAISES = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system') }}"
          "{% endif %}{{ m['content'] }}{% endfor %}")


@pytest.fixture
def tok_with(tokenizer):
    def make(template):
        t = copy.deepcopy(tokenizer)
        t.chat_template = template
        return t
    return make


CONVERSATIONS = SAMPLES + [
    [{"role": "system", "content": "Du bist knapp."}, {"role": "user", "content": "Und?"},
     {"role": "assistant", "content": "Gut."}, {"role": "user", "content": "Mehr?"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
     {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"},
     {"role": "user", "content": "e"}],
]


@pytest.mark.parametrize("which", ["bundled", "llama3", "zephyr"])
def test_go_template_renders_as_the_jinja_template(which, tokenizer, tok_with):
    tok = {"bundled": tokenizer, "llama3": tok_with(LLAMA3), "zephyr": tok_with(ZEPHYR)}[which]
    fmt = derive(tok)
    go = fmt.go_template()
    for conv in CONVERSATIONS:
        gen = conv[-1]["role"] == "user"
        want = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
        assert fmt.render(conv, gen) == want
        assert go_render(go, conv) == want          # the Go text itself, not only the rules


def test_bundled_template_pieces(tokenizer):
    fmt = derive(tokenizer)
    assert fmt.user_open == "<|im_start|>user\n" and fmt.generation == "<|im_start|>assistant\n"
    # SmolLM2 adds its default system prompt when the conversation has none: so must Ollama
    assert fmt.pre_no_system.startswith("<|im_start|>system\n") and "SmolLM" in fmt.pre_no_system
    assert fmt.pre_system == "<|im_start|>system\n"


@pytest.mark.parametrize("template", [FOLDED, RAISES], ids=["system-folded", "raises"])
def test_templates_a_modelfile_cannot_express_are_refused(template, tok_with):
    with pytest.raises(ExportError, match="Ollama TEMPLATE|plain user"):
        derive(tok_with(template))


def test_modelfile(tokenizer):
    text = modelfile(tokenizer, "maren.gguf", system_prompt="You are Maren, a market analyst.",
                     context_length=8192, header="maren: q4_k_m")
    lines = text.splitlines()
    assert lines[0] == "# maren: q4_k_m" and lines[1] == "FROM ./maren.gguf"
    tmpl = re.search(r'TEMPLATE """(.*?)"""', text, re.S).group(1)
    assert tmpl == derive(tokenizer).go_template()
    assert 'SYSTEM """You are Maren, a market analyst."""' in text
    stops = re.findall(r'PARAMETER stop "(.*)"', text)
    assert "<|im_end|>" in stops and set(stops) == set(stop_tokens(tokenizer))
    assert "PARAMETER num_ctx 4096" in text and "PARAMETER temperature 0.7" in text
    # the system prompt reaches the model through the template's first system message
    conv = [{"role": "system", "content": "You are Maren, a market analyst."},
            {"role": "user", "content": "Hi"}]
    assert go_render(tmpl, conv) == tokenizer.apply_chat_template(conv, tokenize=False,
                                                                  add_generation_prompt=True)
    no_sys = modelfile(tokenizer, "m.gguf", system_prompt=None, context_length=2048)
    assert "SYSTEM" not in no_sys and "PARAMETER num_ctx 2048" in no_sys
    with pytest.raises(ExportError, match="cannot quote"):
        modelfile(tokenizer, "m.gguf", system_prompt='say """hi"""', context_length=2048)


def test_model_names():
    assert model_name("Maren Holloway (v2)") == "maren-holloway-v2"
    assert model_name("run_01.final") == "run_01.final"
    with pytest.raises(ExportError, match="letters or digits"):
        model_name("***")
