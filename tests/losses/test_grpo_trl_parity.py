"""Parity with TRL 1.16 GRPOTrainer's own ``_compute_loss`` on identical tensors: same loss and same
gradient w.r.t. the per-token log-probs (rtol 1e-5), for every loss_type × importance level, with and
without the KL term.

The trainer is built with ``object.__new__`` and given only the attributes its loss path reads; its
log-prob helper is replaced by one returning the precomputed leaf tensor (what the model forward would
give). One accumulation step (``current_gradient_accumulation_steps = 1``) and one process.
"""

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

import trl  # noqa: E402,F401
from trl import GRPOTrainer  # noqa: E402

from mindprint.losses import xp as xp_mod  # noqa: E402
from mindprint.losses.grpo import grpo_loss  # noqa: E402

xp = xp_mod.get("torch")
RTOL, ATOL = 1e-5, 1e-8


class _Accelerator:
    device = torch.device("cpu")
    num_processes = 1
    process_index = 0

    def gather(self, x):
        return x

    def gather_for_metrics(self, x):
        return x

    def reduce(self, x, reduction="sum"):
        return x


def _bare_trainer(loss_type, level, beta, eps, eps_high, max_len, logps, entropies):
    tr = object.__new__(GRPOTrainer)
    tr.model = SimpleNamespace(training=True)
    tr.accelerator = _Accelerator()
    tr.args = SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1)
    tr.loss_type, tr.importance_sampling_level, tr.beta = loss_type, level, beta
    tr.epsilon_low, tr.epsilon_high = eps, eps_high
    tr.max_completion_length = max_len
    tr.top_entropy_quantile, tr.off_policy_mask_threshold = 1.0, None
    tr.use_vllm, tr.vllm_importance_sampling_correction = False, False
    tr.aux_loss_enabled, tr._entropy_bonus_enabled = False, False
    tr.current_gradient_accumulation_steps = 1
    tr._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    tr._get_per_token_logps_and_entropies = lambda *a, **k: (logps, entropies, None)
    return tr


def _tensors(seed, B=6, T=7, P=3):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    old = -3 * torch.rand(B, T, generator=g, dtype=torch.float64)
    # policy near the old policy, some tokens far enough to be clipped
    logps = old + 0.4 * torch.randn(B, T, generator=g, dtype=torch.float64)
    ref = old + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    inputs = {"prompt_ids": torch.randint(1, 50, (B, P), generator=g),
              "prompt_mask": torch.ones(B, P, dtype=torch.long),
              "completion_ids": torch.randint(1, 50, (B, T), generator=g) * mask,
              "completion_mask": mask}
    return logps, old, ref, adv, mask, inputs


@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_grpo_loss_matches_trl(loss_type, level, beta):
    seed = 2 * ["grpo", "bnpo", "dr_grpo", "dapo"].index(loss_type) + (level == "sequence")
    logps0, old, ref, adv, mask, inputs = _tensors(seed=seed)
    eps, eps_high, max_len = 0.2, 0.28, 9
    num_items = mask.sum() + 5.0      # dapo: tokens of a larger accumulated batch

    theirs_lp = logps0.clone().requires_grad_()
    tr = _bare_trainer(loss_type, level, beta, eps, eps_high, max_len, theirs_lp,
                       torch.zeros_like(logps0))
    loss_theirs = tr._compute_loss(None, {**inputs, "advantages": adv, "old_per_token_logps": old,
                                          "ref_per_token_logps": ref,
                                          "num_items_in_batch": num_items.double()})
    loss_theirs.backward()

    ours_lp = logps0.clone().requires_grad_()
    loss_ours, m = grpo_loss(ours_lp, old, adv, mask, ref_logps=ref, beta=beta, epsilon=eps,
                             epsilon_high=eps_high, loss_type=loss_type,
                             importance_sampling_level=level, max_completion_length=max_len,
                             num_items=num_items.double(), xp=xp)
    loss_ours.backward()

    torch.testing.assert_close(loss_ours, loss_theirs, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(ours_lp.grad, theirs_lp.grad, rtol=RTOL, atol=ATOL)
    assert ours_lp.grad.abs().sum() > 0
    metrics = tr._metrics["train"]
    assert float(m["clip_low"]) == pytest.approx(metrics["clip_ratio/low_mean"][-1], rel=1e-6)
    assert float(m["clip_high"]) == pytest.approx(metrics["clip_ratio/high_mean"][-1], rel=1e-6)
    assert float(m["clip_region"]) == pytest.approx(metrics["clip_ratio/region_mean"][-1], rel=1e-6)
    if beta:
        assert float(m["kl"]) == pytest.approx(metrics["kl"][-1], rel=1e-6)


def test_fixture_exercises_clipping():
    """The random tensors above do clip on both sides, so the parity covers the clipped branch."""
    logps, old, _, adv, mask, _ = _tensors(seed=3)
    _, m = grpo_loss(logps, old, adv, mask, epsilon=0.2, loss_type="grpo", xp=xp)
    assert float(m["clip_low"]) > 0 and float(m["clip_high"]) > 0
