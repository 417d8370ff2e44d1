"""Method glue: one object per training method, injected into a backend's loop.

Which methods exist, and which class implements each, is :data:`mindprint.registry.METHODS`;
a method's module is imported only when a run builds it, so a CLI call loads only what it runs.
"""

from __future__ import annotations

import importlib

from .. import registry


def get_method(cfg):
    """The method object of ``cfg.method`` (ConfigError naming the known methods otherwise)."""
    module, cls = registry.spec(cfg.method).impl.split(":")
    return getattr(importlib.import_module(f".{module}", __name__), cls)(cfg)
