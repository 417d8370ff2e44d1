"""``mindprint runs list | show | compare``: tables of run records (:mod:`.record`) on the terminal
or as JSON, and the comparisons the web UI shares (:func:`config_differences`,
:func:`metric_rows`)."""

from __future__ import annotations

import json
import shutil
import sys

import yaml

from ..errors import MindprintError
from ..outputs import RunDir
from ..tracking.base import flatten
from .record import DEFAULT_ROOT, SUMMARY_KEYS, Run, _duration, _fmt, find_runs, resolve_run

_STATUS_STYLE = {"completed": "green", "running": "cyan", "interrupted": "yellow",
                 "failed": "red", "died": "red", "incomplete": "yellow", "empty": "dim"}


def console():
    from rich.console import Console

    # a pipe or a test capture gets wide lines instead of squeezed, wrapped table cells
    width = None if sys.stdout.isatty() else max(shutil.get_terminal_size((160, 24)).columns, 160)
    return Console(width=width, highlight=False, soft_wrap=False)


def list_table(runs: list[Run], title: str):
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for col, just in (("run", "left"), ("method", "left"), ("backend", "left"), ("model", "left"),
                      ("steps", "right"), ("train loss", "right"), ("eval loss", "right"),
                      ("headline", "left"), ("status", "left"), ("started", "left"),
                      ("time", "right")):
        t.add_column(col, justify=just, no_wrap=col in ("run", "status", "started"))
    for r in runs:
        steps = f"{r.steps if r.steps is not None else '-'}/{r.max_steps or '?'}"
        started = r.started.strftime("%Y-%m-%d %H:%M") if r.started else "-"
        status = f"[{_STATUS_STYLE.get(r.status, 'white')}]{r.status}[/]"
        t.add_row(escape(r.name), escape(r.method), r.backend, escape(r.model), steps,
                  _fmt(r.train_loss), _fmt(r.eval_loss), r.headline(), status, started,
                  _duration(r.wall_s))
    return t


def cmd_list(root: str | None, as_json: bool = False) -> int:
    root = root or DEFAULT_ROOT
    runs = find_runs(root)
    if as_json:
        print(json.dumps([r.as_row() for r in runs], indent=2))
        return 0
    con = console()
    if not runs:
        con.print(f"no runs under {root}")
        return 0
    con.print(list_table(runs, f"{len(runs)} run(s) under {root}"))
    return 0


def _kv_table(title: str, items):
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=title, title_justify="left", show_header=False)
    t.add_column("key", style="bold", no_wrap=True)
    t.add_column("value", overflow="fold")
    for k, v in items:
        t.add_row(escape(str(k)), escape(v if isinstance(v, str) else _fmt(v)))
    return t


def _short(h) -> str:
    return h[:12] if isinstance(h, str) else "-"


def cmd_show(spec: str, as_json: bool = False) -> int:
    run = resolve_run(spec)
    if as_json:
        print(json.dumps({"run": run.as_row(), "summary": run.summary, "manifest": run.manifest,
                          "config": run.config}, indent=2, default=str))
        return 0
    con = console()
    row = run.as_row()
    con.print(_kv_table(f"run {run.name}", [
        ("path", str(run.path)), ("status", run.status), ("method", run.method),
        ("backend", run.backend), ("model", str((run.config.get("model") or {}).get("name", "?"))
                                   if isinstance(run.config.get("model"), dict) else run.model),
        ("steps", f"{row['steps']}/{row['max_steps']}"), ("started", row["started"] or "-"),
        ("ended", (run.manifest.get("run") or {}).get("ended_at") or "-"),
        ("time", _duration(run.wall_s)),
        ("error", (run.manifest.get("run") or {}).get("error") or "-"),
    ]))
    metrics = [(k, run.summary.get(k)) for k in SUMMARY_KEYS if k in run.summary]
    metrics += [(f"final {k}", v) for k, v in run.final_eval_metrics().items()]
    metrics += [(f"last train {k}", v) for k, v in run.final_train_metrics().items()]
    if metrics:
        con.print(_kv_table("metrics", metrics))
    m = run.manifest
    if m:
        git = (m.get("mindprint") or {}).get("git") or {}
        env = [("mindprint", f"{(m.get('mindprint') or {}).get('version')}"
                             + (f" @ {git['commit'][:12]}{' (dirty)' if git.get('dirty') else ''}"
                                if git.get("commit") else ""))]
        env += [(k, v) for k, v in (m.get("versions") or {}).items() if v and k != "mindprint"]
        dev = m.get("device") or {}
        env += [("device", f"{dev.get('device')} ({dev.get('name')})"),
                ("platform", (m.get("platform") or {}).get("platform", "-")),
                ("seed", json.dumps(m.get("seeds")))]
        model = m.get("model") or {}
        env += [("model", f"{model.get('spec')} [{model.get('kind')}] {model.get('path')}"),
                ("model weights sha256", _short(model.get("weights_sha256")))]
        for f in (m.get("data") or {}).get("files", []):
            env.append((f"data.{f['role']}[{f['index']}]",
                        f"{f['path']}  sha256 {_short(f.get('sha256'))}  {f.get('bytes')} bytes"))
        tok = (m.get("data") or {}).get("tokenized") or {}
        for split in ("train", "eval"):
            env.append((f"tokenized {split}", f"{tok.get(f'{split}_examples')} examples  sha256 "
                                              f"{_short(tok.get(f'{split}_sha256'))}"))
        for name, info in (m.get("tracking") or {}).items():
            env.append((f"tracker {name}", json.dumps(info)))
        rep = m.get("reproduced_from")
        if rep:
            env.append(("reproduced from", f"{rep.get('run_dir')}: "
                                           f"{len(rep.get('differences') or [])} difference(s)"))
            env += [("  difference", d) for d in rep.get("differences") or []]
        con.print(_kv_table("manifest", env))
    files = [(n, "yes" if (run.path / n).exists() else "-")
             for n in ("adapter", "report.html", "tensorboard", "mlruns")]
    files.append(("checkpoints", str(len(RunDir(run.path).list_checkpoints()))))
    con.print(_kv_table("files", files))
    if run.config:
        con.print("[bold]config[/]")
        con.print(yaml.safe_dump(run.config, sort_keys=False, allow_unicode=True).rstrip(),
                  markup=False)
    return 0


def config_differences(runs: list[Run]) -> list[tuple[str, list]]:
    """(dotted key, value per run) for every config key that is not the same in all runs."""
    flat = [flatten(r.config) for r in runs]
    keys = sorted(set().union(*flat)) if flat else []
    out = []
    for k in keys:
        if k == "output_dir":
            continue
        vals = [f.get(k) for f in flat]
        if any(v != vals[0] for v in vals[1:]):
            out.append((k, vals))
    return out


def metric_rows(runs: list[Run]) -> list[tuple[str, list]]:
    rows = [("status", [r.status for r in runs])]
    for k in SUMMARY_KEYS:
        vals = [r.summary.get(k) for r in runs]
        if k == "steps":
            vals = [r.steps for r in runs]
        elif k == "train_loss":
            vals = [r.train_loss for r in runs]
        elif k == "final_eval_loss":
            vals = [r.eval_loss for r in runs]
        if any(v is not None for v in vals):
            rows.append((k, vals))
    evs = [r.final_eval_metrics() for r in runs]
    for k in dict.fromkeys(k for e in evs for k in e):
        if k != "eval_loss":
            rows.append((f"final {k}", [e.get(k) for e in evs]))
    trs = [r.final_train_metrics() for r in runs]
    for k in dict.fromkeys(k for t in trs for k in t):
        rows.append((f"last train {k}", [t.get(k) for t in trs]))
    return rows


def _best(key: str, vals: list) -> int | None:
    nums = [(v, i) for i, v in enumerate(vals) if isinstance(v, (int, float)) and v == v]
    if len(nums) < 2 or len({v for v, _ in nums}) < 2:
        return None
    k = key.lower()
    if "loss" in k or "ppl" in k or "nll" in k:
        return min(nums)[1]
    if "accuracy" in k or "margin" in k or "tokens_per_s" in k:
        return max(nums)[1]
    return None


def cmd_compare(specs: list[str], as_json: bool = False) -> int:
    if len(specs) < 2:
        raise MindprintError("runs compare: give at least two runs")
    runs = [resolve_run(s) for s in specs]
    diffs = config_differences(runs)
    metrics = metric_rows(runs)
    from ..manifest import differences   # the manifest module: only for `runs compare`

    env = []
    for r in runs[1:]:
        if runs[0].manifest and r.manifest:
            lines = [d for d in differences(runs[0].manifest, r.manifest)
                     if not d.startswith("config ")]
            env.append((r.name, lines))
    if as_json:
        print(json.dumps({"runs": [r.name for r in runs],
                          "config_differences": {k: v for k, v in diffs},
                          "metrics": {k: v for k, v in metrics},
                          "environment_differences": {n: l for n, l in env}},
                         indent=2, default=str))
        return 0
    from rich.markup import escape
    from rich.table import Table

    con = console()

    def table(title: str, first: str):
        t = Table(title=title, title_justify="left")
        t.add_column(first, style="bold", no_wrap=True)
        for r in runs:
            t.add_column(escape(r.name), overflow="fold")
        return t

    if diffs:
        t = table(f"config: {len(diffs)} key(s) differ", "key")
        for k, vals in diffs:
            t.add_row(escape(k), *[escape(_fmt(v)) for v in vals])
        con.print(t)
    else:
        con.print("config: identical (apart from output_dir)")
    t = table("metrics", "metric")
    for k, vals in metrics:
        best = _best(k, vals)
        t.add_row(escape(k), *[f"[bold green]{escape(_fmt(v))}[/]" if i == best else escape(_fmt(v))
                               for i, v in enumerate(vals)])
    con.print(t)
    for name, lines in env:
        if lines:
            con.print(f"[bold]environment: {escape(name)} vs {escape(runs[0].name)}[/]")
            for line in lines:
                con.print(f"  {line}", markup=False)
    return 0
