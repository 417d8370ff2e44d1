"""Rendering: the loss mask covers exactly the assistant answers plus their end-of-turn token."""

from __future__ import annotations

from mindprint.data.records import ChatRecord, Message
from mindprint.data.render import render_chat_records, render_messages


def _masked_text(tok, r):
    return tok.decode([t for t, m in zip(r.input_ids, r.loss_mask) if m])


def _msgs(*pairs):
    return tuple(Message(role, text) for role, text in pairs)


def test_mask_is_answer_plus_end_of_turn(tokenizer):
    msgs = _msgs(("user", "Where are we in the cycle?"), ("assistant", "Zoom out. Late-cycle."))
    r = render_messages(tokenizer, msgs)
    assert _masked_text(tokenizer, r) == "Zoom out. Late-cycle.<|im_end|>"
    # the whole rendering equals the template's, token for token
    full = tokenizer.apply_chat_template([m.as_dict() for m in msgs], tokenize=False)
    assert tokenizer.decode(r.input_ids) == full
    # the mask is one contiguous run ending at the end-of-turn token
    ones = [i for i, m in enumerate(r.loss_mask) if m]
    assert ones == list(range(ones[0], ones[-1] + 1))
    assert r.input_ids[ones[-1]] == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_system_and_user_never_trained(tokenizer):
    msgs = _msgs(("system", "You are Orla."), ("user", "Hi"), ("assistant", "Zoom out."),
                 ("user", "And risk?"), ("assistant", "Size small."))
    r = render_messages(tokenizer, msgs)
    assert _masked_text(tokenizer, r) == "Zoom out.<|im_end|>Size small.<|im_end|>"
    last = render_messages(tokenizer, msgs, train_on="last_assistant")
    assert _masked_text(tokenizer, last) == "Size small.<|im_end|>"


def test_truncation_counts_and_drops(tokenizer):
    long_answer = "cycle " * 200
    recs = [ChatRecord(_msgs(("user", "q"), ("assistant", "short answer"))),
            ChatRecord(_msgs(("user", "q"), ("assistant", long_answer))),
            ChatRecord(_msgs(("user", "word " * 100), ("assistant", "never reached")))]
    out, stats = render_chat_records(tokenizer, recs, max_length=64)
    assert stats.total == 3 and stats.truncated == 2 and stats.dropped_fully_truncated == 1
    assert len(out) == 2 and all(len(r.input_ids) <= 64 for r in out)
    assert "truncated" in stats.warning(64) and "dropped" in stats.warning(64)


def test_end_of_turn_ids_are_the_eos_and_known_markers_only(tokenizer):
    from mindprint.data.render import end_of_turn_ids

    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = end_of_turn_ids(tokenizer)
    assert im_end in ids and tokenizer.eos_token_id in ids
    # markers of other templates are not in SmolLM2's vocabulary: they must not map to UNK
    assert tokenizer.unk_token_id not in ids or tokenizer.unk_token_id == tokenizer.eos_token_id
    assert ids == sorted(set(ids))


def test_end_of_turn_ids_without_an_unk_token():
    from types import SimpleNamespace

    from mindprint.data.render import end_of_turn_ids

    vocab = {"<|eot_id|>": 7}
    tok = SimpleNamespace(eos_token_id=5, unk_token_id=None,
                          convert_tokens_to_ids=lambda t: vocab.get(t))
    assert end_of_turn_ids(tok) == [5, 7]
    tok.eos_token_id = None
    assert end_of_turn_ids(tok) == [7]


def test_weight_zero_turns_are_context(tokenizer):
    msgs = (Message("user", "Hi"), Message("assistant", "Hello there.", weight=0),
            Message("user", "Risk?"), Message("assistant", "Size small.", weight=1))
    r = render_messages(tokenizer, msgs)
    assert _masked_text(tokenizer, r) == "Size small.<|im_end|>"
    # the weights change the mask only, never the rendered text
    assert r.input_ids == render_messages(tokenizer, _msgs(*[(m.role, m.content) for m in msgs])).input_ids


def test_sft_records_mix_chat_and_text(tokenizer):
    from mindprint.data.records import TextRecord
    from mindprint.data.render import render_sft_records

    assert render_chat_records is render_sft_records  # the old name keeps working
    recs = [TextRecord("Patience is a position."),
            ChatRecord(_msgs(("user", "Cash?"), ("assistant", "An option on panic.")))]
    (t, c), stats = render_sft_records(tokenizer, recs, max_length=64)
    assert t.input_ids[-1] == tokenizer.eos_token_id and t.loss_mask[1:] == [1] * (len(t.input_ids) - 1)
    assert _masked_text(tokenizer, c) == "An option on panic.<|im_end|>"
    assert stats.kept == 2 and stats.target_tokens == t.n_target + c.n_target
