"""The import contracts in pyproject.toml ([tool.importlinter], run by `make test` before pytest):
the package keeps them, and each contract really catches what it is there to catch — checked by
planting one violation of each kind in a copy of the package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "mindprint"
LINT = Path(sys.executable).with_name("lint-imports")     # required: the dev extra, `make install`


def lint(src_parent: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src_parent)}
    return subprocess.run([str(LINT), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
                          capture_output=True, text=True, env=env, cwd=src_parent, timeout=120)


def test_the_package_keeps_every_contract():
    out = lint(SRC.parent)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}  # planted\n", encoding="utf-8")


def test_each_contract_catches_a_planted_violation(tmp_path):
    pkg = tmp_path / "mindprint"
    shutil.copytree(SRC, pkg, ignore=shutil.ignore_patterns("__pycache__", "static"))
    _append(pkg / "config" / "loading.py", "from .. import cli")       # upward: config -> apps
    _append(pkg / "backends" / "mlx" / "__init__.py", "import torch")    # mlx backend -> torch
    _append(pkg / "methods" / "__init__.py", "import mlx_lm")            # method -> framework
    _append(pkg / "evaluate" / "summary.py", "from . import runner")    # cycle inside a package
    (pkg / "stray.py").write_text('"""A new module without a layer."""\n', encoding="utf-8")

    out = lint(tmp_path)
    text = " ".join(out.stdout.split())          # the report wraps long lines
    assert out.returncode != 0
    assert "0 kept, 4 broken" in text, out.stdout
    assert "mindprint.config is not allowed to import mindprint.cli" in text
    assert "not listed as layers: - mindprint.stray" in text
    assert "mindprint.backends.mlx is not allowed to import torch" in text
    assert "mindprint.methods is not allowed to import mlx_lm" in text
    assert "No cycles are allowed in mindprint.evaluate" in text and ".summary -> .runner" in text
