"""User-facing errors.

Anything a user can cause (a missing file, a bad config key, a malformed data line) raises a
subclass of :class:`MindprintError`. The CLI prints its message on one line and exits non-zero,
without a traceback. Programming errors stay ordinary exceptions so they do show a traceback.
"""

from __future__ import annotations


class MindprintError(Exception):
    """A mistake the user can fix; ``str(err)`` is the whole message."""

    exit_code = 2


class ConfigError(MindprintError):
    """A config file, key or value is wrong."""


class DataError(MindprintError):
    """A data file is wrong. ``problems`` holds one ``file:line: field: what`` string each."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems or [])


class ModelError(MindprintError):
    """A model spec cannot be resolved or loaded."""


class TrainingStopped(MindprintError):
    """Training stopped for a reason the user must see (NaN loss, ...)."""

    exit_code = 3
