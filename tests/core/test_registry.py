"""The method registry is the one list of methods: every consumer derives from it, and it stays a
leaf that imports nothing heavy (config imports it)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from mindprint import config as C
from mindprint import curriculum, registry
from mindprint.errors import ConfigError
from mindprint.methods import get_method


def _cfg(method: str, backend: str = "torch") -> C.Config:
    return C.from_dict({"method": method, "backend": backend, "data": {"train": ["t.jsonl"]}})


def test_consumers_derive_from_the_registry():
    assert C.METHODS == registry.NAMES == tuple(registry.METHODS)
    assert set(curriculum.TRAINS_ON) == set(curriculum.PREF_METRIC) == set(registry.NAMES)
    sections = set(C.Config.model_fields)
    for name, s in registry.METHODS.items():
        assert s.name == name
        assert [t.__name__ for t in curriculum.TRAINS_ON[name]] == \
            [curriculum._KINDS[k].__name__ for k in s.trains_on]
        assert set(s.options) <= sections, (name, s.options)
        assert set(s.backends) <= set(C.BACKENDS) and s.backends
        assert s.reference in ("none", "logps", "logits", "optional")


@pytest.mark.parametrize("name", registry.NAMES)
def test_every_entry_builds_its_method(name):
    method = get_method(_cfg(name))
    assert type(method).__name__ == registry.METHODS[name].impl.split(":")[1]
    assert method.name == name


def test_unknown_method_and_backend_are_config_errors(monkeypatch):
    with pytest.raises(ConfigError, match="method 'dpoo'.*available: sft, kl_sft"):
        registry.spec("dpoo")
    with pytest.raises(ConfigError, match="method"):
        _cfg("dpoo")                                   # config validation reads the same list
    registry.check_backend("grpo", "mlx")              # every method runs on both today
    monkeypatch.setitem(registry.METHODS, "kto",
                        dataclasses.replace(registry.METHODS["kto"], backends=("torch",)))
    assert "kto" not in registry.on_backend("mlx") and "kto" in registry.on_backend("torch")
    with pytest.raises(ConfigError, match=r"'kto' does not run on the mlx backend yet; on mlx: "
                                          r"sft, kl_sft, dpo, ipo, orpo, simpo, grpo \(or use "
                                          r"backend: torch\)"):
        registry.check_backend("kto", "mlx")


def test_registry_and_config_import_nothing_heavy():
    code = ("import sys, mindprint.registry, mindprint.config\n"
            "heavy = [m for m in ('torch', 'mlx', 'transformers', 'numpy', 'mindprint.methods') "
            "if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
