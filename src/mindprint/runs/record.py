"""A run directory as a record (:class:`Run`), and finding run directories.

A run directory is whatever ``mindprint train`` wrote (config.yaml, metrics.jsonl, summary.json,
manifest.json ...). Nothing is indexed: every command reads the directories, so a run copied,
moved or deleted by hand is simply found or not. Runs from before manifests still load (from
config.yaml, summary.json and metrics.jsonl), with fewer details.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from ..errors import MindprintError
from ..outputs import RunDir

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
    """One run directory, as written by ``mindprint train`` / :func:`mindprint.train` (or a
    curriculum). ``config`` and ``summary`` are dicts as written (``summary.json``: steps,
    stopped, losses, tokens/s, ``final_eval_metrics`` ...); ``metrics`` the ``metrics.jsonl``
    rows; ``adapter`` the final adapter directory, or None before the run ends. Open an existing
    one with ``Run.load(path)``."""

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

    @property
    def adapter(self) -> Path | None:
        """The final adapter (PEFT format), or None while the run has none."""
        p = RunDir(self.path).adapter
        return p if p.is_dir() else None

    # -- metrics -------------------------------------------------------------------------------
    @property
    def metrics(self) -> list[dict]:
        """The ``metrics.jsonl`` rows in order: train rows (``step``, ``loss``, ``lr`` ...), eval
        rows (``eval_loss`` ...) and voice-probe rows."""
        return self.rows

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


# -- values as shown ----------------------------------------------------------------------------------
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
