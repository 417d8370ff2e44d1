"""Pure loss functions of log-probs / logits.

Each loss takes arrays plus an array namespace ``xp`` (see :mod:`mindprint.losses.xp`) so the
same code runs on torch tensors and mlx arrays. A loss returns ``(per_example_loss, metrics)``;
it never logs, touches a model, or does I/O.
"""
