"""What a curriculum run leaves in its output directory: ``adapter/`` (the last trained topic's),
``curriculum_summary.json``, ``curriculum.md`` (the per-topic table) and ``curriculum.html`` (the
table with plots: voice fidelity per topic against the base model, and the training loss across
all topics with the topic boundaries marked)."""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

from ..backends.common import atomic_dir
from ..evaluate.report import pyplot, save_figure
from ..outputs import write_atomic

SUMMARY = "curriculum_summary.json"
TABLE = "curriculum.md"


def fmt(v, spec=".4f") -> str:
    return "–" if v is None else format(v, spec)


def finish(cfg, root: Path, topics, state, last_adapter, stopped, wall, log) -> dict:
    if last_adapter is not None and last_adapter.exists():
        with atomic_dir(root / "adapter") as tmp:
            for f in last_adapter.iterdir():
                shutil.copy2(f, tmp / f.name)
    rows = []
    for t in topics:
        st = state[t.name]
        rows.append({"topic": t.name, "method": t.method, "status": st["status"],
                     "steps": st["steps"], "attempts": st["attempts"],
                     "examples": st.get("examples"), "replayed": st.get("replayed"),
                     "train": st.get("train"), "eval": st.get("eval"), "gate_failures": st.get("why"),
                     "run_dir": str(root / "topics" / t.dirname)})
    summary = {"topics": rows, "stopped_at": stopped,
               "completed": all(r["status"] in ("done", "failed") for r in rows),
               "adapter": str(root / "adapter") if (root / "adapter").exists() else None,
               "output_dir": str(root), "wall_s": wall}
    write_atomic(root / SUMMARY, json.dumps(summary, indent=2))
    table = summary_table(rows)
    write_atomic(root / TABLE, "# Curriculum\n\n" + "\n".join(table) + "\n")
    try:
        write_html(root, rows, table)
    except ImportError:       # matplotlib missing: the table is still there
        pass
    for line in table:
        log(line)
    return summary


def write_html(root: Path, rows: list[dict], table: list[str]) -> None:
    """curriculum.html: content similarity per topic (adapter vs base model) as bars, the training loss
    across all topics with the topic boundaries marked, and the per-topic table."""
    plt = pyplot()
    plots = root / "curriculum-plots"
    done = [r for r in rows if (r.get("eval") or {}).get("content_similarity") is not None]
    figs = []
    if done:
        fig, ax = plt.subplots(figsize=(7.2, 3.0))
        xs = range(len(done))
        ax.bar([x - 0.2 for x in xs], [r["eval"].get("base_content_similarity") or 0 for r in done], 0.4,
               label="base model", color="#9aa5b1")
        ax.bar([x + 0.2 for x in xs], [r["eval"]["content_similarity"] for r in done], 0.4,
               label="with the adapter", color="#2f6fb0")
        ax.set_xticks(list(xs), [f"{r['topic']}\n({r['method']})" for r in done])
        ax.set_ylabel("content similarity")
        ax.set_title("content similarity (MiniLM) on each topic's held-out questions")
        ax.legend(fontsize=8)
        figs.append(save_figure(fig, plt, plots, "content_similarity"))
    fig, ax = plt.subplots(figsize=(7.2, 3.0))
    offset, drawn = 0, False
    for r in rows:
        mfile = Path(r["run_dir"]) / "metrics.jsonl"
        if not mfile.exists():
            continue
        pts = [(m["step"], m["loss"]) for m in map(json.loads, mfile.read_text().splitlines())
               if "loss" in m]
        if not pts:
            continue
        ax.plot([offset + s for s, _ in pts], [v for _, v in pts], linewidth=1.2, label=r["topic"])
        ax.axvline(offset, color="#bbb", linewidth=0.8)
        offset += pts[-1][0]
        drawn = True
    if drawn:
        ax.set_xlabel("step (all topics)")
        ax.set_ylabel("training loss")
        ax.set_title("training loss, topic after topic")
        ax.legend(fontsize=8)
        figs.append(save_figure(fig, plt, plots, "loss"))
    else:
        plt.close(fig)
    head, *body = [ln.strip("|").split("|") for ln in table if not ln.startswith("|---")]
    cells = lambda row, tag: "".join(f"<{tag}>{html.escape(c.strip())}</{tag}>" for c in row)  # noqa: E731
    page = ("<!doctype html><meta charset='utf-8'><title>Curriculum</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
            "td,th{padding:.2em .6em;border-bottom:1px solid #ddd}</style><h1>Curriculum</h1>"
            + "".join(f"<p><img src='curriculum-plots/{f}.svg' alt='{f}'></p>" for f in figs)
            + f"<table><tr>{cells(head, 'th')}</tr>"
            + "".join(f"<tr>{cells(r, 'td')}</tr>" for r in body) + "</table>")
    write_atomic(root / "curriculum.html", page)


def summary_table(rows: list[dict]) -> list[str]:
    head = ["topic", "method", "status", "steps", "voice match", "base", "content sim.", "base",
            "ppl", "base ppl", "pref acc", "base"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ev = r.get("eval") or {}
        cells = [r["topic"], r["method"], r["status"], str(r["steps"]),
                 fmt(ev.get("voice_match"), ".3f"), fmt(ev.get("base_voice_match"), ".3f"),
                 fmt(ev.get("content_similarity")), fmt(ev.get("base_content_similarity")),
                 fmt(ev.get("perplexity"), ".2f"), fmt(ev.get("base_perplexity"), ".2f"),
                 fmt(ev.get("pref_accuracy"), ".3f"), fmt(ev.get("base_pref_accuracy"), ".3f")]
        out.append("| " + " | ".join(cells) + " |")
    return out
