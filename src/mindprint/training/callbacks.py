"""The run callbacks a training run gets by default: the manifest writer, then one tracker per
installed ``report_to`` entry.

The composition lives here, in the training layer, above both parts: ``manifest`` builds on
``tracking.base`` (the callback hooks), so ``tracking`` itself cannot also import ``manifest``.
"""

from __future__ import annotations

from ..manifest import ManifestWriter
from ..tracking.trackers import make_trackers


def default_callbacks(cfg, log=print, *, reproduce_of: dict | None = None,
                      reproduce_dir: str | None = None) -> list:
    """The manifest writer first (with the original run's manifest when reproducing one, to warn
    about differences), then the ``cfg.report_to`` trackers."""
    return [ManifestWriter(reproduce_of, reproduce_dir), *make_trackers(cfg.report_to, log)]
