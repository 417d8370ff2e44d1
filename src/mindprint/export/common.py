"""Output paths: refuse early when a path cannot be written, write files atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from ..errors import MindprintError


def check_writable(path: str | Path, *, overwrite: bool = False, kind: str = "file") -> Path:
    """Fail before any heavy work if ``path`` cannot be created; create nothing.

    The nearest existing ancestor must be a writable directory (missing parents are created
    later, at write time, so a refused command leaves no empty directories behind).
    """
    p = Path(path).expanduser()
    if p.exists() and not overwrite:
        raise MindprintError(f"{p}: already exists; pass --overwrite to replace it")
    if p.exists() and p.is_dir() != (kind == "directory"):
        have = "a directory" if p.is_dir() else "a file"
        raise MindprintError(f"{p}: is {have}; expected a {kind} path")
    anc = p.parent
    while not anc.exists():
        if anc.parent == anc:
            break
        anc = anc.parent
    if not anc.is_dir():
        raise MindprintError(f"{p}: cannot write here ({anc} is not a directory)")
    try:      # os.access says yes to root everywhere; creating a file is the real test
        fd, probe = tempfile.mkstemp(prefix=".mindprint-write-test-", dir=anc)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise MindprintError(f"{p}: cannot write here ({anc}: {e.strerror or e})") from None
    return p


@contextlib.contextmanager
def atomic_file(final: Path):
    """Yield a temporary path beside ``final``; it becomes ``final`` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
