"""Run callbacks: the manifest writer and the experiment trackers a config's ``report_to`` names.

Backends build the list with :func:`default_callbacks` and call it through
:class:`~mindprint.tracking.base.CallbackList`; see :mod:`mindprint.tracking.base` for the hooks.
"""

from __future__ import annotations

from .base import Callback, CallbackList, RunInfo

__all__ = ["Callback", "CallbackList", "RunInfo", "default_callbacks"]


def default_callbacks(cfg, log=print, *, reproduce_of: dict | None = None,
                      reproduce_dir: str | None = None) -> list:
    """The manifest writer first, then one tracker per installed ``report_to`` entry."""
    from ..manifest import ManifestWriter
    from .trackers import make_trackers

    return [ManifestWriter(reproduce_of, reproduce_dir), *make_trackers(cfg.report_to, log)]
