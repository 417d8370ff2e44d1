"""Method glue: one object per training method, injected into a backend's loop."""

from __future__ import annotations

from ..errors import ConfigError

# method: (module, class) — imported on use, so a CLI call loads only what it runs
REGISTRY = {
    "sft": ("sft", "SFTMethod"),
    "kl_sft": ("kl_sft", "KLSFTMethod"),
    "dpo": ("pairwise", "PairMethod"),
    "ipo": ("pairwise", "PairMethod"),
    "orpo": ("pairwise", "PairMethod"),
    "simpo": ("pairwise", "PairMethod"),
    "kto": ("kto", "KTOMethod"),
    "grpo": ("grpo", "GRPOMethod"),
}
IMPLEMENTED = {name: "torch" for name in REGISTRY}


def get_method(cfg):
    if cfg.method not in REGISTRY:
        raise ConfigError(f"method '{cfg.method}' is not available yet in this version; "
                          f"available: {', '.join(sorted(IMPLEMENTED))}")
    import importlib

    module, cls = REGISTRY[cfg.method]
    return getattr(importlib.import_module(f".{module}", __name__), cls)(cfg)
