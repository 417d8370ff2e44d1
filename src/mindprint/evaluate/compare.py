"""``mindprint compare``: answers of the base model and of each adapter, side by side.

All adapters are loaded into one PEFT model over one copy of the base (they must share it) and
switched between with ``set_adapter``; the base column is that model with adapters disabled.
Writes compare.html, compare.md and compare.json. With ``person`` files, each answer (and the
reference) also gets its voice score: P(the person's) from the voice verifier
(:mod:`mindprint.measures.voice`) fitted on them, and each column its mean (``voice_match``).
With ``kept`` > 0 each adapter column also gets the general-ability-kept figures on the bundled
everyday prompts (:mod:`.kept`), against the base model's cached answers.
"""

from __future__ import annotations

import contextlib
import html
import json
from pathlib import Path

from .. import __version__
from ..errors import MindprintError, ModelError
from ..measures.voice import VoiceVerifier
from ..measures.voice_data import person_texts
from . import data as D
from .kept import kept_figures


def _label(path: str, taken: set) -> str:
    p = Path(path).resolve()
    name = p.parent.name if p.name == "adapter" else p.name
    label, i = name, 2
    while label in taken or label in ("base", "reference"):
        label, i = f"{name}-{i}", i + 1
    taken.add(label)
    return label


def compare(adapters: list[str], prompts: list[str], out: str | None = None, *,
            model: str | None = None, max_new_tokens: int = 128, temperature: float = 0.0,
            top_p: float = 1.0, seed: int = 0, batch_size: int = 8, system: str | None = None,
            device: str = "auto", person: list[str] | None = None, kept: int = 20,
            kept_max_new_tokens: int = 48, log=lambda s: None) -> dict:
    from ..backends.common import atomic_dir
    from ..backends.torch.adapters import attach_adapter, read_adapter_meta
    from ..backends.torch.generate import generate
    from ..backends.torch.load import load_base
    from ..export.common import check_writable
    from ..models import resolve

    if not adapters:
        raise MindprintError("give at least one --adapter DIR")
    metas = []
    for a in adapters:
        if not Path(a).exists():
            raise MindprintError(f"{a}: no such adapter directory")
        metas.append(read_adapter_meta(Path(a)))
    bases = {m.get("base_model") for m in metas}
    if model is None and len(bases) != 1:
        raise MindprintError(f"the adapters belong to different base models ({', '.join(sorted(map(str, bases)))}); "
                             "compare adapters of one base, or pass --model")
    spec = model or bases.pop()
    if not spec:
        raise ModelError(f"{adapters[0]}: the adapter does not say which base model it belongs to; "
                         "pass --model")
    out_dir = Path(out) if out else Path(adapters[0]).resolve().parent / "compare"
    out_dir = check_writable(out_dir, overwrite=True, kind="directory")
    items = D.load_prompts(prompts, system_prompt=system)
    if not items:
        raise MindprintError(f"{', '.join(prompts)}: no prompts found")
    taken: set = set()
    labels = [_label(a, taken) for a in adapters]
    verifier = VoiceVerifier.fit(person_texts(person)[0]) if person else None

    base, tok = load_base(resolve(spec), device=device)
    pm = attach_adapter(base, adapters[0], spec, adapter_name=labels[0])
    for a, lab in zip(adapters[1:], labels[1:]):
        try:
            pm.load_adapter(str(a), adapter_name=lab)
        except (RuntimeError, ValueError, KeyError, OSError) as e:
            first = next((ln for ln in str(e).splitlines() if "size mismatch" in ln),
                         (str(e).splitlines() or [repr(e)])[0])
            raise ModelError(f"{a}: the adapter does not fit {spec}: {first.strip()[:300]}") from None
    pm.eval()
    kw = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)

    def run_all() -> list[str]:
        res = []
        for s in range(0, len(items), batch_size):
            res += generate(pm, tok, [it.prompt for it in items[s:s + batch_size]], **kw)
        return res

    columns = {}
    log(f"base: answering {len(items)} prompts")
    with pm.disable_adapter():
        columns["base"] = run_all()
    for lab in labels:
        log(f"{lab}: answering {len(items)} prompts")
        pm.set_adapter(lab)
        columns[lab] = run_all()
    result = {"mindprint_version": __version__, "model": spec,
              "adapters": {lab: str(Path(a).resolve()) for lab, a in zip(labels, adapters)},
              "settings": {**kw, "system": system},
              "rows": [{"prompt": it.text, "where": it.where, "reference": it.reference,
                        "answers": {c: columns[c][i] for c in columns}} for i, it in enumerate(items)]}
    if verifier is not None:
        add_voice(result, verifier, person)
    if kept:
        k = kept_figures(pm, tok, resolve(spec), {"base": pm.disable_adapter, **{
            lab: (lambda lab=lab: _active(pm, lab)) for lab in labels}}, n=kept,
            max_new_tokens=min(kept_max_new_tokens, max_new_tokens), batch_size=batch_size,
            max_length=1024, log=log)
        result["kept"] = {c: k["summary"][c] for c in columns} | {"cache": k["cache"], "n": k["n"]}
    with atomic_dir(out_dir) as tmp:
        (tmp / "compare.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n",
                                          encoding="utf-8")
        (tmp / "compare.md").write_text(to_markdown(result), encoding="utf-8")
        (tmp / "compare.html").write_text(to_html(result), encoding="utf-8")
    result["out"] = str(out_dir)
    return result


@contextlib.contextmanager
def _active(pm, label: str):
    """``pm`` acting as its adapter ``label`` (set_adapter is a switch, not a context)."""
    pm.set_adapter(label)
    yield


def _kept_line(result: dict) -> str:
    k = result.get("kept")
    if not k:
        return ""
    cols = [c for c in result["adapters"] if c in k]
    parts = ", ".join(f"{c}: likelihood {k[c]['kept_likelihood_ratio']:.3f}, similarity "
                      + ("–" if k[c]["kept_similarity"] is None else f"{k[c]['kept_similarity']:.3f}")
                      for c in cols)
    return (f"general ability kept on {k['n']} everyday prompts (vs the base model's answers; 1 = "
            f"nothing lost): {parts}.")


def add_voice(result: dict, verifier: VoiceVerifier, person: list[str]) -> None:
    """Per-answer voice scores (``row["voice"][column]``) and per-column means into ``result``."""
    cols = [c for c in _cols(result)]
    for row in result["rows"]:
        texts = [_cell(row, c) for c in cols]
        probs = verifier.predict([t or "" for t in texts])
        row["voice"] = {c: float(p) for c, p, t in zip(cols, probs, texts) if t is not None}
    held = verifier.held_out()
    result["voice"] = {"person": [str(p) for p in person], "verifier_auc": held["auc"],
                       "warning": held["warning"],
                       "voice_match": {c: sum(r["voice"][c] for r in result["rows"] if c in r["voice"])
                                       / max(1, sum(c in r["voice"] for r in result["rows"]))
                                       for c in cols}}


def _voice_line(result: dict) -> str:
    v = result.get("voice")
    if not v:
        return ""
    means = ", ".join(f"{c} {m:.3f}" for c, m in v["voice_match"].items())
    warn = f" Warning: {v['warning']}" if v.get("warning") else ""
    return (f"voice_match (mean P the answer is the person's): {means}; verifier held-out AUC "
            f"{v['verifier_auc']:.3f}.{warn}")


def _voice_tag(row: dict, col: str) -> str:
    p = row.get("voice", {}).get(col)
    return "" if p is None else f" (voice {p:.2f})"


def _cols(result: dict) -> list[str]:
    cols = list(result["rows"][0]["answers"]) if result["rows"] else ["base"]
    if any(r["reference"] for r in result["rows"]):
        cols.append("reference")
    return cols


def _cell(row: dict, col: str) -> str | None:
    return row["reference"] if col == "reference" else row["answers"].get(col)


def _header(result: dict) -> str:
    s = result["settings"]
    dec = "greedy" if not s["temperature"] else f"temperature {s['temperature']}, seed {s['seed']}"
    ads = ", ".join(f"{lab} ({p})" for lab, p in result["adapters"].items())
    return f"base model {result['model']}; adapters: {ads}; {dec} decoding, up to {s['max_new_tokens']} new tokens"


def to_markdown(result: dict) -> str:
    cols = _cols(result)
    md = lambda t: (t or "").replace("|", "\\|").replace("\r", "").replace("\n", "<br>")  # noqa: E731
    lines = ["# Mindprint compare", "", _header(result), ""] + ([_voice_line(result), ""]
                                                                 if result.get("voice") else []) \
        + ([_kept_line(result), ""] if result.get("kept") else [])
    for i, row in enumerate(result["rows"], 1):
        lines += [f"## {i}. {row['prompt']}", "", "| " + " | ".join(cols) + " |",
                  "|" + "---|" * len(cols),
                  "| " + " | ".join(md(_cell(row, c)) + _voice_tag(row, c) for c in cols) + " |", ""]
    return "\n".join(lines)


def to_html(result: dict) -> str:
    e = lambda t: html.escape(t or "")  # noqa: E731
    cols = _cols(result)
    head = "<tr><th>#</th><th>prompt</th>" + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr>"
    rows = "".join(
        f"<tr><td>{i}</td><td>{e(r['prompt'])}</td>"
        + "".join(f"<td class='a'>{e(_cell(r, c))}{e(_voice_tag(r, c))}</td>" for c in cols) + "</tr>"
        for i, r in enumerate(result["rows"], 1))
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Mindprint compare</title><style>"
            "body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:"
            "collapse}td,th{border:1px solid #ddd;padding:6px 8px;vertical-align:top;text-align:left}"
            "th{background:#f5f5f5}.a{white-space:pre-wrap;max-width:420px}</style></head><body>"
            f"<h1>Mindprint compare</h1><p>{e(_header(result))}</p><p>{e(_voice_line(result))}</p>"
            f"<p>{e(_kept_line(result))}</p>"
            f"<table>{head}{rows}</table>"
            "</body></html>\n")
