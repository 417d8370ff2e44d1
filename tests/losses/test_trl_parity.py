"""Parity with TRL 1.16's own loss code on identical tensors: same loss, same gradients (rtol 1e-5).

TRL is a test-only dependency. Each trainer is built with ``object.__new__`` (no model, no dataset, no
accelerate setup) and given only the attributes its loss path reads. Where that path runs a model forward,
a stub model returns precomputed tensors: per-token log-probs for DPO/KTO (their fused-LM-head outputs), raw
logits for ORPO/CPO (whose own log-softmax/cross-entropy code then runs). Our losses receive the sums and
token counts computed from the same leaf tensors, and gradients are compared on those leaves.
"""

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

import trl  # noqa: E402,F401
from trl import DPOTrainer, KTOTrainer  # noqa: E402
from trl.experimental.cpo import CPOTrainer  # noqa: E402
from trl.experimental.orpo import ORPOTrainer  # noqa: E402

from mindprint.losses import xp as xp_mod  # noqa: E402
from mindprint.losses.dpo import dpo_loss, ipo_loss  # noqa: E402
from mindprint.losses.kto import kto_kl_estimate, kto_loss  # noqa: E402
from mindprint.losses.orpo import orpo_loss  # noqa: E402
from mindprint.losses.simpo import simpo_loss  # noqa: E402

xp = xp_mod.get("torch")
RTOL, ATOL = 1e-5, 1e-8


class _Accelerator:
    device = torch.device("cpu")

    def gather(self, x):
        return x

    def gather_for_metrics(self, x):
        return x


class _StubModel:
    """Stands in for the policy: returns the precomputed outputs registered for the given input_ids."""

    training = True

    def __init__(self, outputs_by_ids):
        self._outputs = outputs_by_ids  # list of (input_ids tensor, outputs namespace)

    def __call__(self, input_ids=None, *args, **kwargs):
        input_ids = kwargs.get("input_ids", input_ids)
        for ids, out in self._outputs:
            if ids.shape == input_ids.shape and torch.equal(ids, input_ids):
                return out
        raise AssertionError("stub model got unexpected input_ids")


def _bare(cls, model, **attrs):
    trainer = object.__new__(cls)
    trainer.model, trainer.accelerator = model, _Accelerator()
    trainer.aux_loss_enabled = False
    for k, v in attrs.items():
        setattr(trainer, k, v)
    return trainer


def _fused_outputs(per_token_logps):
    n, t = per_token_logps.shape
    zeros = torch.zeros(n, t, dtype=per_token_logps.dtype)
    return SimpleNamespace(log_probs=per_token_logps, entropy=zeros, mean_logits=zeros,
                           is_top1=torch.zeros(n, t, dtype=torch.bool))


def _completion_batch(gen, n, width, prompt_len=2):
    """input_ids/attention/completion masks (n, width): prompt, then 1..width−prompt_len completion tokens."""
    lengths = torch.randint(1, width - prompt_len + 1, (n,), generator=gen)
    pos = torch.arange(width)
    completion_mask = ((pos >= prompt_len) & (pos < prompt_len + lengths[:, None])).long()
    attention_mask = (pos < prompt_len + lengths[:, None]).long()
    input_ids = torch.randint(1, 50, (n, width), generator=gen) * attention_mask
    return input_ids, attention_mask, completion_mask


def _close(ours, theirs):
    torch.testing.assert_close(ours, theirs, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------- DPO / IPO
@pytest.mark.parametrize("case", ["sigmoid", "sigmoid_smoothed", "ipo"])
def test_dpo_family_matches_trl(case):
    gen = torch.Generator().manual_seed(0)
    b, width, beta, eps = 4, 8, 0.3, 0.2
    input_ids, attention_mask, completion_mask = _completion_batch(gen, 2 * b, width)
    shift_mask = completion_mask[:, 1:].double()
    tokens = (-3 * torch.rand(2 * b, width - 1, generator=gen, dtype=torch.float64)).requires_grad_()
    ref = (-3 * torch.rand(2 * b, generator=gen, dtype=torch.float64) * shift_mask.sum(1)).requires_grad_()

    def run_trl():
        if case == "sigmoid":
            loss_types, weights = ["sigmoid"], [1.0]
        elif case == "sigmoid_smoothed":
            # TRL 1.16's "sigmoid" ignores label_smoothing; cDPO = 2(1−ε)·sigmoid − (1−2ε)·robust
            loss_types, weights = ["sigmoid", "robust"], [2 * (1 - eps), -(1 - 2 * eps)]
        else:
            loss_types, weights = ["ipo"], [1.0]
        model = _StubModel([(input_ids, _fused_outputs(tokens * shift_mask))])
        trainer = _bare(DPOTrainer, model, beta=beta, label_smoothing=eps, loss_types=loss_types,
                        loss_weights=weights, ld_alpha=None, precompute_ref_logps=True,
                        f_divergence_type="reverse_kl", use_weighting=False, _total_train_tokens=0, _tp_size=1,
                        _metrics={"train": defaultdict(list), "eval": defaultdict(list)})
        rc, rr = ref.chunk(2)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask,
                  "ref_chosen_logps": rc, "ref_rejected_logps": rr}
        return trainer._compute_loss(model, inputs, return_outputs=False), trainer._metrics["train"]

    def run_ours():
        pc, pr = (tokens * shift_mask).sum(1).chunk(2)
        rc, rr = ref.chunk(2)
        if case == "ipo":
            lc, lr = completion_mask.sum(1).chunk(2)
            loss, m = ipo_loss(pc, pr, rc, rr, lc, lr, beta=beta, xp=xp)
        else:
            smoothing = eps if case == "sigmoid_smoothed" else 0.0
            loss, m = dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=smoothing, xp=xp)
        return loss.mean(), m

    theirs, trl_metrics = run_trl()
    g_theirs = torch.autograd.grad(theirs, (tokens, ref))
    ours, m = run_ours()
    g_ours = torch.autograd.grad(ours, (tokens, ref))
    _close(ours, theirs)
    for a, b_ in zip(g_ours, g_theirs):
        _close(a, b_)
    assert m["rewards_chosen"].mean().item() == pytest.approx(trl_metrics["rewards/chosen"][-1], rel=1e-6)
    assert m["reward_margin"].mean().item() == pytest.approx(trl_metrics["rewards/margins"][-1], rel=1e-6)
    assert m["reward_accuracy"].mean().item() == pytest.approx(trl_metrics["rewards/accuracies"][-1])


def test_trl_sigmoid_ignores_label_smoothing():
    """Documents the surprise: TRL 1.16 loss_type="sigmoid" equals our ε = 0 loss whatever label_smoothing is."""
    gen = torch.Generator().manual_seed(1)
    input_ids, attention_mask, completion_mask = _completion_batch(gen, 4, 6)
    tokens = -torch.rand(4, 5, generator=gen, dtype=torch.float64)
    model = _StubModel([(input_ids, _fused_outputs(tokens))])
    trainer = _bare(DPOTrainer, model, beta=0.1, label_smoothing=0.3, loss_types=["sigmoid"], loss_weights=[1.0],
                    ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
                    use_weighting=False, _total_train_tokens=0, _tp_size=1,
                    _metrics={"train": defaultdict(list), "eval": defaultdict(list)})
    ref = torch.tensor([-2.0, -1.0], dtype=torch.float64)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask,
              "ref_chosen_logps": ref, "ref_rejected_logps": ref}
    theirs = trainer._compute_loss(model, inputs, return_outputs=False)
    pc, pr = tokens.sum(1).chunk(2)
    ours, _ = dpo_loss(pc, pr, ref, ref, beta=0.1, label_smoothing=0.0, xp=xp)
    _close(ours.mean(), theirs)


# ---------------------------------------------------------------- KTO
@pytest.mark.parametrize("kl_shift", [0.7, -5.0])  # positive KL estimate, and one TRL clamps to 0
def test_kto_matches_trl(kl_shift):
    gen = torch.Generator().manual_seed(2)
    n, width, beta, w_d, w_u = 6, 7, 0.2, 1.5, 0.6
    input_ids, attention_mask, completion_mask = _completion_batch(gen, n, width)
    kl_ids, kl_attention, kl_completion = _completion_batch(gen, n, width + 2)
    kl_ids = kl_ids + 100  # distinct from input_ids so the stub tells the two forwards apart
    labels = torch.tensor([True, False, True, True, False, False])
    mask, kl_mask = completion_mask[:, 1:].double(), kl_completion[:, 1:].double()
    tokens = (-2 * torch.rand(n, width - 1, generator=gen, dtype=torch.float64)).requires_grad_()
    kl_tokens = -2 * torch.rand(n, width + 1, generator=gen, dtype=torch.float64)
    ref = ((tokens * mask).sum(1) + torch.randn(n, generator=gen, dtype=torch.float64)).detach().requires_grad_()
    ref_kl = (kl_tokens * kl_mask).sum(1) - kl_shift + 0.3 * torch.randn(n, generator=gen, dtype=torch.float64)

    model = _StubModel([(input_ids, _fused_outputs(tokens * mask)), (kl_ids, _fused_outputs(kl_tokens * kl_mask))])
    trainer = _bare(KTOTrainer, model, beta=beta, desirable_weight=w_d, undesirable_weight=w_u, loss_type="kto",
                    calculate_KL=True, precompute_ref_logps=True, _total_train_tokens=0, _tp_size=1,
                    _metrics={"train": defaultdict(list), "eval": defaultdict(list)})
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask,
             "KL_input_ids": kl_ids, "KL_attention_mask": kl_attention, "KL_completion_mask": kl_completion,
             "label": labels, "ref_logps": ref, "ref_KL_logps": ref_kl}
    theirs = trainer._compute_loss(model, batch, return_outputs=False)
    g_theirs = torch.autograd.grad(theirs, (tokens, ref))

    z = kto_kl_estimate((kl_tokens * kl_mask).sum(1), ref_kl, xp=xp)
    loss, m = kto_loss((tokens * mask).sum(1), ref, labels, z, beta=beta, desirable_weight=w_d,
                       undesirable_weight=w_u, xp=xp)
    ours = loss.mean()
    g_ours = torch.autograd.grad(ours, (tokens, ref))
    _close(ours, theirs)
    for a, b_ in zip(g_ours, g_theirs):
        _close(a, b_)
    trl_m = trainer._metrics["train"]
    assert z.item() == pytest.approx(trl_m["kl"][-1], rel=1e-6, abs=1e-12)
    assert (z.item() == 0.0) == (kl_shift < 0)
    assert m["rewards"][labels].mean().item() == pytest.approx(trl_m["rewards/chosen"][-1], rel=1e-6)
    assert m["rewards"][~labels].mean().item() == pytest.approx(trl_m["rewards/rejected"][-1], rel=1e-6)


# ---------------------------------------------------------------- ORPO / SimPO (CPO): logits-level stubs
def _pair_batch(gen, b, vocab=11):
    """Left-aligned prompt+completion rows for chosen and rejected (different widths), TRL ORPO/CPO layout."""
    def side(max_completion):
        prompt = torch.randint(2, 5, (b,), generator=gen)
        completion = torch.randint(1, max_completion + 1, (b,), generator=gen)
        width = int((prompt + completion).max())
        pos = torch.arange(width)
        attention = (pos < (prompt + completion)[:, None]).long()
        ids = torch.randint(1, vocab, (b, width), generator=gen) * attention
        labels = ids.masked_fill((pos < prompt[:, None]) | (attention == 0), -100)
        return ids, attention, labels

    c_ids, c_att, c_lab = side(5)
    r_ids, r_att, r_lab = side(7)
    batch = {"chosen_input_ids": c_ids, "chosen_attention_mask": c_att, "chosen_labels": c_lab,
             "rejected_input_ids": r_ids, "rejected_attention_mask": r_att, "rejected_labels": r_lab}
    width = max(c_ids.shape[1], r_ids.shape[1])

    def pad(x, value):
        return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)

    ids = torch.cat([pad(c_ids, 0), pad(r_ids, 0)])
    att = torch.cat([pad(c_att, 0), pad(r_att, 0)])
    lab = torch.cat([pad(c_lab, -100), pad(r_lab, -100)])
    logits = torch.randn(2 * b, width, vocab, generator=gen, dtype=torch.float64).requires_grad_()
    return batch, ids, att, lab, logits


def _sum_logps(logits, labels):
    """Σ over labelled positions of log p(label_t | <t) (next-token shift), and the token counts."""
    target = labels[:, 1:]
    mask = target != -100
    lp = torch.log_softmax(logits[:, :-1], -1).gather(-1, target.clamp(min=0)[..., None])[..., 0]
    return (lp * mask).sum(-1), mask.sum(-1)


def test_orpo_matches_trl():
    """``orpo.nll: prompt_and_answer`` (TRL's NLL over the chosen row's prompt and answer tokens);
    the default ``answer`` NLL is a deliberate deviation, checked by hand in test_orpo_values.py and
    against TRL's trainer in tests/parity/test_trl_trainer_parity.py."""
    gen = torch.Generator().manual_seed(3)
    b, lam = 5, 0.25
    batch, ids, att, lab, logits = _pair_batch(gen, b)
    model = _StubModel([(ids, SimpleNamespace(logits=logits))])
    trainer = _bare(ORPOTrainer, model, beta=lam, is_encoder_decoder=False, padding_value=0)
    theirs, trl_m = trainer.get_batch_loss_metrics(model, batch)
    (g_theirs,) = torch.autograd.grad(theirs, logits)

    sums, lengths = _sum_logps(logits, lab)
    (sc, sr), (lc, lr) = sums.chunk(2), lengths.chunk(2)
    # TRL's NLL: cross-entropy over every attended chosen token (prompt included), token-mean over the batch
    nll_logps, nll_tokens = _sum_logps(logits[:b], ids[:b].masked_fill(att[:b] == 0, -100))
    loss, m = orpo_loss(sc, sr, lc, lr, lam=lam, nll_sum=-nll_logps, nll_tokens=nll_tokens, xp=xp)
    ours = loss.mean()
    (g_ours,) = torch.autograd.grad(ours, logits)
    _close(ours, theirs.to(ours.dtype))
    _close(g_ours, g_theirs)
    assert m["nll"].mean().item() == pytest.approx(trl_m["nll_loss"], rel=1e-5)
    assert m["log_odds_ratio"].mean().item() == pytest.approx(trl_m["log_odds_chosen"], rel=1e-5)
    assert m["log_sigmoid_odds"].mean().item() == pytest.approx(trl_m["log_odds_ratio"], rel=1e-5)
    assert m["reward_margin"].mean().item() == pytest.approx(trl_m["rewards/margins"], rel=1e-5)


@pytest.mark.parametrize("eps", [0.0, 0.15])
def test_simpo_matches_trl_cpo(eps):
    gen = torch.Generator().manual_seed(4)
    b, beta, gamma = 5, 2.5, 1.4
    batch, ids, att, lab, logits = _pair_batch(gen, b)
    model = _StubModel([(ids, SimpleNamespace(logits=logits))])
    trainer = _bare(CPOTrainer, model, beta=beta, simpo_gamma=gamma, label_smoothing=eps, loss_type="simpo",
                    cpo_alpha=0.0, alpha=0.0, is_encoder_decoder=False, pad_token_id=0)
    theirs, trl_m = trainer.get_batch_loss_metrics(model, batch)
    (g_theirs,) = torch.autograd.grad(theirs, logits)

    sums, lengths = _sum_logps(logits, lab)
    (sc, sr), (lc, lr) = sums.chunk(2), lengths.chunk(2)
    loss, m = simpo_loss(sc, sr, lc, lr, beta=beta, gamma=gamma, label_smoothing=eps, xp=xp)
    ours = loss.mean()
    (g_ours,) = torch.autograd.grad(ours, logits)
    _close(ours, theirs)
    _close(g_ours, g_theirs)
    assert m["rewards_chosen"].mean().item() == pytest.approx(trl_m["rewards/chosen"], rel=1e-6)
    assert m["reward_accuracy"].mean().item() == pytest.approx(trl_m["rewards/accuracies"])
