"""The run directory: config.yaml, metrics.jsonl/csv, summary.json, checkpoints/, adapter/.

Backend-agnostic: every backend's loop writes through this, so runs look the same on disk.
Every file is written to a temporary name and renamed, so a kill never leaves half a file.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
from pathlib import Path

from .errors import ModelError

CKPT_RE = re.compile(r"^step-(\d+)$")
# metric keys renamed since runs were written (old -> new); old run directories' metrics.jsonl,
# curriculum_state.json and eval report.json are read back under the new names
RENAMED_KEYS = {"voice_fidelity": "content_similarity",
                "base_voice_fidelity": "base_content_similarity"}


def current_keys(obj):
    """``obj`` (a JSON value) with :data:`RENAMED_KEYS` renamed at every depth; a new key already
    present wins over the old one."""
    if isinstance(obj, list):
        return [current_keys(x) for x in obj]
    if not isinstance(obj, dict):
        return obj
    out = {RENAMED_KEYS.get(k, k): current_keys(v) for k, v in obj.items() if k not in RENAMED_KEYS}
    for old, new in RENAMED_KEYS.items():
        if old in obj:
            out.setdefault(new, current_keys(obj[old]))
    return out


def write_atomic(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- paths ---------------------------------------------------------------------------------
    @property
    def metrics_jsonl(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    def has_run(self) -> bool:
        return self.metrics_jsonl.exists() or self.checkpoints.exists() or self.adapter.exists()

    def clear(self) -> None:
        for name in ("checkpoints", "adapter", "adapter-mlx", "metrics.jsonl", "metrics.csv",
                     "summary.json",
                     "config.yaml",
                     # mindprint.tracking / mindprint.report outputs of the replaced run
                     "manifest.json", "tracking.json", "tensorboard", "mlruns", "report.html",
                     "report"):
            p = self.root / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    # -- metrics -------------------------------------------------------------------------------
    def append_metrics(self, row: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")
            f.flush()

    def read_metrics(self) -> list[dict]:
        if not self.metrics_jsonl.exists():
            return []
        rows = []
        for line in self.metrics_jsonl.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(current_keys(json.loads(line)))
            except json.JSONDecodeError:
                break  # a line cut by a kill: everything before it is good
        return rows

    def truncate_metrics(self, after_step: int) -> None:
        """On resume: drop rows logged after the checkpoint we resume from."""
        rows = [r for r in self.read_metrics() if r.get("step", 0) <= after_step]
        write_atomic(self.metrics_jsonl, "".join(json.dumps(r) + "\n" for r in rows))

    def write_metrics_csv(self) -> None:
        rows = self.read_metrics()
        cols: list[str] = []
        for r in rows:
            for k in r:
                if k not in cols:
                    cols.append(k)
        tmp = self.root / f".metrics.csv.tmp-{os.getpid()}"
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            for r in rows:
                w.writerow(r)
        os.replace(tmp, self.root / "metrics.csv")

    def write_json(self, name: str, data: dict) -> None:
        write_atomic(self.root / name, json.dumps({k: _clean(v) for k, v in data.items()},
                                                  indent=2) + "\n")

    # -- checkpoints ---------------------------------------------------------------------------
    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:07d}"

    def list_checkpoints(self) -> list[tuple[int, Path]]:
        if not self.checkpoints.exists():
            return []
        out = []
        for p in self.checkpoints.iterdir():
            m = CKPT_RE.match(p.name)
            if m and (p / "state.json").exists():
                out.append((int(m.group(1)), p))
        return sorted(out)

    def latest_checkpoint(self) -> Path | None:
        ck = self.list_checkpoints()
        return ck[-1][1] if ck else None

    def prune_checkpoints(self, keep_last: int, best_step: int | None) -> None:
        ck = self.list_checkpoints()
        keep = {s for s, _ in ck[-keep_last:]}
        if best_step is not None:
            keep.add(best_step)
        for s, p in ck:
            if s not in keep:
                shutil.rmtree(p, ignore_errors=True)
        # leftovers of a killed save
        if self.checkpoints.exists():
            for p in self.checkpoints.iterdir():
                if p.name.startswith("."):
                    shutil.rmtree(p, ignore_errors=True)


# -- --adapter: an adapter directory or a run directory ----------------------------------------
ADAPTER_FILE = "adapter_config.json"      # PEFT and mlx-lm adapters both have it


def adapter_dir(path: str | Path) -> Path:
    """The adapter an ``--adapter PATH`` means, for every command that takes one.

    * an adapter directory (``adapter_config.json``: PEFT or mlx-lm): itself;
    * a run directory (``mindprint train``'s ``output_dir``, a curriculum's, or one of its
      ``topics/NN-name``): its ``adapter/``, the final adapter in PEFT format;
    * a run directory without ``adapter/`` yet (still training, or killed before the end): refused,
      naming its last checkpoint and how to finish the run — a checkpoint holds the trainable
      weights and optimizer state for ``--resume``, not a loadable adapter.

    Raises :class:`~mindprint.errors.ModelError` with a one-line reason otherwise.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelError(f"{path}: no such adapter or run directory")
    if not p.is_dir():
        raise ModelError(f"{path}: not a directory; --adapter takes an adapter directory or a run "
                         "directory")
    if (p / ADAPTER_FILE).exists():
        return p
    run = RunDir(p)
    if (run.adapter / ADAPTER_FILE).exists():
        return run.adapter
    is_run = run.has_run() or (p / "config.yaml").exists() or (p / "curriculum_state.json").exists()
    if not is_run:
        raise ModelError(f"{path}: neither an adapter directory (no {ADAPTER_FILE}) nor a run "
                         "directory (no adapter/)")
    last = run.latest_checkpoint()
    if last is None:
        raise ModelError(f"{path}: this run has no adapter yet and no checkpoint (still starting, "
                         "or it failed early; see its log)")
    raise ModelError(f"{path}: this run has no adapter/ yet (still training, or stopped without "
                     f"saving it); its last checkpoint is {last.name}. A checkpoint is not an "
                     f"adapter: finish the run with  mindprint train {p / 'config.yaml'} --resume "
                     "(Ctrl-C then saves the adapter), and pass the run directory again")
