"""The public Python API, one module per task; :mod:`mindprint` exposes its stable names lazily.

========================  =====================================================================
``mindprint.train``       config (object, dict or YAML path) + keyword overrides → :class:`Run`
``mindprint.load``        adapter / run directory / model → :class:`Model` with ``.generate()``
``mindprint.evaluate``    base vs tuned report (``mindprint eval``), as a dict
``mindprint.voice_score`` how much texts sound like a person (``mindprint eval voice-score``)
``mindprint.export``      merged checkpoint, GGUF file, or the adapter in PEFT / mlx-lm format
``mindprint.datasets``    ``validate``, ``stats``, ``convert``, ``mix``, ``split`` data files
========================  =====================================================================

Every function runs the same code as its ``mindprint`` command (the CLI's ``train`` and
``generate`` call :mod:`.train` and :mod:`.model` themselves; the other commands and these
functions share the library function under both), so a notebook and a shell give the same
results. User mistakes raise :class:`mindprint.errors.MindprintError` subclasses with a
one-line message; nothing here prints a traceback for them.

Layering: ``api`` sits between the entry point (``cli``) and the apps (training, evaluate,
export, data); it holds no algorithm of its own. Modules that need torch import it inside the
function that runs a model, so ``import mindprint`` and ``mindprint.datasets.validate`` stay
light.
"""
