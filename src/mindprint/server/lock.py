"""One server per workspace: ``WORKSPACE/serve.lock``, held with ``flock`` for the server's life.

Two servers on one workspace would both reconcile "running" jobs (the second marks the first's
live jobs interrupted) and both claim queued jobs. The lock is an advisory ``flock`` on an open
file: the kernel drops it when the process ends, however it ends (a SIGKILLed server leaves no
stale lock), and job subprocesses do not inherit it (``close_fds``). The file holds the holder's
pid and address, for the refusal message only.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from ..errors import MindprintError

LOCK_NAME = "serve.lock"


class WorkspaceBusy(MindprintError):
    """Another ``mindprint serve`` holds this workspace."""


class WorkspaceLock:
    def __init__(self, workspace: Path, address: str = ""):
        self.path = Path(workspace) / LOCK_NAME
        self.address = address
        self._fd: int | None = None

    def acquire(self) -> "WorkspaceLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 400).decode("utf-8", "replace").strip()
            os.close(fd)
            raise WorkspaceBusy(f"workspace {self.path.parent} is in use by another mindprint "
                                f"serve ({holder or 'holder unknown'}); stop that server, or "
                                "give this one another --workspace") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}{', ' + self.address if self.address else ''}, since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __del__(self):          # an app dropped without its shutdown (tests) lets go too
        self.release()
