"""The training methods, in one table that everything else reads.

Config validation (``method`` in :mod:`mindprint.config`), the CLI's fail-fast checks, the
curriculum (what a topic trains on, which accuracy its gate reads), the web UI's form
(``/api/info``) and each backend's loop derive from :data:`METHODS`; add a method here and
nowhere else lists it.

This is a leaf module: it imports nothing but :mod:`mindprint.errors`, so that ``config`` (the
layer below ``data`` and ``methods``) may import it, and it stays at the package top for that
reason. Method classes are named by ``"module:Class"`` under :mod:`mindprint.methods` and imported
only when a run builds one (:func:`mindprint.methods.get_method`).

Fields of a :class:`MethodSpec`:

* ``impl`` — ``"module:Class"`` under ``mindprint.methods``; the class is built as ``Class(cfg)``.
* ``trains_on`` — the kinds of record the method trains on: ``chat`` (ChatRecord),
  ``text`` (TextRecord: every token trained), ``preference`` (PreferenceRecord), ``kto``
  (KTORecord), ``prompt`` (PromptRecord) of
  :mod:`mindprint.data.records`; the first is what the curriculum converts replayed records to.
* ``reference`` — what the method needs from the adapter-disabled base: ``"none"``; ``"logps"``
  (sequence log-probs, computed once and cached, or live per step); ``"logits"`` (the base's
  next-token distribution, a live pass per micro-batch); ``"optional"`` (only when its config
  asks, e.g. ``grpo.beta > 0``).
* ``options`` — config sections holding the method's own options (the web UI shows them).
* ``backends`` — backends whose loop runs it.
* ``pref_metric`` — the evaluation summary key the curriculum gate reads as preference accuracy:
  the implicit reward's (log-ratio to the base) for reference methods, the average log-prob's
  for reference-free ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError

BACKENDS = ("torch", "mlx")


@dataclass(frozen=True)
class MethodSpec:
    name: str
    impl: str
    trains_on: tuple[str, ...]
    reference: str
    options: tuple[str, ...] = ()
    backends: tuple[str, ...] = BACKENDS
    pref_metric: str = "implicit_accuracy"


METHODS: dict[str, MethodSpec] = {s.name: s for s in (
    MethodSpec("sft", "sft:SFTMethod", ("chat", "text"), "none"),
    MethodSpec("kl_sft", "kl_sft:KLSFTMethod", ("chat", "text"), "logits", ("kl",)),
    MethodSpec("dpo", "pairwise:PairMethod", ("preference",), "logps", ("dpo",)),
    MethodSpec("ipo", "pairwise:PairMethod", ("preference",), "logps", ("dpo",)),
    MethodSpec("orpo", "pairwise:PairMethod", ("preference",), "none", ("orpo",),
               pref_metric="avg_logp_accuracy"),
    MethodSpec("kto", "kto:KTOMethod", ("kto", "preference"), "logps", ("kto",)),
    MethodSpec("simpo", "pairwise:PairMethod", ("preference",), "none", ("simpo",),
               pref_metric="avg_logp_accuracy"),
    MethodSpec("grpo", "grpo:GRPOMethod", ("prompt",), "optional", ("grpo",)),
)}

NAMES: tuple[str, ...] = tuple(METHODS)


def spec(name: str) -> MethodSpec:
    """The method's entry; ConfigError naming the known ones for any other name."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"method '{name}' is not available in this version; available: "
                          f"{', '.join(NAMES)}") from None


def on_backend(backend: str) -> tuple[str, ...]:
    """The methods ``backend``'s loop runs, in table order."""
    return tuple(n for n, s in METHODS.items() if backend in s.backends)


def check_backend(name: str, backend: str) -> None:
    """ConfigError unless ``backend`` runs method ``name``."""
    if backend not in spec(name).backends:
        raise ConfigError(f"method '{name}' does not run on the {backend} backend yet; on "
                          f"{backend}: {', '.join(on_backend(backend))} (or use backend: "
                          f"{' or '.join(b for b in spec(name).backends)})")
