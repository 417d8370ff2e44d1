"""The runs registry: find run directories, and list, show and compare them.

A run directory is whatever ``mindprint train`` wrote (config.yaml, metrics.jsonl, summary.json,
manifest.json ...). Nothing is indexed: every command reads the directories, so a run copied,
moved or deleted by hand is simply found or not. Runs from before manifests still list (from
config.yaml, summary.json and metrics.jsonl), with fewer details.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from .errors import MindprintError
from .outputs import RunDir
from .tracking.base import flatten

DEFAULT_ROOT = "runs"
_NOT_RUNS = {"checkpoints", "adapter", "tensorboard", "mlruns", "report", "__pycache__"}
# summary keys shown side by side by `runs compare` (then every final train/eval metric)
SUMMARY_KEYS = ("steps", "stopped", "train_loss", "train_loss_last10", "first_eval_loss",
                "final_eval_loss", "best_eval_loss", "best_step", "tokens_per_s", "tokens_seen",
                "peak_memory_mb", "wall_s", "setup_s")


def read_json_object(p: Path) -> dict:
    """A JSON file holding an object, or {} when it is missing, unreadable or not an object."""
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


@dataclass
class Run:
    path: Path
    name: str
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)
    _rows: list | None = field(default=None, repr=False)

    @classmethod
    def load(cls, path: str | Path, name: str | None = None) -> "Run":
        p = Path(path)
        manifest = read_json_object(p / "manifest.json")
        config = manifest.get("config") or {}
        if not config and (p / "config.yaml").exists():
            try:
                config = yaml.safe_load((p / "config.yaml").read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError):
                config = {}
        return cls(p, name or p.name, config if isinstance(config, dict) else {},
                   read_json_object(p / "summary.json"), manifest)

    # -- metrics -------------------------------------------------------------------------------
    @property
    def rows(self) -> list[dict]:
        if self._rows is None:
            self._rows = RunDir(self.path).read_metrics()
        return self._rows

    def last(self, key: str):
        for r in reversed(self.rows):
            if isinstance(r.get(key), (int, float)):
                return r[key]
        return None

    # -- derived fields ------------------------------------------------------------------------
    @property
    def status(self) -> str:
        run = self.manifest.get("run") or {}
        status = run.get("status")
        if status == "running":
            if self.summary.get("stopped"):        # finished, but the manifest's end was lost
                return "interrupted" if self.summary["stopped"] == "interrupted" else "completed"
            same_host = run.get("host", (self.manifest.get("platform") or {}).get("host"))
            if same_host == socket.gethostname() and not _pid_alive(run.get("pid")):
                return "died"
            return "running"
        if status:
            return status
        if self.summary.get("stopped"):
            return "interrupted" if self.summary["stopped"] == "interrupted" else "completed"
        return "incomplete" if self.rows else "empty"

    @property
    def method(self) -> str:
        return str(self.config.get("method") or self.summary.get("method") or "?")

    @property
    def backend(self) -> str:
        return str(self.config.get("backend") or self.summary.get("backend") or "?")

    @property
    def model(self) -> str:
        m = self.config.get("model")
        name = m.get("name") if isinstance(m, dict) else m
        name = str(name or self.summary.get("model") or "?")
        return Path(name).name if ("/" in name and Path(name).expanduser().exists()) else name

    @property
    def steps(self) -> int | None:
        s = self.summary.get("steps")
        return s if s is not None else self.last("step")

    @property
    def max_steps(self):
        return (self.config.get("train") or {}).get("max_steps")

    @property
    def train_loss(self):
        v = self.summary.get("train_loss")
        return v if v is not None else self.last("loss")

    @property
    def eval_loss(self):
        v = self.summary.get("final_eval_loss")
        return v if v is not None else self.last("eval_loss")

    def final_eval_metrics(self) -> dict:
        m = self.summary.get("final_eval_metrics")
        if m:
            return m
        for r in reversed(self.rows):
            if "eval_loss" in r:
                return {k: v for k, v in r.items() if k != "step"}
        return {}

    def final_train_metrics(self) -> dict:
        m = self.summary.get("final_train_metrics")
        if m:
            return m
        for r in reversed(self.rows):
            if "loss" in r:
                return {k: v for k, v in r.items() if k not in ("step", "loss", "lr", "grad_norm",
                                                                "tokens_per_s", "epoch", "elapsed_s")}
        return {}

    def headline(self) -> str:
        ev = self.final_eval_metrics()
        for key, label in (("eval_pref_accuracy", "pref acc"), ("eval_ppl", "ppl")):
            if isinstance(ev.get(key), (int, float)):
                return f"{label} {_fmt(ev[key])}"
        return ""

    @property
    def started(self) -> datetime | None:
        at = (self.manifest.get("run") or {}).get("started_at")
        if at:
            try:
                return datetime.fromisoformat(at)
            except ValueError:
                pass
        for name in ("config.yaml", "metrics.jsonl", "summary.json"):
            if (self.path / name).exists():
                return datetime.fromtimestamp((self.path / name).stat().st_mtime).astimezone()
        return None

    @property
    def wall_s(self):
        v = self.summary.get("wall_s")
        return v if v is not None else self.last("elapsed_s")

    def as_row(self) -> dict:
        """What `runs list --json` prints for this run."""
        return {"name": self.name, "path": str(self.path), "method": self.method,
                "backend": self.backend, "model": self.model, "steps": self.steps,
                "max_steps": self.max_steps, "train_loss": self.train_loss,
                "eval_loss": self.eval_loss, "headline": self.headline(), "status": self.status,
                "started": self.started.isoformat(timespec="seconds") if self.started else None,
                "wall_s": self.wall_s}


# -- finding runs --------------------------------------------------------------------------------
def is_run_dir(p: Path) -> bool:
    if not p.is_dir():
        return False
    if any((p / n).is_file() for n in ("manifest.json", "summary.json", "metrics.jsonl")):
        return True
    return (p / "config.yaml").is_file() and ((p / "checkpoints").is_dir() or (p / "adapter").is_dir())


def find_runs(root: str | Path, max_depth: int = 4) -> list[Run]:
    root = Path(root)
    if not root.exists():
        raise MindprintError(f"{root}: no such directory (give the directory that holds your runs)")
    if is_run_dir(root):
        return [Run.load(root)]
    found = []

    def walk(d: Path, depth: int) -> None:
        try:
            children = sorted(c for c in d.iterdir() if c.is_dir())
        except OSError:
            return
        for c in children:
            if c.name.startswith(".") or c.name in _NOT_RUNS:
                continue
            if is_run_dir(c):
                found.append(Run.load(c, str(c.relative_to(root))))
            elif depth < max_depth:
                walk(c, depth + 1)

    walk(root, 1)
    epoch = datetime.fromtimestamp(0).astimezone()
    return sorted(found, key=lambda r: (r.started or epoch, r.name))


def resolve_run(spec: str) -> Run:
    """A run by path, or by name under ./runs."""
    for p in (Path(spec), Path(DEFAULT_ROOT) / spec):
        if is_run_dir(p):
            return Run.load(p, spec)
    if Path(spec).exists():
        raise MindprintError(f"{spec}: not a run directory (no manifest.json, summary.json or "
                             "metrics.jsonl)")
    raise MindprintError(f"{spec}: no such run (give a run directory, or a name under "
                         f"{DEFAULT_ROOT}/; 'mindprint runs list' shows them)")


# -- formatting ----------------------------------------------------------------------------------
def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v == 0 or 1e-3 <= abs(v) < 1e5:
            return f"{v:.4g}" if abs(v) < 10 else f"{v:,.1f}" if abs(v) < 1e4 else f"{v:,.0f}"
        return f"{v:.3e}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def _duration(s) -> str:
    if not isinstance(s, (int, float)):
        return "-"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"


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
    from .manifest import differences

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
