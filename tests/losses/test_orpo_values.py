"""Hand-derived values for orpo_loss and the method's two ``orpo.nll`` modes (arithmetic in the
comments)."""

import math

import pytest
import torch

from mindprint.config import from_dict
from mindprint.errors import ConfigError
from mindprint.losses import xp as xp_mod
from mindprint.losses.orpo import orpo_loss
from mindprint.methods.groups import Group, Norm
from mindprint.methods.pairwise import OBJECTIVES, PairMethod, _chosen_rows

xp = xp_mod.get("torch")


def t(*v, grad=False):
    return torch.tensor(v, dtype=torch.float32, requires_grad=grad)


def test_orpo_value_and_metrics():
    # S_c = −2, L_c = 2 → a_c = −1;  S_r = −6, L_r = 3 → a_r = −2;  λ = 0.1
    # log(1 − e^−1) = log 0.632121 = −0.458675;  log(1 − e^−2) = log 0.864665 = −0.145413
    # ℓ = (−1 − (−2)) − (−0.458675 − (−0.145413)) = 1 + 0.313262 = 1.313262
    # log σ(1.313262) = −0.238183;  nll = −a_c = 1.0;  loss = 1.0 + 0.1·0.238183 = 1.023818
    loss, m = orpo_loss(t(-2.0), t(-6.0), torch.tensor([2]), torch.tensor([3]), lam=0.1, xp=xp)
    assert loss.item() == pytest.approx(1.0238183, abs=1e-6)
    assert m["log_odds_ratio"].item() == pytest.approx(1.3132617, abs=1e-6)
    assert m["log_sigmoid_odds"].item() == pytest.approx(-0.2381830, abs=1e-6)
    assert m["nll"].item() == pytest.approx(1.0)
    # rewards λ·a: −0.1 and −0.2, margin 0.1, accuracy 1
    assert m["rewards_chosen"].item() == pytest.approx(-0.1)
    assert m["rewards_rejected"].item() == pytest.approx(-0.2)
    assert m["reward_margin"].item() == pytest.approx(0.1)
    assert m["reward_accuracy"].item() == 1.0


def test_orpo_equal_averages_give_log2_penalty():
    # a_c = a_r = −1.5 → ℓ = 0, log σ(0) = −log 2;  loss = 1.5 + 0.2·0.693147 = 1.638629
    loss, m = orpo_loss(t(-3.0), t(-4.5), torch.tensor([2]), torch.tensor([3]), lam=0.2, xp=xp)
    assert loss.item() == pytest.approx(1.5 + 0.2 * math.log(2.0), abs=1e-6)
    assert m["reward_accuracy"].item() == 0.0


def test_orpo_gradient_wrt_chosen():
    # d loss/d S_c = (1/L_c)·(−1 − λ·(1 − σ(ℓ))·dℓ/da_c),  dℓ/da_c = 1 + e^a/(1 − e^a) = 1/(1 − e^a_c)
    # = (−1 − 0.1·(1 − 0.788058)·1.581977)/2 = (−1 − 0.033529)/2 = −0.516764   (raise chosen → lower loss)
    sc, sr = t(-2.0, grad=True), t(-6.0, grad=True)
    loss, _ = orpo_loss(sc, sr, torch.tensor([2]), torch.tensor([3]), lam=0.1, xp=xp)
    loss.sum().backward()
    assert sc.grad.item() == pytest.approx(-0.5167643, abs=1e-6)
    assert sr.grad.item() > 0  # raising rejected log-probs raises the loss


def test_orpo_token_weighted_nll_mode():
    # two pairs with a_c = a_r (ℓ = 0 → OR term λ·log 2 each);  nll_sum = [4, 2], nll_tokens = [3, 1]
    # token-weighted: per-example nll = B·nll_sum/Σtokens = 2·4/4 = 2.0 and 2·2/4 = 1.0; mean 1.5 = 6/4
    # (per-example means would give (4/3 + 2/1)/2 = 1.6667 instead)
    loss, m = orpo_loss(t(-2.0, -1.0), t(-2.0, -1.0), torch.tensor([2, 2]), torch.tensor([2, 2]),
                        lam=0.1, nll_sum=t(4.0, 2.0), nll_tokens=torch.tensor([3, 1]), xp=xp)
    assert m["nll"].tolist() == pytest.approx([2.0, 1.0])
    assert loss.mean().item() == pytest.approx(1.5 + 0.1 * math.log(2.0), abs=1e-6)


def test_orpo_log1mexp_stable_near_zero():
    # a_c = −1e−6 (p ≈ 1): log(1 − e^a) = log(−expm1(a)) ≈ log(1e−6) = −13.815511, finite with finite grads
    sc = t(-2e-6, grad=True)
    loss, m = orpo_loss(sc, t(-4.0), torch.tensor([2]), torch.tensor([2]), lam=0.1, xp=xp)
    # ℓ = (−1e−6 + 2) − (−13.815511 − log(1 − e^−2)) = 1.999999 + 13.815511 − 0.145413 = 15.670097
    assert m["log_odds_ratio"].item() == pytest.approx(15.670097, abs=1e-3)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(sc.grad).all()


# ---------------------------------------------------------------- orpo.nll: the method's two NLL modes
def _orpo_cfg(nll: str, lam: float = 0.1):
    return from_dict({"method": "orpo", "data": {"train": "pairs.jsonl"},
                      "orpo": {"lam": lam, "nll": nll}})


def _two_pairs():
    """Pair 1: prompt 3 tokens, chosen 2, rejected 3; pair 2: prompt 1 token, chosen 3, rejected 3."""
    return [Group([1, 2, 3], [[4, 5], [6, 7, 8]], [[1, 1], [1, 1, 1]], [True, False]),
            Group([9], [[10, 11, 12], [13, 14, 15]], [[1, 1, 1], [1, 1, 1]], [True, False])]


@pytest.mark.parametrize("nll", ["answer", "prompt_and_answer"])
def test_orpo_nll_modes_through_the_method(nll):
    # answer sums: S_c = [−2, −3] over L_c = [2, 3] → a_c = [−1, −1];  S_r = [−6, −3], L_r = [3, 3]
    # → a_r = [−2, −1];  ℓ = [1.313262, 0], log σ(ℓ) = [−0.238183, −0.693147], mean −0.465665
    # answer:            NLL = Σ answer NLL / Σ answer tokens = 5/5 = 1.0
    # prompt_and_answer: the chosen rows score every token after the first: 3+2−1 = 4 and 1+3−1 = 3,
    #                    summed log-probs [−5, −4] → NLL = 9/7 = 1.285714
    # loss (mean over the step's 2 pairs) = NLL + 0.1·0.465665
    cfg = _orpo_cfg(nll)
    method = PairMethod(cfg)
    groups = _two_pairs()
    norm = method.weight(groups)
    full = nll == "prompt_and_answer"
    assert norm == Norm(2.0, 7.0 if full else 5.0)
    seqs, masks = _chosen_rows(groups)
    assert seqs == [[1, 2, 3, 4, 5], [9, 10, 11, 12]]
    assert masks == [[0, 1, 1, 1, 1], [0, 1, 1, 1]]
    objective, needs_ref = OBJECTIVES["orpo"]
    assert not needs_ref
    extra = {"full": t(-5.0, -4.0)} if full else {}
    loss, _ = objective(cfg, t(-2.0, -3.0), t(-6.0, -3.0), None, None, t(2.0, 3.0), t(3.0, 3.0),
                        norm, xp, **extra)
    nll_value = 9.0 / 7.0 if full else 1.0
    assert (loss.sum() / norm.items).item() == pytest.approx(nll_value + 0.1 * 0.4656650, abs=1e-6)


def test_orpo_nll_is_validated():
    assert _orpo_cfg("answer").orpo.nll == "answer"
    with pytest.raises(ConfigError, match=r"orpo\.nll.*'answer' or 'prompt_and_answer'.*'prompt'"):
        _orpo_cfg("prompt")
    with pytest.raises(ConfigError, match=r"unknown key 'orpo\.nl'; did you mean 'orpo\.nll'"):
        from_dict({"method": "orpo", "data": {"train": "p.jsonl"}, "orpo": {"nl": "answer"}})
