"""``manifest.json`` itself: building it at the start of a run, completing it at the end
(:class:`ManifestWriter`, a run callback), reading it back, comparing two
(:func:`differences`), and ``mindprint train --reproduce``."""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

from .. import __version__
from .. import config as C
from ..errors import MindprintError
from ..outputs import write_atomic
from ..tracking.base import RunInfo, flatten
from ..tracking.trackers import read_tracking
from .environment import device_info, git_info, now_iso, package_versions, platform_info
from .identity import WEIGHT_SUFFIXES, data_files, model_identity, tokenized_sha256

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


# -- the manifest --------------------------------------------------------------------------------
def build(info: RunInfo) -> dict:
    cfg = info.config
    return {
        "format_version": FORMAT_VERSION,
        "mindprint": {"version": __version__, "git": git_info()},
        "versions": package_versions(),
        "platform": platform_info(),
        "device": device_info(info.device),
        "backend": info.backend,
        "seeds": {"train.seed": cfg.train.seed},
        "config": cfg.to_dict(),
        "data": {
            "files": data_files(cfg),
            "tokenized": {"train_sha256": tokenized_sha256(info.train),
                          "eval_sha256": tokenized_sha256(info.eval),
                          "train_examples": len(info.train), "eval_examples": len(info.eval)},
        },
        "model": model_identity(info.model_spec, info.model_kind, info.model_path),
        "run": {"output_dir": str(info.run_dir), "command": list(sys.argv),
                "pid": os.getpid(), "started_at": now_iso(), "ended_at": None,
                "status": "running", "stopped": None, "steps": info.step, "error": None},
    }


def load(run_dir: str | Path) -> dict:
    p = Path(run_dir)
    if not p.exists():
        raise MindprintError(f"{p}: no such run directory")
    m = p / MANIFEST if p.is_dir() else p
    if not m.is_file():
        raise MindprintError(f"{p}: no {MANIFEST} (runs from before manifests cannot be reproduced "
                             "this way; train from its config.yaml instead)")
    try:
        return json.loads(m.read_text(encoding="utf-8"))
    except ValueError as e:
        raise MindprintError(f"{m}: not valid JSON ({e})") from None


def _short(v) -> str:
    if isinstance(v, str) and len(v) in (40, 64) and all(c in "0123456789abcdef" for c in v):
        return v[:12]                                  # a git commit or a sha256
    return json.dumps(v) if not isinstance(v, str) else v


def differences(old: dict, new: dict) -> list[str]:
    """One line per difference that can change a run's numbers (old → new)."""
    out: list[str] = []

    def cmp(what: str, a, b) -> None:
        if a != b:
            out.append(f"{what}: {_short(a)} → {_short(b)}")

    og, ng = (old.get("mindprint") or {}).get("git"), (new.get("mindprint") or {}).get("git")
    if og and ng:
        cmp("git commit", og.get("commit"), ng.get("commit"))
        if ng.get("dirty") or og.get("dirty"):
            cmp("git working tree dirty", og.get("dirty"), ng.get("dirty"))
    ov, nv = old.get("versions", {}), new.get("versions", {})
    for k in sorted(set(ov) | set(nv)):
        cmp(f"version of {k}", ov.get(k), nv.get(k))
    op, np_ = old.get("platform", {}), new.get("platform", {})
    for k in ("system", "machine"):
        cmp(f"platform {k}", op.get(k), np_.get(k))
    od, nd = old.get("device", {}), new.get("device", {})
    cmp("device", od.get("device"), nd.get("device"))
    cmp("device name", od.get("name"), nd.get("name"))
    cmp("backend", old.get("backend"), new.get("backend"))
    # the config, except where the run is written
    oc, nc = flatten(old.get("config", {})), flatten(new.get("config", {}))
    for k in sorted(set(oc) | set(nc)):
        if k != "output_dir":
            cmp(f"config {k}", oc.get(k), nc.get(k))
    # data files, matched by role and position
    ofiles = {(f["role"], f["index"]): f for f in old.get("data", {}).get("files", [])}
    nfiles = {(f["role"], f["index"]): f for f in new.get("data", {}).get("files", [])}
    for key in sorted(set(ofiles) | set(nfiles)):
        a, b = ofiles.get(key), nfiles.get(key)
        label = f"data.{key[0]}[{key[1]}]"
        if a is None or b is None:
            cmp(f"{label} file", a and a["path"], b and b["path"])
        elif b.get("sha256") is None:
            out.append(f"{label} {b['path']}: file is missing")
        elif a.get("path") != b.get("path"):
            same = "same contents" if a.get("sha256") == b.get("sha256") else (
                f"sha256 {_short(a.get('sha256'))} → {_short(b.get('sha256'))}")
            out.append(f"{label}: {a.get('path')} → {b['path']} ({same})")
        elif a.get("sha256") != b.get("sha256"):
            out.append(f"{label} {b['path']}: contents changed (sha256 {_short(a.get('sha256'))} "
                       f"→ {_short(b.get('sha256'))})")
    ot = old.get("data", {}).get("tokenized", {})
    nt = new.get("data", {}).get("tokenized", {})
    for split in ("train", "eval"):
        cmp(f"tokenized {split} data (sha256)", ot.get(f"{split}_sha256"), nt.get(f"{split}_sha256"))
        cmp(f"{split} examples", ot.get(f"{split}_examples"), nt.get(f"{split}_examples"))
    om, nm = old.get("model", {}), new.get("model", {})
    cmp("model weights (sha256)", om.get("weights_sha256"), nm.get("weights_sha256"))
    ofs, nfs = om.get("files", {}), nm.get("files", {})
    for name in sorted(set(ofs) | set(nfs)):
        if not name.endswith(WEIGHT_SUFFIXES):
            cmp(f"model file {name}", ofs.get(name), nfs.get(name))
    return out


class ManifestWriter:
    """The callback that writes manifest.json at start and completes it at the end.

    With ``reproduce_of`` (an earlier run's manifest), it also warns about every difference
    between that run and this one before the first step, and records them.
    """

    name = "manifest"

    def __init__(self, reproduce_of: dict | None = None, reproduce_dir: str | None = None):
        self.reproduce_of = reproduce_of
        self.reproduce_dir = reproduce_dir
        self.differences: list[str] = []
        self.data: dict | None = None        # built by on_start
        self.path: Path | None = None

    def _write(self) -> None:
        write_atomic(self.path, json.dumps(self.data, indent=2, default=str) + "\n")

    def on_start(self, info: RunInfo) -> None:
        self.path = info.run_dir / MANIFEST
        self.data = build(info)
        if info.resumed and self.path.exists():
            try:
                before = json.loads(self.path.read_text(encoding="utf-8"))
            except ValueError:
                before = {}
            run = before.get("run", {})
            self.data["run"]["started_at"] = run.get("started_at", self.data["run"]["started_at"])
            self.data["run"]["resumes"] = run.get("resumes", []) + [
                {"at": now_iso(), "step": info.step, "command": list(sys.argv)}]
            if before.get("reproduced_from"):
                self.data["reproduced_from"] = before["reproduced_from"]
        if self.reproduce_of is not None:
            self.differences = differences(self.reproduce_of, self.data)
            self.data["reproduced_from"] = {"run_dir": self.reproduce_dir,
                                            "differences": self.differences}
            if self.differences:
                info.log(f"warning: reproducing {self.reproduce_dir}: {len(self.differences)} "
                         "difference(s) from the original run")
                for line in self.differences:
                    info.log(f"warning:   {line}")
            else:
                info.log(f"reproducing {self.reproduce_dir}: versions, device, data and model "
                         "match the original run")
        self._write()

    def on_end(self, summary: dict, status: str) -> None:
        if self.data is None:       # the run failed before it started
            return
        run = self.data["run"]
        run.update(ended_at=now_iso(), status=status, stopped=summary.get("stopped"),
                   steps=summary.get("steps", run["steps"]), error=summary.get("error"))
        tracking = read_tracking(Path(run["output_dir"]))
        if tracking:
            self.data["tracking"] = tracking
        self._write()


# -- mindprint train --reproduce -----------------------------------------------------------------
def reproduce_config(run_dir: str | Path, overrides: list[str] | None = None,
                     output_dir: str | None = None):
    """(config, original manifest) to re-run ``run_dir``: its resolved config, then environment
    and ``--set`` overrides as for any config (each shows up as a difference), written to
    ``output_dir`` or ``RUN_DIR-reproduce``."""
    original = load(run_dir)
    if not isinstance(original.get("config"), dict):
        raise MindprintError(f"{run_dir}/{MANIFEST}: has no config")
    cfg = C.load(None, overrides, base=copy.deepcopy(original["config"]))
    cfg.output_dir = output_dir or f"{str(run_dir).rstrip('/').rstrip(os.sep)}-reproduce"
    if Path(cfg.output_dir).resolve() == Path(run_dir).resolve():
        raise MindprintError("--reproduce: the new run needs its own --output-dir, not the "
                             "original's")
    return cfg, original


def compare_outcome(run_dir: str | Path, summary: dict) -> list[str]:
    """The original run's headline numbers next to the reproduction's."""
    try:
        before = json.loads((Path(run_dir) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    lines = []
    for key in ("steps", "train_loss", "final_eval_loss", "best_eval_loss"):
        a, b = before.get(key), summary.get(key)
        if a is None and b is None:
            continue
        same = "same" if a == b else (f"Δ {b - a:+.3g}" if isinstance(a, (int, float))
                                      and isinstance(b, (int, float)) else "differs")
        lines.append(f"{key}: original {a}, reproduction {b} ({same})")
    return lines
