"""The LM head restricted to trained rows (hand-written backward) equals log_softmax + gather, in
value and gradient, whether the forward keeps its softmax for the backward or recomputes it."""

from __future__ import annotations

import pytest
import torch

from mindprint.backends.torch import logps as M


@pytest.mark.parametrize("keep_bytes", [0, 1 << 30])
@pytest.mark.parametrize("with_bias", [False, True])
def test_selected_logps_matches_reference(keep_bytes, with_bias, monkeypatch):
    monkeypatch.setattr(M, "KEEP_PROBS_BYTES", keep_bytes)
    torch.manual_seed(0)
    N, H, V = 23, 6, 40
    h = torch.randn(N, H, dtype=torch.float64, requires_grad=True)
    W = torch.randn(V, H, dtype=torch.float64, requires_grad=True)
    b = torch.randn(V, dtype=torch.float64, requires_grad=True) if with_bias else None
    t = torch.randint(0, V, (N,))
    g = torch.randn(N, dtype=torch.float64)
    ours = M.selected_logps(h, W, b, t, chunk=5)          # 5 chunks, the last one partial
    ref = torch.log_softmax(torch.nn.functional.linear(h, W, b), -1).gather(-1, t[:, None]).squeeze(-1)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-6)
    leaves = (h, W) + ((b,) if with_bias else ())
    ga = torch.autograd.grad((ours * g).sum(), leaves)
    gr = torch.autograd.grad((ref * g).sum(), leaves)
    for a, r in zip(ga, gr):
        torch.testing.assert_close(a.double(), r, rtol=1e-4, atol=1e-6)


def test_no_grad_keeps_nothing(monkeypatch):
    monkeypatch.setattr(M, "KEEP_PROBS_BYTES", 1 << 30)
    h, W = torch.randn(4, 3), torch.randn(7, 3)
    with torch.no_grad():
        out = M.selected_logps(h, W, None, torch.tensor([0, 1, 2, 3]))
    assert out.shape == (4,) and out.grad_fn is None
