"""``manifest.json``: everything needed to tell whether two runs could have given the same numbers.

Written at the start of a run (status ``running``) and completed at its end (``completed``,
``interrupted`` or ``failed``, with the end time and the stop reason), so even a killed run leaves
one. It holds:

* Mindprint's version and, when run from a git checkout, the commit (and whether it was dirty);
* versions of the libraries that change numbers (torch, transformers, peft, mlx, mlx-lm, trl ...);
* platform and device; the seed; the resolved config;
* SHA-256 of every data file, and of the tokenized dataset (every token id and loss-mask bit, so a
  tokenizer or chat-template change shows even when the files did not change);
* the base model's identity: spec, kind, directory, and a hash of its weight files. Hashing a
  135M-parameter model reads ~0.5 GB, so file hashes are cached by (path, size, mtime) in
  ``$MINDPRINT_CACHE/file-hashes.json``: a rerun costs a ``stat``.

:func:`differences` compares two manifests; ``mindprint train --reproduce RUN`` prints each
difference as a warning before it trains.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata as md
import json
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from . import __version__
from .errors import MindprintError
from .tracking.base import RunInfo, flatten

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
PACKAGES = ("torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers", "trl",
            "mlx", "mlx-lm", "numpy", "pydantic", "gguf")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".npz")
# files that change what the model computes besides its weights
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "chat_template.jinja", "tokenizer.model")


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


# -- hashing -------------------------------------------------------------------------------------
def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _hash_cache_path() -> Path:
    from .models import cache_dir

    return cache_dir() / "file-hashes.json"


def cached_sha256(path: str | Path) -> str:
    """sha256 of a (large) file, remembered by (absolute path, size, mtime_ns)."""
    p = Path(path).resolve()
    st = p.stat()
    key, stamp = str(p), [st.st_size, st.st_mtime_ns]
    cache_file = _hash_cache_path()
    try:
        cache = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    hit = cache.get(key)
    if isinstance(hit, list) and len(hit) == 3 and hit[:2] == stamp:
        return hit[2]
    digest = sha256_file(p)
    cache = {k: v for k, v in cache.items() if Path(k).exists()}   # forget deleted files
    cache[key] = stamp + [digest]
    try:
        from .outputs import write_atomic

        write_atomic(cache_file, json.dumps(cache, indent=0))
    except OSError:
        pass   # a read-only cache only costs time
    return digest


_SKIP_FIELDS = {"ref", "source", "where"}   # cached tensors, raw messages, file:line labels


def _canon(obj):
    """A JSON-able view of a prepared example: its token ids, masks and labels."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            if f.name in _SKIP_FIELDS:
                continue
            v = _canon(getattr(obj, f.name))
            if v is not _SKIP:
                out[f.name] = v
        return out
    if isinstance(obj, (list, tuple)):
        return [_canon(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _canon(v) for k, v in obj.items()}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return _SKIP    # tensors and other caches are not data


_SKIP = object()


def tokenized_sha256(examples) -> str:
    """sha256 over every prepared example (rendered ids + loss masks, or preference groups)."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps(_canon(ex), separators=(",", ":"), sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()


def data_files(cfg) -> list[dict]:
    out = []
    for role in ("train", "eval"):
        for i, path in enumerate(getattr(cfg.data, role)):
            p = Path(path)
            entry = {"role": role, "index": i, "path": str(path), "abs_path": str(p.resolve())}
            if p.is_file():
                entry.update(bytes=p.stat().st_size, sha256=sha256_file(p))
            else:
                entry.update(bytes=None, sha256=None)
            out.append(entry)
    return out


def model_identity(spec: str, kind: str, path: str) -> dict:
    """Spec, kind, directory and hashes of the files that define the model."""
    ident: dict = {"spec": spec, "kind": kind, "path": path, "weights_sha256": None, "files": {}}
    d = Path(path)
    if not d.is_dir():
        ident["note"] = "not a local directory: weights not hashed"
        return ident
    weights = sorted(p for p in d.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    for p in weights:
        ident["files"][p.name] = cached_sha256(p)
    if weights:
        h = hashlib.sha256()
        for p in weights:
            h.update(f"{p.name}:{ident['files'][p.name]}\n".encode())
        ident["weights_sha256"] = h.hexdigest()
    for name in MODEL_FILES:
        if (d / name).is_file():
            ident["files"][name] = sha256_file(d / name)
    source = d / "mindprint-source.json"       # a converted GGUF names where it came from
    if source.is_file():
        try:
            ident["source"] = json.loads(source.read_text(encoding="utf-8"))
        except ValueError:
            pass
    return ident


# -- environment ---------------------------------------------------------------------------------
def package_versions() -> dict:
    out = {"python": platform.python_version(), "mindprint": __version__}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def git_info() -> dict | None:
    """The commit of the checkout Mindprint runs from (None when installed from a wheel)."""
    pkg = Path(__file__).resolve().parent
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=pkg, capture_output=True,
                             text=True, timeout=5)
        if top.returncode != 0:
            return None
        root = Path(top.stdout.strip())
        if not (root / "src" / "mindprint").resolve() == pkg:   # a venv inside another repo
            return None
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip()),
            "root": str(root)}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: str) -> dict:
    info = {"device": device, "type": device.split(":")[0], "cpu": _cpu_name(),
            "cpu_count": os.cpu_count()}
    torch = sys.modules.get("torch")            # only asked of a backend that is loaded already
    if torch is not None and info["type"] == "cuda":
        try:
            idx = int(device.split(":")[1]) if ":" in device else 0
            info["name"] = torch.cuda.get_device_name(idx)
            info["cuda"] = torch.version.cuda
        except Exception:  # noqa: BLE001
            pass
    elif info["type"] == "cuda":
        info["name"] = None
    elif info["type"] in ("mps", "gpu"):
        info["name"] = f"Apple {platform.machine()}"
    else:
        info["name"] = info["cpu"]
    return info


def platform_info() -> dict:
    return {"system": platform.system(), "release": platform.release(),
            "machine": platform.machine(), "platform": platform.platform(),
            "host": socket.gethostname()}


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

    def _write(self) -> None:
        from .outputs import write_atomic

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
        if not hasattr(self, "data"):
            return
        from .tracking.trackers import read_tracking

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
    import copy

    from . import config as C

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
