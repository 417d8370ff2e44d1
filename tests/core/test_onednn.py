"""oneDNN products on a CPU (backends/torch/onednn.py): the frozen-base linear and the one-node LoRA
layer give the stock (F.linear / PEFT) values and gradients, and everything that is not the plain
case (adapter disabled or merged, dropout, a second adapter, autocast) takes the stock path."""

from __future__ import annotations

import copy
import platform

import pytest
import torch

from mindprint.backends.torch import onednn as M
from mindprint.backends.torch.logps import token_logps

# Where the platform has oneDNN (an x86-64 CPU, a torch build with mkldnn) the product takes this
# fast path, so its self-check must pass there: a failing check is a failure, not a skip (the
# product would silently fall back to the slower stock products). Elsewhere the tests skip, with
# an allow-listed reason (tests/conftest.py).
HAS_ONEDNN = (platform.machine().lower() in ("x86_64", "amd64")
              and torch.backends.mkldnn.is_available())
pytestmark = pytest.mark.skipif(not HAS_ONEDNN, reason="x86-only: oneDNN's linear needs an x86-64 "
                                "CPU and a torch build with oneDNN (mkldnn)")


def test_self_check_passes_where_the_platform_has_onednn():
    assert M.onednn_linear_ok(), ("oneDNN's linear disagrees with F.linear or fails on this x86-64 "
                                  "torch build: the fast path is off (backends/torch/onednn.py)")


def test_products_match_f_linear():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 33, generator=g)
    w, b = torch.randn(19, 33, generator=g), torch.randn(19, generator=g)
    dy = torch.randn(2, 7, 19, generator=g)
    torch.testing.assert_close(M.linear(x, w, b), torch.nn.functional.linear(x, w, b), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(M.linear_dx(dy, w), dy @ w, rtol=1e-5, atol=1e-5)
    lin = torch.nn.Linear(33, 19).requires_grad_(False)
    assert M.use_onednn_linears(lin) == 1 and "forward" in vars(lin)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = lin(xa), torch.nn.functional.linear(xb, lin.weight, lin.bias)
    assert ya.grad_fn is not None and "FrozenLinear" in type(ya.grad_fn).__name__
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5)
    (ya * dy).sum().backward()
    (yb * dy).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-5)
    lin.weight.requires_grad_(True)           # a layer that becomes trainable: stock path
    assert "FrozenLinear" not in type(lin(xa).grad_fn).__name__


def _lora_model(tiny_model_dir, dropout=0.0):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, bias="none",
                                            target_modules=["q_proj", "v_proj", "o_proj", "up_proj",
                                                            "down_proj"]))
    with torch.no_grad():               # B starts at zero: give A a gradient to compare too
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return model


def _batch(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    V = model.get_input_embeddings().weight.shape[0]
    ids = torch.randint(0, V, (3, 21), generator=g)
    att = torch.ones_like(ids)
    att[2, :5] = 0                      # a left-padded row
    loss = torch.ones_like(ids)
    loss[:, :8] = 0
    return ids, att, loss, torch.randn(3, 21, generator=g)


def _logps_and_grads(model, batch):
    ids, att, loss, w = batch
    model.zero_grad(set_to_none=True)
    lp = token_logps(model, ids, att, loss)
    (lp * w).sum().backward()
    return lp.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_patched_model_matches_stock(tiny_model_dir, monkeypatch):
    stock = _lora_model(tiny_model_dir)
    fast = copy.deepcopy(stock)
    assert M.use_onednn_linears(fast) > 0
    calls = []
    real = M._LoraLinear.apply
    monkeypatch.setattr(M._LoraLinear, "apply", lambda *a: calls.append(1) or real(*a))
    batch = _batch(stock)
    lp_f, g_f = _logps_and_grads(fast, batch)
    assert len(calls) == 2 * 5            # every LoRA layer took the one-node path
    with monkeypatch.context() as m:
        m.setattr(M, "onednn_linear_ok", lambda dtype=None: False)
        lp_s, g_s = _logps_and_grads(stock, batch)
    assert lp_s.abs().sum() > 0 and set(g_f) == set(g_s) and len(g_s) == 2 * 5 * 2
    torch.testing.assert_close(lp_f, lp_s, rtol=1e-5, atol=1e-5)
    for n in g_s:
        assert g_s[n].abs().sum() > 0, n
        torch.testing.assert_close(g_f[n], g_s[n], rtol=1e-4, atol=1e-6, msg=n)


def test_stock_path_where_not_plain(tiny_model_dir, monkeypatch):
    calls = []
    real = M._LoraLinear.apply
    monkeypatch.setattr(M._LoraLinear, "apply", lambda *a: calls.append(1) or real(*a))
    ids, att, loss, _ = _batch(_lora_model(tiny_model_dir), seed=2)

    def logps(model):
        with torch.no_grad():
            return token_logps(model, ids, att, loss)

    model = _lora_model(tiny_model_dir)
    stock = logps(model)
    M.use_onednn_linears(model)
    with model.disable_adapter():                 # the reference pass: base only
        off = logps(model)
    assert calls == []
    with monkeypatch.context() as m:
        m.setattr(M, "onednn_linear_ok", lambda dtype=None: False)
        with model.disable_adapter():
            torch.testing.assert_close(off, logps(model), rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logps(model)
    assert calls == []                             # autocast: stock bf16 products
    model.add_adapter("second", copy.deepcopy(model.peft_config["default"]))
    model.base_model.set_adapter(["default", "second"])
    logps(model)
    assert calls == []                             # two active adapters
    model.base_model.set_adapter("default")
    torch.testing.assert_close(logps(model), stock, rtol=1e-5, atol=1e-5)
    assert len(calls) == 5 * 2

    drop = _lora_model(tiny_model_dir, dropout=0.1)
    M.use_onednn_linears(drop)
    calls.clear()
    drop.train()
    logps(drop)
    assert calls == []                             # dropout: PEFT's forward
