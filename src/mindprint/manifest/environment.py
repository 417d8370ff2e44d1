"""Where a run ran: Mindprint's version and git commit, the versions of the libraries that change
numbers, the platform and the device."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from .. import __version__

PACKAGES = ("torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers", "trl",
            "mlx", "mlx-lm", "numpy", "pydantic", "gguf")


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


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
    pkg = Path(__file__).resolve().parents[1]          # src/mindprint
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
