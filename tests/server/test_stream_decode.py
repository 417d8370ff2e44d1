"""Streaming batched decoding (backends/torch/stream.py) and the chat engine's batches, on the
tiny model in float32: a row decoded in a batch gives the tokens it gives alone (greedy, and
sampled with its own seed), per-row budgets, callback stops and end-of-turn; the engine batches
concurrent requests for one adapter, keeps others apart and survives a cancelled row."""

from __future__ import annotations

import pytest
import torch
from conftest import make_adapter

from mindprint.backends.torch import stream as S
from mindprint.backends.torch.sampling import fast_sampler
from mindprint.server import engine as E


@pytest.fixture(scope="module")
def peft_model(tiny_model_dir, tmp_path_factory):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ad = make_adapter(tiny_model_dir, tmp_path_factory.mktemp("stream") / "ad", seed=3, scale=3.0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return PeftModel.from_pretrained(base, ad).eval(), ad


def _prompts(tokenizer):
    texts = ["Where is the market heading?", "hi", "Tell me, slowly and in detail, what a credit "
             "cycle feels like from the inside of a small bank in 1989."]
    rendered = [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                              add_generation_prompt=True) for t in texts]
    return [tokenizer(r, add_special_tokens=False)["input_ids"] for r in rendered]


def _run(sampler, rows, eos=(-1,), stop_at=None):
    seen: dict[int, list[int]] = {i: [] for i in range(len(rows))}

    def on_token(i, tok):
        seen[i].append(tok)
        return not (stop_at and stop_at.get(i) == len(seen[i]))
    ends = S.decode(sampler, rows, eos=list(eos), pad=0, on_token=on_token)
    return seen, ends


def test_batched_rows_decode_as_alone_and_as_generate(peft_model, tokenizer):
    model, _ = peft_model
    sampler = fast_sampler(model, torch.float32)
    prompts = _prompts(tokenizer)
    rows = [S.Row(p, 12) for p in prompts]
    together, ends = _run(sampler, rows)
    assert ends == [(12, S.LENGTH)] * 3
    for i, r in enumerate(rows):
        alone, _ = _run(sampler, [r])
        assert together[i] == alone[0]
    # greedy on the adapter model through transformers gives the same tokens
    with torch.no_grad():
        ref = model.generate(input_ids=torch.tensor([prompts[0]]), max_new_tokens=12,
                             do_sample=False, eos_token_id=None, pad_token_id=0)
    assert together[0] == ref[0, len(prompts[0]):].tolist()


def test_seeded_sampling_is_per_row(peft_model, tokenizer):
    sampler = fast_sampler(peft_model[0], torch.float32)
    p = _prompts(tokenizer)
    hot = S.Row(p[0], 10, temperature=1.2, top_p=0.9, seed=11)
    alone, _ = _run(sampler, [hot])
    mixed, _ = _run(sampler, [S.Row(p[2], 10, temperature=0.8, seed=5), hot, S.Row(p[1], 4)])
    assert mixed[1] == alone[0]                       # its own generator, whatever the batch
    other, _ = _run(sampler, [S.Row(p[0], 10, temperature=1.2, top_p=0.9, seed=12)])
    assert other[0] != alone[0]


def test_budgets_callback_stops_and_end_of_turn(peft_model, tokenizer):
    sampler = fast_sampler(peft_model[0], torch.float32)
    p = _prompts(tokenizer)
    free, _ = _run(sampler, [S.Row(p[1], 8)])
    eos_tok = free[0][4]                    # a token row 1 emits 5th: made "end of turn" below
    first = free[0].index(eos_tok) + 1
    rows = [S.Row(p[0], 3), S.Row(p[1], 8), S.Row(p[2], 9)]
    seen, ends = _run(sampler, rows, eos=[eos_tok], stop_at={2: 2})
    assert ends[0] == (len(seen[0]), S.LENGTH if eos_tok not in seen[0] else S.EOS)
    assert len(seen[0]) <= 3
    assert ends[1] == (first, S.EOS) and seen[1] == free[0][:first]     # eos seen, then nothing
    assert ends[2] == (2, S.STOPPED) and len(seen[2]) == 2
    assert S.decode(sampler, [], eos=[0], pad=0, on_token=lambda i, t: True) == []


@pytest.fixture(scope="module")
def engine(tiny_model_dir, peft_model):
    eng = E.ChatEngine(tiny_model_dir, device="cpu", dtype="float32")
    yield eng
    eng.close()


def _ask(eng, adapter, content, **kw):
    s = E.Settings(temperature=0, max_tokens=kw.pop("max_tokens", 10), **kw)
    return eng.submit([{"role": "user", "content": content}], adapter, s)


def test_engine_batches_one_adapter_and_keeps_answers(engine, peft_model, monkeypatch):
    ad = peft_model[1]
    qs = ["zoom out?", "is cash a position?", "what about 1999?", "fear or greed?"]
    alone = [_ask(engine, ad, q).text() for q in qs] + [_ask(engine, None, qs[0]).text()]
    sizes = []
    real = S.decode

    def spy(sampler, rows, **kw):
        sizes.append(len(rows))
        return real(sampler, rows, **kw)
    monkeypatch.setattr(S, "decode", spy)
    monkeypatch.setattr(E, "BATCH_WINDOW", 0.3)      # all five are queued inside the window
    reqs = [_ask(engine, ad, q) for q in qs] + [_ask(engine, None, qs[0])]
    got = [r.text() for r in reqs]
    assert got == alone
    assert sizes == [4, 1]                  # the four adapter requests together, base apart
    text, finish, usage = got[0]
    assert finish == "length" and usage["completion_tokens"] == 10 and text


def test_engine_cancelled_row_ends_alone(engine, peft_model, monkeypatch):
    ad = peft_model[1]
    monkeypatch.setattr(E, "BATCH_WINDOW", 0.3)
    keep = _ask(engine, ad, "tell me everything", max_tokens=400)
    drop = _ask(engine, ad, "and again", max_tokens=400)
    ev = drop.next_event(timeout=60)
    assert ev[0] == "delta"
    drop.cancel()
    events = []
    while not events or events[-1][0] not in ("done", "error"):
        events.append(drop.next_event(timeout=60))
    assert events[-1][0] == "done" and events[-1][2]["completion_tokens"] < 400
    text, finish, usage = keep.text()
    assert finish == "length" and usage["completion_tokens"] == 400
