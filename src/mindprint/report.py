"""``mindprint report RUN_DIR``: one HTML page with a run's curves, config, manifest and summary.

Every numeric series in metrics.jsonl is plotted against the step, grouped by what it measures
(loss, perplexity, preference accuracy, rewards, log-probs, learning rate, throughput, gradient
norm; anything else gets a chart of its own), so SFT, DPO-style and future methods all render
without a list of known keys. Charts are PNG files in ``RUN_DIR/report/`` (``self_contained``
embeds them in the page instead). matplotlib draws off-screen (Agg canvas, no pyplot state), so
the web UI can call :func:`write_report` from a worker thread. Nothing is opened.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from pathlib import Path

import yaml

from .errors import MindprintError
from .runs import Run, _duration, _fmt, is_run_dir

# (chart id, title, does this key belong) — first match wins, so order matters
GROUPS = [
    ("loss", "Loss (train and eval)", lambda k: k in ("loss", "eval_loss")),
    ("perplexity", "Perplexity", lambda k: "ppl" in k),
    ("accuracy", "Preference accuracy", lambda k: "accuracy" in k),
    ("rewards", "Rewards", lambda k: "reward" in k),
    ("logps", "Log-probabilities (summed over the completion)", lambda k: "logps" in k),
    ("nll", "NLL per token", lambda k: "nll" in k),
    ("kl", "KL", lambda k: re.search(r"(^|[_/])kl($|[_/])", k) is not None),
    ("lr", "Learning rate", lambda k: k == "lr"),
    ("throughput", "Throughput (tokens/s)", lambda k: k == "tokens_per_s"),
    ("grad_norm", "Gradient norm", lambda k: k == "grad_norm"),
]
NOT_PLOTTED = {"step", "epoch", "elapsed_s"}


def series(rows: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """key → (steps, values) for every numeric key; non-finite values leave gaps."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for r in rows:
        step = r.get("step")
        if not isinstance(step, (int, float)):
            continue
        for k, v in r.items():
            if k in NOT_PLOTTED or isinstance(v, bool):
                continue
            if isinstance(v, str) and v in ("nan", "inf", "-inf"):
                v = float("nan")
            if not isinstance(v, (int, float)):
                continue
            xs, ys = out.setdefault(k, ([], []))
            xs.append(int(step))
            ys.append(float(v) if math.isfinite(v) else float("nan"))
    return out


def group_series(keys) -> list[tuple[str, str, list[str]]]:
    """(chart id, title, keys) in display order; ungrouped keys share a chart per ``prefix/``."""
    groups: dict[str, list[str]] = {}
    rest: dict[str, list[str]] = {}
    for k in keys:
        for gid, _, belongs in GROUPS:
            if belongs(k):
                groups.setdefault(gid, []).append(k)
                break
        else:
            prefix = k.split("/", 1)[0] if "/" in k else k
            rest.setdefault(prefix.removeprefix("eval_"), []).append(k)
    def train_first(ks):
        return sorted(ks, key=lambda k: k.startswith("eval_"))    # stable: else as logged

    out = [(gid, title, train_first(groups[gid])) for gid, title, _ in GROUPS if gid in groups]
    for prefix, ks in rest.items():
        gid = "other-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", prefix)
        out.append((gid, prefix, train_first(ks)))
    return out


def _figure(title: str, keys: list[str], data: dict):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.4, 3.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    positive = True
    lo, hi = math.inf, -math.inf
    colors: dict[str, str] = {}
    for k in keys:
        xs, ys = data[k]
        # a train series and its eval twin share a colour; eval is dashed
        base = k.removeprefix("eval_")
        color = colors.setdefault(base, f"C{len(colors) % 10}")
        is_eval = k.startswith("eval_")
        sparse = len(xs) <= 40 or is_eval
        ax.plot(xs, ys, label=k, color=color, linestyle="--" if is_eval else "-",
                marker="o" if sparse else None, markersize=3.5, linewidth=1.4)
        finite = [y for y in ys if math.isfinite(y)]
        if finite:
            lo, hi = min(lo, min(finite)), max(hi, max(finite))
            positive = positive and min(finite) > 0
    if positive and lo > 0 and hi / lo > 100:   # perplexity from 50 000 down to 20
        ax.set_yscale("log")
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    if len(keys) > 1 or keys[0] != title:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def charts(rows: list[dict]) -> list[tuple[str, str, bytes]]:
    """(chart id, title, PNG bytes) for every group of series in ``rows``."""
    data = series(rows)
    out = []
    for gid, title, keys in group_series(data):
        fig = _figure(title, keys, data)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        out.append((gid, title, buf.getvalue()))
    return out


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#222;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem} h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
.sub{color:#666;margin-top:0} table{border-collapse:collapse;font-size:.9rem}
td,th{padding:.2rem .8rem .2rem 0;text-align:left;vertical-align:top} th{color:#555;font-weight:600}
.charts{display:flex;flex-wrap:wrap;gap:1rem} .charts figure{margin:0}
.charts img{width:520px;max-width:100%;border:1px solid #eee}
pre{background:#f6f8fa;padding:.8rem;overflow:auto;font-size:.8rem;max-height:36rem}
.status-completed{color:#16a34a}.status-failed,.status-died{color:#dc2626}
.status-interrupted,.status-running{color:#ca8a04} details{margin:.6rem 0} summary{cursor:pointer}
"""


def _table(items) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(v if isinstance(v, str) else _fmt(v))}"
                   "</td></tr>" for k, v in items)
    return f"<table>{rows}</table>"


def write_report(run_dir: str | Path, *, self_contained: bool = False,
                 output: str | Path | None = None) -> Path:
    """Write ``report.html`` (and ``report/*.png``) for a run; return the HTML path."""
    root = Path(run_dir)
    if not root.exists():
        raise MindprintError(f"{root}: no such run directory")
    if not is_run_dir(root):
        raise MindprintError(f"{root}: not a run directory (no manifest.json, summary.json or "
                             "metrics.jsonl)")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MindprintError("mindprint report needs matplotlib: pip install matplotlib (or "
                             "pip install 'mindprint[eval]')") from None
    run = Run.load(root)
    out = Path(output) if output else root / "report.html"
    img_dir = out.parent / "report"
    figures = charts(run.rows)
    parts = []
    if not self_contained and figures:
        img_dir.mkdir(parents=True, exist_ok=True)
        for old in img_dir.glob("*.png"):
            old.unlink()
    for gid, title, png in figures:
        if self_contained:
            src = "data:image/png;base64," + base64.b64encode(png).decode()
        else:
            (img_dir / f"{gid}.png").write_bytes(png)
            src = f"report/{gid}.png"
        parts.append(f'<figure><img src="{src}" alt="{html.escape(title)}"></figure>')

    m, s = run.manifest, run.summary
    mrun = m.get("run") or {}
    status = run.status
    headline = [("status", status), ("method", run.method), ("backend", run.backend),
                ("model", run.model),
                ("steps", f"{run.steps if run.steps is not None else '-'} / {run.max_steps or '?'}"),
                ("stopped", s.get("stopped") or mrun.get("stopped") or "-"),
                ("train loss (last)", run.train_loss),
                ("eval loss (first → final)",
                 f"{_fmt(s.get('first_eval_loss'))} → {_fmt(run.eval_loss)}"),
                ("best eval loss", f"{_fmt(s.get('best_eval_loss'))} at step {_fmt(s.get('best_step'))}"),
                ]
    for k, v in run.final_eval_metrics().items():
        if k not in ("eval_loss",):
            headline.append((f"final {k}", v))
    headline += [("tokens/s", s.get("tokens_per_s")), ("peak memory (MB)", s.get("peak_memory_mb")),
                 ("wall time", _duration(run.wall_s)),
                 ("started", mrun.get("started_at") or (run.started.isoformat(timespec="seconds")
                                                        if run.started else "-")),
                 ("ended", mrun.get("ended_at") or "-")]
    if mrun.get("error"):
        headline.append(("error", mrun["error"]))

    env = []
    if m:
        git = (m.get("mindprint") or {}).get("git") or {}
        env.append(("mindprint", str((m.get("mindprint") or {}).get("version"))
                    + (f" @ {git['commit'][:12]}" + (" (dirty)" if git.get("dirty") else "")
                       if git.get("commit") else "")))
        dev = m.get("device") or {}
        env.append(("device", f"{dev.get('device')} ({dev.get('name')})"))
        env += [(k, v) for k, v in (m.get("versions") or {}).items() if v and k != "mindprint"]
        model = m.get("model") or {}
        env.append(("base model", f"{model.get('spec')} ({model.get('kind')}), weights sha256 "
                                  f"{(model.get('weights_sha256') or '-')[:16]}"))
        for f in (m.get("data") or {}).get("files", []):
            env.append((f"data.{f['role']}[{f['index']}]",
                        f"{f['path']} ({f.get('bytes')} bytes, sha256 {(f.get('sha256') or '-')[:16]})"))
        rep = m.get("reproduced_from")
        if rep:
            diffs = rep.get("differences") or []
            env.append(("reproduces", f"{rep.get('run_dir')} ({len(diffs)} difference(s))"))
            env += [("", d) for d in diffs]

    config_text = yaml.safe_dump(run.config, sort_keys=False, allow_unicode=True) if run.config else ""
    title = f"Mindprint run {root.resolve().name}"
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="sub">{html.escape(str(root.resolve()))} · '
        f'<span class="status-{html.escape(status)}">{html.escape(status)}</span></p>',
        "<h2>Summary</h2>", _table(headline),
        "<h2>Curves</h2>",
        f'<div class="charts">{"".join(parts)}</div>' if parts else "<p>No metrics logged yet.</p>",
    ]
    if env:
        body += ["<h2>Environment and data</h2>", _table(env)]
    body += ["<h2>Config</h2>", f"<pre>{html.escape(config_text) or '(no config.yaml)'}</pre>"]
    for name, data in (("summary.json", s), ("manifest.json", m)):
        if data:
            body.append(f"<details><summary>{name}</summary><pre>"
                        f"{html.escape(json.dumps(data, indent=2, default=str))}</pre></details>")
    page = ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    from .outputs import write_atomic

    write_atomic(out, page)
    return out
