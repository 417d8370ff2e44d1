"""Stopping a run cleanly: the first Ctrl-C or SIGTERM asks the loop to save and stop at the end
of the step (:class:`StopFlag`); the loop then raises :class:`Interrupted` with the summary, so
the CLI exits 130 and ``--resume`` continues from that checkpoint."""

from __future__ import annotations

import signal

from ..errors import MindprintError


class StopFlag:
    """First Ctrl-C / SIGTERM asks the loop to save and stop at the end of the step; a second
    Ctrl-C interrupts at once (without touching the last good checkpoint)."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def _handler(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handler)
            except ValueError:   # not the main thread
                pass
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


class Interrupted(MindprintError):
    exit_code = 130

    def __init__(self, summary: dict):
        super().__init__(f"interrupted at step {summary['steps']}: checkpoint and adapter saved "
                         f"in {summary['output_dir']}; continue with --resume")
        self.summary = summary
