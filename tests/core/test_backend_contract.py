"""Both backends implement the whole Backend Protocol (backends/base.py): every member present,
every method with the Protocol's parameters (same names, kinds and defaults; an implementation may
add keyword-only parameters with defaults), and instances pass the runtime isinstance check. The
single-process world (LocalDist) is a Dist. Methods use nothing else of a backend."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from mindprint.backends.base import Backend, Dist
from mindprint.backends.common import LOCAL, padded_share
from mindprint.backends.mlx.model import MLXBackend
from mindprint.backends.torch.backend import TorchBackend

METHODS_DIR = Path(__file__).resolve().parents[2] / "src" / "mindprint" / "methods"


def _members(proto) -> tuple[set[str], set[str]]:
    """(method names, data member names) the Protocol declares."""
    methods = {n for n, v in vars(proto).items()
               if callable(v) and not n.startswith("_")}
    props = {n for n, v in vars(proto).items() if isinstance(v, property)}
    data = set(getattr(proto, "__annotations__", {})) | props
    return methods - data, data


def _compatible(proto_fn, impl_fn) -> list[str]:
    """What in ``impl_fn``'s signature breaks ``proto_fn``'s (empty: compatible)."""
    want = list(inspect.signature(proto_fn).parameters.values())
    got = inspect.signature(impl_fn).parameters
    problems = []
    for p in want:
        q = got.get(p.name)
        if q is None:
            problems.append(f"missing parameter {p.name}")
        elif q.kind != p.kind:
            problems.append(f"{p.name}: {q.kind.description} instead of {p.kind.description}")
        elif q.default != p.default:
            problems.append(f"{p.name}: default {q.default!r} instead of {p.default!r}")
    for name, q in got.items():
        if name not in {p.name for p in want}:
            if q.kind != inspect.Parameter.KEYWORD_ONLY or q.default is inspect.Parameter.empty:
                problems.append(f"extra parameter {name} without a keyword-only default")
    return problems


@pytest.mark.parametrize("cls", [TorchBackend, MLXBackend], ids=lambda c: c.__name__)
def test_every_protocol_method_with_a_compatible_signature(cls):
    methods, _ = _members(Backend)
    assert {"batch", "token_logps", "token_logps_and_kl", "group_logps", "completion_logps",
            "sample_completions", "generate", "disabled_adapter", "inference", "no_grad",
            "autocast", "weights_hash", "save_adapter", "load_adapter"} <= methods
    for name in sorted(methods):
        impl = getattr(cls, name, None)
        assert callable(impl), f"{cls.__name__}.{name} is missing"
        assert _compatible(getattr(Backend, name), impl) == [], f"{cls.__name__}.{name}"


def test_signature_check_catches_a_mismatch():
    class Bad:
        def completion_logps(self, seqs, masks, temperature=1.0, entropy=False): ...

        def save_adapter(self, path, meta, extra): ...

    assert _compatible(Backend.completion_logps, Bad.completion_logps)
    assert _compatible(Backend.save_adapter, Bad.save_adapter) == [
        "extra parameter extra without a keyword-only default"]


def test_torch_instance_is_a_backend(tiny_model_dir, tokenizer):
    from mindprint.backends.torch.load import load_base
    from mindprint.models import resolve

    model, tok = load_base(resolve(tiny_model_dir))
    b = TorchBackend(model, tok)
    assert isinstance(b, Backend) and isinstance(b.dist, Dist)
    assert b.dist.world_size == 1 and b.dist.is_main and b.group_layout in ("shared_prompt", "rows")
    assert b.xp.name == "torch" and b.device.type in ("cpu", "cuda", "mps")


def test_mlx_instance_is_a_backend(tokenizer):
    # MLXBackend stores its model; the contract's attributes exist without loading one
    b = MLXBackend(SimpleNamespace(), tokenizer, None)
    assert isinstance(b, Backend) and isinstance(b.dist, Dist)
    assert b.xp.name == "mlx" and b.group_layout == "rows" and b.device.type.startswith("mlx-")


def test_local_dist_is_a_world_of_one():
    assert isinstance(LOCAL, Dist)
    assert LOCAL.gather({"a": 1}) == [{"a": 1}] and LOCAL.broadcast(3) == 3
    assert LOCAL.sum_floats([1, 2.5]) == [1.0, 2.5] and LOCAL.any_flags(False, True) == [False, True]
    assert LOCAL.share([1, 2, 3]) == [1, 2, 3] and LOCAL.sum_dicts({"x": 1.0}) == {"x": 1.0}
    assert padded_share(LOCAL, [[0], [1]]) == ([[0], [1]], [])
    fsdp = SimpleNamespace(world_size=2, rank=1, fsdp=True,
                           share=lambda items: items[1::2])
    assert padded_share(fsdp, [[0], [1], [2]]) == ([[1]], [[0]])   # 2 passes on every rank


def test_methods_use_no_backend_probes_and_no_framework():
    for path in sorted(METHODS_DIR.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"hasattr\(backend|getattr\(backend", text), path.name
        assert not re.search(r"^(import|from) (torch|mlx)", text, re.M), path.name
