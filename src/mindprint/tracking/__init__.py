"""Run callbacks: the manifest writer and the experiment trackers a config's ``report_to`` names.

The training loop builds the list (:func:`mindprint.training.callbacks.default_callbacks`: the
manifest writer first, then these trackers) and calls it through
:class:`~mindprint.tracking.base.CallbackList`; see :mod:`mindprint.tracking.base` for the hooks.
"""

from __future__ import annotations

from .base import Callback, CallbackList, RunInfo

__all__ = ["Callback", "CallbackList", "RunInfo"]
