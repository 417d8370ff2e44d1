"""SFT packing on the mlx backend (tiny random model, float32): packed rows give the unpacked
micro-batch's loss and LoRA gradients, for SFT and KL-SFT, and the same loss as torch's packed
rows on the same weights."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import chat
from parity_helpers import lora_cfg, mlx_like, torch_pair

from mindprint.backends.mlx.model import MLXBackend  # noqa: F401  (loads the fast BLAS first)

import mlx.core as mx  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

from mindprint import config as C  # noqa: E402
from mindprint.data.records import ChatRecord, Message  # noqa: E402
from mindprint.data.render import render_chat_records  # noqa: E402
from mindprint.methods.kl_sft import KLSFTMethod  # noqa: E402
from mindprint.methods.sft import SFTMethod  # noqa: E402

RECORDS = [
    chat("u up?", "yeah, can't sleep"),
    chat("What did the landlord say about the boiler?",
         "Thursday, between 8 and 12. He says that every time, so I'll believe it at 12:01."),
    chat("k", "k"),
    chat("Any good podcast for a long drive?",
         "The one about the shipwreck. Six episodes, gripping."),
    chat("did you water the tomatoes", "this morning, and I talked to them. they seemed happy"),
]


def _cfg(method):
    raw = {"method": method, "model": "x", "data": {"train": "x.jsonl", "max_length": 64},
           "kl": {"lambda": 0.5, "tau": 2.0}} if method == "kl_sft" else \
        {"method": method, "model": "x", "data": {"train": "x.jsonl", "max_length": 64}}
    return C.from_dict(raw)


@pytest.fixture(scope="module")
def pair(tiny_model_dir):
    lora = lora_cfg()
    tmodel, tback = torch_pair(tiny_model_dir, lora)
    _, mback = mlx_like(tiny_model_dir, lora, tmodel)
    recs = [ChatRecord(messages=tuple(Message(**m) for m in r["messages"])) for r in RECORDS]
    ex, _ = render_chat_records(mback.tokenizer, recs, 64)
    return tback, mback, ex


def _mlx_loss_and_grads(method, backend, examples):
    model = backend.model

    def f(params):
        model.update(params)
        return method.micro_loss(backend, examples, method.weight(examples))[0]

    loss, grads = mx.value_and_grad(f)(model.trainable_parameters())
    mx.eval(loss, grads)
    return float(loss.item()), {k: np.array(v) for k, v in tree_flatten(grads)}


@pytest.mark.parametrize("name", ["sft", "kl_sft"])
def test_mlx_packed_equals_unpacked_and_torch(pair, name):
    tback, mback, ex = pair
    assert mback.can_pack()
    method = {"sft": SFTMethod, "kl_sft": KLSFTMethod}[name](_cfg(name))
    plain, g_plain = _mlx_loss_and_grads(method, mback, ex)
    method.pack_to = 128
    b = mback.batch([e.input_ids for e in ex], [e.loss_mask for e in ex], pack_to=128)
    assert len(b["packed_rows"]) < len(ex)           # it did pack
    packed, g_packed = _mlx_loss_and_grads(method, mback, ex)
    assert packed == pytest.approx(plain, rel=1e-5)
    scale = max(float(np.abs(g).max()) for g in g_plain.values())
    worst = max(float(np.abs(g_packed[k] - g_plain[k]).max()) for k in g_plain)
    assert scale > 1e-4 and worst <= 1e-4 * scale, (worst, scale)
    # torch's packed rows on the same weights: the same loss (backend parity's tolerance)
    torch_loss = float(method.micro_loss(tback, ex, method.weight(ex))[0].detach())
    assert packed == pytest.approx(torch_loss, rel=1e-4)
