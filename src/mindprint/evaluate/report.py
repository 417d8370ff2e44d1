"""report.json, report.html and the plots behind it (PNG and SVG, under plots/).

The HTML is self-contained (the SVG plots are inlined) so it can be mailed or attached to an
issue; the PNG files are for slides and READMEs. Plot files are byte-deterministic.
"""

from __future__ import annotations

import html
from pathlib import Path

from .summary import SUMMARY_ROWS, dumps

COLORS = {"base": "#8c8c8c", "tuned": "#d9480f", "reference": "#1c7ed6"}
UNIT_METRICS = [("voice_match", "voice match"), ("voice_attribution", "voice attribution"),
                ("content_similarity", "content similarity"), ("markdown_adherence", "markdown adherence"),
                ("logp_accuracy", "pref. acc. (log p)"), ("implicit_accuracy", "pref. acc. (implicit)")]


def write_report(report: dict, out: Path) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(dumps(report), encoding="utf-8")
    plots = make_plots(report, out / "plots")
    (out / "report.html").write_text(render_html(report, plots, out / "plots"), encoding="utf-8")


# -- plots -------------------------------------------------------------------------------------


def pyplot():
    """matplotlib.pyplot on the Agg backend with the report's style and byte-deterministic SVG
    (ImportError without matplotlib: callers skip their plots)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "mindprint", "font.size": 9, "axes.spines.top": False,
                         "axes.spines.right": False})
    return plt


def save_figure(fig, plt, folder: Path, name: str) -> str:
    """``fig`` as ``folder/name.png`` and ``.svg`` (no timestamps in either), closed; returns ``name``."""
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / f"{name}.png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(folder / f"{name}.svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return name


def make_plots(report: dict, folder: Path) -> list[tuple[str, str]]:
    """[(file stem, caption)] of the plots written into ``folder``."""
    try:
        plt = pyplot()
    except ImportError:
        return []
    vs, summ, made = report["variants"], report["summary"], []
    metrics = [(k, lab) for k, lab in UNIT_METRICS if any(summ[v].get(k) is not None for v in vs)]
    if metrics:
        fig, ax = plt.subplots(figsize=(7.2, 3.0))
        w = 0.8 / len(vs)
        for j, v in enumerate(vs):
            pts = [(i + (j - (len(vs) - 1) / 2) * w, summ[v].get(k))
                   for i, (k, _) in enumerate(metrics) if summ[v].get(k) is not None]
            bars = ax.bar([x for x, _ in pts], [y for _, y in pts], w, label=v, color=COLORS.get(v))
            ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
        ax.set_xticks(range(len(metrics)), [lab for _, lab in metrics], fontsize=8)
        ax.set_ylim(0, 1.15)
        ax.legend(frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=len(vs))
        ax.set_title("higher is better", fontsize=8, loc="right", color="#777")
        made.append((save_figure(fig, plt, folder, "summary"), "Headline numbers, base vs tuned."))
    voice = report["voice"]
    if any(row["answers"].get(v, {}).get("similarity") is not None for row in voice for v in vs):
        from matplotlib.ticker import MaxNLocator

        fig, ax = plt.subplots(figsize=(7.2, 3.0))
        sims = {v: [row["answers"].get(v, {}).get("similarity") for row in voice] for v in vs}
        if len(vs) == 2:          # one grey line per prompt joins its two answers
            for i, (a, b) in enumerate(zip(sims[vs[0]], sims[vs[1]]), 1):
                if a is not None and b is not None:
                    ax.plot([i, i], [a, b], color="#ccc", linewidth=1, zorder=1)
        for v in vs:
            pts = [(i, y) for i, y in enumerate(sims[v], 1) if y is not None]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=COLORS.get(v), label=v,
                       s=18, zorder=2)
            mean = summ[v].get("content_similarity")
            if mean is not None:
                ax.axhline(mean, color=COLORS.get(v), linestyle="--", linewidth=0.8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("held-out prompt")
        ax.set_ylabel("cosine similarity to reference")
        ax.legend(frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=len(vs))
        made.append((save_figure(fig, plt, folder, "content_similarity"),
                     "Content similarity per prompt: MiniLM cosine of each answer and the person's "
                     "reference answer, i.e. how close in content, not voice (dashed: mean)."))
    lengths = {v: [row["answers"][v]["words"] for row in voice if v in row["answers"]] for v in vs}
    refs = [len(row["reference"].split()) for row in voice if row.get("reference")]
    if any(lengths.values()):
        fig, ax = plt.subplots(figsize=(6.4, 2.6))
        data = [lengths[v] for v in vs] + ([refs] if refs else [])
        labels = vs + (["reference"] if refs else [])
        bp = ax.boxplot(data, vert=False, patch_artist=True, tick_labels=labels)
        for patch, lab in zip(bp["boxes"], labels):
            patch.set_facecolor(COLORS.get(lab, "#cccccc"))
            patch.set_alpha(0.6)
        ax.set_xlabel("answer length (words)")
        ax.set_title("answer length")
        made.append((save_figure(fig, plt, folder, "answer_length"), "Answer lengths in words."))
    return made


# -- HTML --------------------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1150px;
color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%;margin:.5em 0}
td,th{border:1px solid #ddd;padding:4px 8px;vertical-align:top;text-align:left}
th{background:#f5f5f5}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.better{color:#2b8a3e;font-weight:600}.worse{color:#c92a2a}.muted{color:#777}
.ans{white-space:pre-wrap;font-size:13px;max-width:360px}
figure{margin:1em 0}figcaption{color:#555;font-size:13px}
"""


def _e(x) -> str:
    return html.escape("" if x is None else str(x))


def _fmt(fmt: str, x) -> str:
    if x is None:
        return "–"
    try:
        return fmt.format(x)
    except (ValueError, TypeError):
        return _e(x)


def _summary_table(report: dict) -> str:
    vs = report["variants"]
    head = "<tr><th>metric</th>" + "".join(f"<th>{_e(v)}</th>" for v in vs)
    both = "base" in vs and "tuned" in vs
    head += "<th>tuned − base</th></tr>" if both else "</tr>"
    rows = []
    for key, label, better, fmt in SUMMARY_ROWS:
        vals = [report["summary"][v].get(key) for v in vs]
        if all(x is None for x in vals):
            continue
        cells = "".join(f'<td class="n">{_fmt(fmt, x)}</td>' for x in vals)
        if both:
            b, t = report["summary"]["base"].get(key), report["summary"]["tuned"].get(key)
            if b is None or t is None:
                cells += '<td class="n muted">–</td>'
            else:
                d = t - b
                cls = ""
                if better and d:
                    cls = "better" if (d > 0) == (better == "high") else "worse"
                cells += f'<td class="n {cls}">{_fmt(fmt.replace("{:", "{:+"), d)}</td>'
        rows.append(f"<tr><td>{_e(label)}</td>{cells}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _voice_table(report: dict) -> str:
    vs = report["variants"]
    head = ("<tr><th>#</th><th>prompt</th><th>reference</th>"
            + "".join(f"<th>{_e(v)}</th>" for v in vs) + "</tr>")
    rows = []
    for i, row in enumerate(report["voice"], 1):
        cells = []
        for v in vs:
            a = row["answers"].get(v, {})
            sim, vp = a.get("similarity"), a.get("voice_p")
            tags = [f"voice {vp:.2f}" if vp is not None else None,
                    f"sim {sim:.3f}" if sim is not None else None, f"{a.get('words', 0)} words",
                    "list" if a.get("list") else None, "heading" if a.get("heading") else None,
                    ("banned: " + ", ".join(a["banned"])) if a.get("banned") else None]
            meta = " · ".join(t for t in tags if t)
            cells.append(f'<td><div class="ans">{_e(a.get("text"))}</div>'
                         f'<div class="muted">{_e(meta)}</div></td>')
        rows.append(f'<tr><td class="n">{i}</td><td>{_e(row["prompt"])}</td>'
                    f'<td><div class="ans">{_e(row["reference"])}</div></td>{"".join(cells)}</tr>')
    return f"<table>{head}{''.join(rows)}</table>"


def _voice_score_note(report: dict) -> str:
    """What the voice verifier was fitted on and how well it tells the voice apart."""
    vs = report.get("voice_score") or {}
    if vs.get("skipped"):
        return f'<p class="muted">voice score: {_e(vs["skipped"])}</p>'
    if not vs:
        return ""
    curve = ", ".join(f"{k}: {x:.3f}" for k, x in vs["verifier_curve"].items())
    warn = f'<br><b>warning:</b> {_e(vs["warning"])}' if vs.get("warning") else ""
    return (f'<p class="muted">voice verifier fitted on {vs["n_person"]} of the person\'s answers '
            f'against {vs["n_background"]} others; held-out AUC {vs["verifier_auc"]:.3f} '
            f'(learning curve {_e(curve)}){warn}</p>')


def _kept_section(report: dict) -> str:
    """General ability kept (:mod:`.kept`): the figures in words, the banned-phrase rate beside
    them, and each everyday prompt's base and tuned answers."""
    k, summ = report["kept"], report["summary"]
    t, b = summ.get("tuned", {}), summ.get("base", {})
    ratio, sim = t.get("kept_likelihood_ratio"), t.get("kept_similarity")
    banned = ", ".join(f"{v} {summ[v]['banned_answer_rate']:.2f}" for v in report["variants"]
                       if summ[v].get("banned_answer_rate") is not None)
    intro = (f"<p>{k['n']} bundled everyday prompts (recipes, directions, sums, e-mails...); the "
             f"base model's greedy answers (up to {k['max_new_tokens']} tokens, cached in "
             f"<code>{_e(k['cache'])}</code>) are the yardstick. Per token the tuned model gives "
             f"them {_fmt('{:.3f}', ratio)} × the base model's probability (1 = nothing lost); its "
             f"own answers have content similarity {_fmt('{:.3f}', sim)} to the base's."
             + (f" Answers with a banned (assistant-like) phrase: {_e(banned)}." if banned else "")
             + "</p>")
    head = "<tr><th>#</th><th>prompt</th><th>base</th><th>tuned</th></tr>"
    rows = []
    for i, row in enumerate(k["rows"], 1):
        s = row["similarity"].get("tuned")
        meta = f"similarity {s:.3f}" if s is not None else ""
        rows.append(f'<tr><td class="n">{i}</td><td>{_e(row["prompt"])}</td>'
                    f'<td><div class="ans">{_e(row["answers"].get("base"))}</div></td>'
                    f'<td><div class="ans">{_e(row["answers"].get("tuned"))}</div>'
                    f'<div class="muted">{_e(meta)}</div></td></tr>')
    return intro + f"<table>{head}{''.join(rows)}</table>"


def _pref_table(report: dict) -> str:
    vs = report["variants"]
    head = "<tr><th>pair</th>" + "".join(
        f"<th>{_e(v)}: log p chosen − rejected</th>" for v in vs)
    tuned = "tuned" in vs
    head += "<th>implicit reward margin</th></tr>" if tuned else "</tr>"
    rows = []
    for row in report["preference"]:
        cells = ""
        for v in vs:
            s = row[v]
            d = s["logp_chosen"] - s["logp_rejected"]
            cells += f'<td class="n {"better" if d > 0 else "worse"}">{d:+.2f}</td>'
        if tuned:
            m = row["tuned"]["margin"]
            cells += f'<td class="n {"better" if m > 0 else "worse"}">{m:+.3f}</td>'
        rows.append(f"<tr><td>{_e(row['where'])}</td>{cells}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _ppl_table(report: dict) -> str:
    vs = report["variants"]
    head = "<tr><th>record</th><th>assistant tokens</th>" + "".join(
        f"<th>{_e(v)} perplexity</th>" for v in vs) + "</tr>"
    rows = []
    for row in report["perplexity"]:
        toks = next((row[v]["tokens"] for v in vs if v in row), "")
        cells = "".join(f'<td class="n">{row[v]["perplexity"]:.3f}</td>' if v in row else "<td></td>"
                        for v in vs)
        rows.append(f'<tr><td>{_e(row["where"])}</td><td class="n">{toks}</td>{cells}</tr>')
    return f"<table>{head}{''.join(rows)}</table>"


def render_html(report: dict, plots: list[tuple[str, str]], plots_dir: Path | None = None) -> str:
    title = f"Mindprint eval: {report.get('adapter') or report['model']}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{_e(title)}</h1>"]
    d, s = report["data"], report["settings"]
    decoding = ("greedy" if not s["temperature"] else
                f"sampled (temperature {s['temperature']}, top-p {s['top_p']}, seed {s['seed']})")
    parts.append(f"<p>base model <code>{_e(report['model'])}</code>"
                 + (f", adapter <code>{_e(report['adapter'])}</code>" if report.get("adapter") else "")
                 + f". {d['n_prompts']} prompts ({d['with_reference']} with a reference answer), "
                 f"{d['n_chat']} chat records, {d['n_pairs']} preference pairs; {decoding} decoding, "
                 f"up to {s['max_new_tokens']} new tokens. <i>base</i> is the same model with the "
                 f"adapter switched off.</p>")
    parts.append("<h2>Summary</h2>" + _summary_table(report))
    rs = report.get("reference_style") or {}
    if rs.get("count"):
        parts.append(f"<p class='muted'>Reference answers: {rs['answer_words_mean']:.1f} words on "
                     f"average, {rs['list_rate']:.2f} with a list, {rs['heading_rate']:.2f} with a "
                     f"heading.</p>")
    if plots:
        parts.append("<h2>Plots</h2>")
        for stem, caption in plots:
            svg = _inline_svg(plots_dir / f"{stem}.svg") if plots_dir else ""
            parts.append(f"<figure>{svg}<figcaption>{_e(caption)} (<a href='plots/{stem}.png'>"
                         f"PNG</a>, <a href='plots/{stem}.svg'>SVG</a>)</figcaption></figure>")
    if report["voice"]:
        parts.append("<h2>Answers: voice (P the person's) and content similarity</h2>"
                     + _voice_score_note(report) + _voice_table(report))
    if report.get("kept"):
        parts.append("<h2>General ability kept</h2>" + _kept_section(report))
    if report["preference"]:
        parts.append("<h2>Preference pairs</h2>" + _pref_table(report))
    if report["perplexity"]:
        parts.append("<h2>Perplexity per record</h2>" + _ppl_table(report))
    parts.append(f"<p class='muted'>mindprint {_e(report['mindprint_version'])} · every number is in "
                 f"report.json.</p></body></html>")
    return "\n".join(parts) + "\n"


def _inline_svg(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return f"<img src='plots/{_e(path.stem)}.png' alt=''>"
    start = text.find("<svg")
    return text[start:] if start >= 0 else ""
