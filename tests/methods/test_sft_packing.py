"""SFT packing changes no update (torch, tiny random model, float32): a micro-batch's loss and
every LoRA gradient are the same packed and unpacked, for SFT and KL-SFT and for each way the
backend expresses block-diagonal attention (per-example layout, SDPA bool mask, eager float
mask); and the setup decision (auto / true / false) is said or refused, never silent."""

from __future__ import annotations

import pytest
import torch

from conftest import chat
from mindprint import config as C
from mindprint.backends.torch import backend as backend_mod
from mindprint.backends.torch.backend import TorchBackend
from mindprint.backends.torch.load import load_base
from mindprint.backends.torch.lora import add_lora
from mindprint.backends.torch.sft_packing import packed_batch, packing_works
from mindprint.data.packing import best_fit_decreasing
from mindprint.data.records import ChatRecord, Message
from mindprint.data.render import render_chat_records
from mindprint.errors import ConfigError
from mindprint.methods.kl_sft import KLSFTMethod
from mindprint.methods.sft import SFTMethod
from mindprint.models import resolve

# short turns and a long one, of different shapes: system prompts, several turns, a one-word reply
RECORDS = [
    chat("ok?", "yep"),
    chat("Where did you park?", "Level 3, near the lifts. Bring the umbrella, it's pouring."),
    {"messages": [{"role": "system", "content": "You answer like a ship's cook."},
                  {"role": "user", "content": "Dinner?"},
                  {"role": "assistant", "content": "Stew. Again. Nobody complains twice."}]},
    {"messages": [{"role": "user", "content": "did u send the invoice"},
                  {"role": "assistant", "content": "not yet, tonight"},
                  {"role": "user", "content": "pls, they asked twice"},
                  {"role": "assistant", "content": "on it. sorry!"}]},
    chat("Explain compounding to a ten-year-old, briefly.",
         "Your money has babies, and then the babies have babies. Wait long enough and the "
         "grandchildren outnumber everyone. That is the whole trick: time, not genius."),
    chat("Thoughts on the match?", "Second half was a different team. Subs changed it."),
]


def _cfg(model_dir, method="sft", **data):
    raw = {"method": method, "model": model_dir, "data": {"train": "x.jsonl", "max_length": 128,
                                                          **data},
           "train": {"batch_size": 2, "grad_accum": 1}, "lora": {"r": 4, "alpha": 8}}
    if method == "kl_sft":
        raw["kl"] = {"lambda": 0.7, "tau": 1.5}
    return C.from_dict(raw)


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    base, tok = load_base(resolve(tiny_model_dir), dtype="float32", device="cpu")
    model = add_lora(base, _cfg(tiny_model_dir).lora, 0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():      # non-zero B, so A has a gradient and the adapter changes outputs
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    model.eval()               # no dropout: the two passes must see the same function
    return TorchBackend(model, tok)


@pytest.fixture(scope="module")
def examples(backend):
    ex, _ = render_chat_records(backend.tokenizer, [_recs(r) for r in RECORDS], 128)
    return ex


def _recs(raw):
    return ChatRecord(messages=tuple(Message(**m) for m in raw["messages"]))


def _loss_and_grads(method, backend, examples, attn: str):
    model = backend.model
    model.zero_grad(set_to_none=True)
    norm = method.weight(examples)
    before = model.config._attn_implementation
    model.config._attn_implementation = attn      # the mask kind below needs this attention
    try:
        loss, sums = method.micro_loss(backend, examples, norm)
        loss.backward()
    finally:
        model.config._attn_implementation = before
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), sums, grads


@pytest.mark.parametrize("method_name", ["sft", "kl_sft"])
@pytest.mark.parametrize("kind,attn", [("layout", "sdpa"), ("bool", "sdpa"), ("float", "eager")])
def test_packed_loss_and_lora_gradients_equal_unpacked(backend, examples, tiny_model_dir,
                                                       method_name, kind, attn, monkeypatch):
    """The per-example attention layout (what SDPA and eager models get), and the 4-D block
    masks (what models with gradient checkpointing get) alike."""
    monkeypatch.setattr(backend_mod, "packing_kind", lambda model: kind)
    cls = {"sft": SFTMethod, "kl_sft": KLSFTMethod}[method_name]
    method = cls(_cfg(tiny_model_dir, method_name))
    plain = _loss_and_grads(method, backend, examples, attn)
    method.pack_to = 128           # what on_setup sets when the backend packs (max_length)
    b = backend.batch([e.input_ids for e in examples], [e.loss_mask for e in examples],
                      pack_to=128)
    assert len(b["packed_rows"]) < len(examples)      # these examples do get packed
    packed = _loss_and_grads(method, backend, examples, attn)
    assert packed[0] == pytest.approx(plain[0], rel=1e-5, abs=1e-6)
    assert packed[1]["target_tokens"] == plain[1]["target_tokens"] > 0
    assert packed[1].keys() == plain[1].keys()
    # sums over ~150 tokens; each token's KL is a difference of two ~11-sized log-softmaxes, so
    # its float32 rounding is ~1e-6 absolute: the KL sum gets an absolute allowance per token
    # (a target shifted by one position moves it by ~1e-3 per token)
    tokens = plain[1]["target_tokens"]
    for k in packed[1]:
        assert packed[1][k] == pytest.approx(plain[1][k], rel=1e-5, abs=1e-6 * tokens), k
    assert packed[2].keys() == plain[2].keys() and len(packed[2]) > 0
    scale = max(float(g.abs().max()) for g in plain[2].values())
    worst = max(float((packed[2][n] - plain[2][n]).abs().max()) for n in plain[2])
    assert scale > 1e-4 and worst <= 1e-5 * scale + 1e-7, (worst, scale)


@pytest.mark.parametrize("kind", ["layout", "bool", "float"])
def test_rows_are_packed_and_positions_restart(backend, examples, kind):
    seqs = [e.input_ids for e in examples]
    masks = [e.loss_mask for e in examples]
    b = packed_batch(seqs, masks, best_fit_decreasing([len(x) for x in seqs], 128),
                     backend.tokenizer.pad_token_id, "cpu", kind)
    rows = b["packed_rows"]
    assert len(rows) < len(seqs) and sorted(i for r in rows for i in r) == list(range(len(seqs)))
    for r, row in enumerate(rows):
        s = 0
        for i in row:
            L = len(seqs[i])
            assert b["input_ids"][r, s:s + L].tolist() == seqs[i]
            assert b["position_ids"][r, s:s + L].tolist() == list(range(L))
            s += L
        assert s <= 128
    # the unpacked loss mask and token count are kept whole
    assert b["loss_mask"].sum().item() == sum(sum(m) for m in masks)


class _Log(list):
    def __call__(self, line):
        self.append(line)


class _NoPack:
    name = "torch"

    def can_pack(self):
        return False


def test_setup_says_what_packing_does(backend, examples, tiny_model_dir):
    data = type("D", (), {"train_lengths": [len(e.input_ids) for e in examples] * 3})()
    m, log = SFTMethod(_cfg(tiny_model_dir)), _Log()
    m.on_setup(backend, data, log)                # auto, and this model packs
    assert m.pack_to == 128 and "data.packing: on" in log[0] and "micro-batches packed" in log[0]
    m, log = SFTMethod(_cfg(tiny_model_dir, packing=False)), _Log()
    m.on_setup(backend, data, log)
    assert m.pack_to is None and log == []
    m, log = SFTMethod(_cfg(tiny_model_dir)), _Log()
    m.on_setup(_NoPack(), data, log)              # auto where packing is not exact: said
    assert m.pack_to is None and "data.packing: off" in log[0]
    with pytest.raises(ConfigError, match="data.packing: true"):
        SFTMethod(_cfg(tiny_model_dir, packing=True)).on_setup(_NoPack(), data, log)


def test_packing_check_refuses_a_model_that_ignores_the_mask(backend, monkeypatch):
    assert packing_works(backend.model, backend.tokenizer.pad_token_id, "cpu")
    # a model whose attention implementation the packed rows cannot express
    monkeypatch.setattr(backend.model.config, "_attn_implementation", "flash_attention_2")
    assert not packing_works(backend.model, backend.tokenizer.pad_token_id, "cpu")
