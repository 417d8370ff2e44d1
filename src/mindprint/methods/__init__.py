"""Method glue: one object per training method, injected into a backend's loop."""

from __future__ import annotations

from ..errors import ConfigError

IMPLEMENTED = {"sft": "torch"}


def get_method(cfg):
    if cfg.method == "sft":
        from .sft import SFTMethod

        return SFTMethod(cfg)
    raise ConfigError(f"method '{cfg.method}' is not available yet in this version; "
                      f"available: {', '.join(sorted(IMPLEMENTED))}")
