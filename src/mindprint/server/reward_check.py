"""Which ``grpo.rewards`` names a web request may use, decided without importing anything.

A ``"module:function"`` reward runs in the training job with (prompt, completion, record): a
request that could name any importable function could run ``subprocess:run`` on its prompts.
Importing a module to check it (``importlib.util.find_spec("a.b")`` imports ``a``) would already
run the package's import-time code in the server. So the check only reads metadata and the file
system:

* built-in rewards (:data:`mindprint.reward_names.BUILTINS`): always;
* functions registered by an installed distribution under the entry-point group
  ``mindprint.rewards`` (the entry point's value, ``package.module:function``, is the name to
  use), and names given to ``mindprint serve --reward`` (an allow-list): always;
* on a loopback server only (the person at the keyboard could run the code anyway): a module
  found on ``sys.path`` outside the standard library, the workspace and the server's working
  directory. Located by walking the path entries for ``a/b/c.py`` (or a package directory), the
  way the import system would, without executing it.

Everything else is refused with the reason and what to do instead.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import sys
import sysconfig
from pathlib import Path

from ..reward_names import BUILTINS

ENTRY_POINT_GROUP = "mindprint.rewards"


def registered() -> set[str]:
    """``module:function`` values of the installed ``mindprint.rewards`` entry points."""
    eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    return {ep.value.replace(" ", "") for ep in eps}


def _stdlib_dirs() -> list[Path]:
    paths = sysconfig.get_paths()
    return [Path(paths[k]).resolve() for k in ("stdlib", "platstdlib") if paths.get(k)]


def locate(module: str) -> Path | None:
    """The file (or package directory) ``module`` would be imported from, found by reading the
    directories on ``sys.path`` only; None when not found there (built-in, frozen, or absent)."""
    parts = module.split(".")
    dirs = [Path(p or ".") for p in sys.path]
    found = None
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        found, next_dirs = None, []
        for d in dirs:
            pkg = d / part
            if (pkg / "__init__.py").is_file():
                found, next_dirs = pkg, [pkg]
                break
            hits = [d / f"{part}{sfx}" for sfx in importlib.machinery.all_suffixes()]
            hit = next((h for h in hits if h.is_file()), None)
            if hit is not None:
                found = hit
                break
            if pkg.is_dir():                          # a namespace package: keep looking
                next_dirs.append(pkg)
                found = found or pkg
        if found is None:
            return None
        if not last:
            if found.is_file():                       # a module has no submodules
                return None
            dirs = next_dirs or [found]
    return found.resolve()


def reward_problems(names: list[str], *, loopback: bool, allowed: list[str],
                    forbidden_dirs: list[Path]) -> list[str]:
    """``config: grpo.rewards: …`` problems for the names a request may not use."""
    problems = []
    extra = None
    for name in names:
        if name in BUILTINS or ":" not in name:      # built-ins; other bare names: the schema's
            continue
        if name in allowed:
            continue
        if extra is None:
            extra = registered()
        if name in extra:
            continue
        where = f"config: grpo.rewards: '{name}'"
        if not loopback:
            problems.append(f"{where}: this server accepts built-in rewards "
                            f"({', '.join(BUILTINS)}), functions registered under the "
                            f"'{ENTRY_POINT_GROUP}' entry point, and those given to mindprint "
                            "serve --reward")
            continue
        mod = name.partition(":")[0]
        if mod.split(".")[0] in sys.builtin_module_names:
            problems.append(f"{where}: '{mod}' is built into Python, not a reward module")
            continue
        path = locate(mod)
        if path is None:
            problems.append(f"{where}: module '{mod}' is not installed on this server (pip "
                            "install it, or register the function with mindprint serve --reward)")
            continue
        installed = "site-packages" in path.parts or "dist-packages" in path.parts
        if not installed and any(path.is_relative_to(d) for d in _stdlib_dirs()):
            problems.append(f"{where}: '{mod}' is a standard-library module, not a reward "
                            "module")
            continue
        for d in forbidden_dirs:
            if path.is_relative_to(d.resolve()):
                problems.append(f"{where}: module '{mod}' is a file in {d}, not an installed "
                                "module; install it (pip install) to use it from the web UI")
                break
    return problems
