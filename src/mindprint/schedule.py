"""How many optimizer steps a run takes: ``train.epochs`` or ``train.max_steps``.

The number of optimizer steps in one pass over the training data is only known once the data is
loaded (after validation, the eval split and curriculum filtering), so the trainer resolves it at
setup with :func:`resolve_steps` and writes the result into ``cfg.train.max_steps`` before the
schedule and the loop read it.

One epoch is what :class:`mindprint.data.batching.StepSampler` yields before it reshuffles: a step
consumes one step group of ``batch_size × grad_accum × world`` examples and the last incomplete
group of an epoch is dropped, so an epoch is ``max(1, n // group)`` steps (a file smaller than one
group is repeated to fill one step). ``epochs`` may be fractional; its step count is rounded up,
as the Hugging Face Trainer does (``ceil(num_train_epochs × steps_per_epoch)``).

Precedence is the HF Trainer's: an explicit ``max_steps`` wins over ``epochs`` (with a note when
they disagree); ``epochs`` alone decides; with neither, ``max_steps``'s default (200) applies. A
run that passes over a small file more than :data:`MANY_EPOCHS` times gets a warning: the adapter
is then likely to memorise its examples rather than learn the voice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MANY_EPOCHS = 20      # more passes than this over the training data earn a warning


@dataclass(frozen=True)
class Steps:
    steps: int                # optimizer steps to run
    per_epoch: int            # optimizer steps in one pass over the training data
    epochs: float             # passes over the training data those steps make
    warning: str | None       # for the log, or None


def steps_per_epoch(n_examples: int, batch_size: int, grad_accum: int, world: int = 1) -> int:
    """Optimizer steps in one epoch of ``n_examples`` (see the module docstring)."""
    group = batch_size * grad_accum * world
    return max(1, n_examples // group)


def resolve_steps(n_examples: int, batch_size: int, grad_accum: int, world: int,
                  epochs: float | None, max_steps: int | None, *, default_steps: int = 200) -> Steps:
    """Steps to run for ``epochs`` passes, or ``max_steps`` (None: not given by the user).

    >>> resolve_steps(100, 4, 2, 1, 3, None).steps      # 12 steps an epoch (4 examples dropped)
    36
    >>> resolve_steps(100, 4, 1, 1, 0.5, None).steps
    13
    """
    if n_examples < 1:
        raise ValueError("no training examples")
    per = steps_per_epoch(n_examples, batch_size, grad_accum, world)
    warning = None
    if max_steps is not None:
        steps = max_steps
        if epochs is not None and math.ceil(epochs * per) != max_steps:
            warning = (f"train.max_steps {max_steps} overrides train.epochs {epochs:g} (that would "
                       f"be {math.ceil(epochs * per)} steps of {per} per epoch); remove one of them")
    elif epochs is not None:
        steps = max(1, math.ceil(epochs * per))
    else:
        steps = default_steps
    passes = steps / per
    if passes > MANY_EPOCHS and warning is None:
        group = batch_size * grad_accum * world
        unit = "example" if n_examples == 1 else "examples"
        warning = (f"{steps} steps of {group} examples are {passes:.0f} passes over the "
                   f"{n_examples} training {unit}: the adapter will likely memorise them; set "
                   f"train.epochs (e.g. 3) or a smaller train.max_steps, or add data")
    return Steps(steps, per, passes, warning)


def apply(train_cfg, n_examples: int, world: int = 1, log=print) -> int:
    """Resolve ``train_cfg`` (a :class:`mindprint.config.TrainConfig`) against the loaded data,
    set its ``max_steps`` to the result, log a warning if there is one, and return the steps.

    ``max_steps`` counts as given when the user set it (YAML, environment, ``--set``, a curriculum
    topic's steps) — pydantic's ``model_fields_set`` — not when it is the default."""
    explicit = train_cfg.max_steps if "max_steps" in train_cfg.model_fields_set else None
    res = resolve_steps(n_examples, train_cfg.batch_size, train_cfg.grad_accum, world,
                        train_cfg.epochs, explicit, default_steps=train_cfg.max_steps)
    if res.warning:
        log(f"warning: {res.warning}")
    train_cfg.max_steps = res.steps
    return res.steps
