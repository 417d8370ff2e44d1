"""Chat template → token ids + assistant-only loss mask.

Most chat templates have no ``{% generation %}`` tags, so the mask is derived from rendered
prefixes instead: for the i-th assistant turn, the text of ``messages[:i]`` rendered with a
generation prompt is where the answer starts, and the text of ``messages[:i+1]`` is where it ends.
The end includes the template's end-of-turn token (so the model learns to stop) and excludes
trailing whitespace the template adds after it. Characters are mapped to tokens with the fast
tokenizer's offsets, so one tokenisation of the whole conversation serves every turn.

An assistant turn of ``weight`` 0 (OpenAI fine-tuning data; context turns of prompt-completion
data) is rendered but not trained. A :class:`TextRecord` is no conversation: its text is
tokenized as is (with the tokenizer's own special tokens, as TRL does for language-modelling
data), EOS appended, and every token is trained on.

Tool use (``tools``, assistant ``tool_calls``, ``tool`` turns) is passed to the chat template as
given (``tools=`` of ``apply_chat_template``); a template whose source never mentions them
would silently drop them, so that is an error instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from mindprint.errors import DataError

from .records import ChatRecord, Message, TextRecord


@dataclass
class Rendered:
    input_ids: list[int]
    loss_mask: list[int]           # 1 where the token is trained on
    truncated: bool = False

    @property
    def n_target(self) -> int:
        return sum(self.loss_mask)


def _as_dicts(messages) -> list[dict]:
    return [m.as_dict() if isinstance(m, Message) else dict(m) for m in messages]


def _template_source(tokenizer) -> str:
    t = tokenizer.chat_template
    return "\n".join(t.values()) if isinstance(t, dict) else (t or "")


def check_tool_support(tokenizer, msgs: list[dict], tools) -> None:
    """Raise DataError when the record uses tools its chat template does not render."""
    src = _template_source(tokenizer)
    needs = [("tools", bool(tools)),
             ("tool_calls", any("tool_calls" in m for m in msgs)),
             ("tool", any(m["role"] == "tool" for m in msgs))]
    missing = [name for name, used in needs if used and name not in src]
    if missing:
        raise DataError(f"uses {', '.join(missing)} but the model's chat template does not "
                        "render tool use; use a model whose template supports tools, or remove "
                        "the tool turns")


def render_text(tokenizer, messages, *, add_generation_prompt: bool = False, tools=None) -> str:
    msgs = _as_dicts(messages)
    if tools or any(m["role"] == "tool" or "tool_calls" in m for m in msgs):
        check_tool_support(tokenizer, msgs, tools)
        return tokenizer.apply_chat_template(msgs, tools=[dict(t) for t in tools or ()],
                                             tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    return tokenizer.apply_chat_template(msgs, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def assistant_spans(tokenizer, messages, tools=None) -> tuple[str, list[tuple[int, int]]]:
    """Full rendered text and the character spans of every trained assistant turn (end-of-turn
    included); turns of weight 0 are context."""
    trained = [not isinstance(m, Message) or m.trained for m in messages]
    msgs = _as_dicts(messages)
    full = render_text(tokenizer, msgs, tools=tools)
    spans = []
    for i, m in enumerate(msgs):
        if m["role"] != "assistant" or not trained[i]:
            continue
        start_text = render_text(tokenizer, msgs[:i], add_generation_prompt=True, tools=tools)
        end_text = render_text(tokenizer, msgs[: i + 1], tools=tools)
        if not (full.startswith(start_text) and full.startswith(end_text)):
            raise ValueError("the chat template does not render conversations prefix-consistently; "
                             "assistant-only masking needs a template whose turns append")
        end = len(end_text.rstrip())
        spans.append((len(start_text), end))
    return full, spans


def render_messages(tokenizer, messages, *, max_length: int | None = None,
                    train_on: str = "all_assistant", tools=None) -> Rendered:
    """Render ``messages`` to ids and a mask over assistant tokens.

    ``train_on="last_assistant"`` masks only the final assistant turn (used for preference
    completions whose earlier turns belong to the prompt).
    """
    full, spans = assistant_spans(tokenizer, messages, tools)
    if train_on == "last_assistant":
        spans = spans[-1:]
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = enc["offset_mapping"]
    mask = [0] * len(ids)
    j = 0
    for k, (s, e) in enumerate(offsets):
        while j < len(spans) and spans[j][1] <= s:
            j += 1
        if j < len(spans) and e > s and s >= spans[j][0] and s < spans[j][1]:
            mask[k] = 1
    truncated = False
    if max_length is not None and len(ids) > max_length:
        ids, mask, truncated = ids[:max_length], mask[:max_length], True
    return Rendered(ids, mask, truncated)


# end-of-turn markers of common chat templates (ChatML, Llama 3, Gemma, Phi-3/Mistral-style)
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")


def end_of_turn_ids(tokenizer) -> list[int]:
    """Token ids that end an assistant turn: the tokenizer's EOS plus whichever of the common
    end-of-turn markers its vocabulary has (an unknown marker maps to nothing, not to UNK)."""
    ids = {tokenizer.eos_token_id}
    unk = getattr(tokenizer, "unk_token_id", None)
    for t in END_OF_TURN_TOKENS:
        i = tokenizer.convert_tokens_to_ids(t)
        if i != unk:
            ids.add(i)
    return sorted(i for i in ids if isinstance(i, int) and i >= 0)


def render_prompt(tokenizer, prompt_messages, tools=None) -> list[int]:
    """Ids of a prompt ending in a user (or tool) turn, with the generation prompt appended."""
    text = render_text(tokenizer, prompt_messages, add_generation_prompt=True, tools=tools)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass
class RenderStats:
    total: int = 0
    kept: int = 0
    truncated: int = 0
    dropped_fully_truncated: int = 0
    target_tokens: int = 0
    tokens: int = 0

    def warning(self, max_length: int) -> str | None:
        if not (self.truncated or self.dropped_fully_truncated):
            return None
        return (f"{self.truncated} of {self.total} examples were longer than data.max_length="
                f"{max_length} and were truncated; {self.dropped_fully_truncated} lost their whole "
                f"answer and were dropped")


def render_plain_text(tokenizer, text: str, *, max_length: int | None = None) -> Rendered:
    """Text + EOS, every token trained on but the first (nothing precedes it to predict it
    from, so it is context: the mask stays honest about what the loss counts)."""
    ids = list(tokenizer(text)["input_ids"])  # the tokenizer's own BOS, if it adds one
    eos = tokenizer.eos_token_id
    if eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)
    truncated = max_length is not None and len(ids) > max_length
    if truncated:
        ids = ids[:max_length]
    return Rendered(ids, [0] + [1] * (len(ids) - 1), truncated)


def render_sft_record(tokenizer, record, *, max_length: int | None = None) -> Rendered:
    """One SFT record (chat or text) → ids and loss mask; tool-use problems name the record."""
    if isinstance(record, TextRecord):
        return render_plain_text(tokenizer, record.text, max_length=max_length)
    assert isinstance(record, ChatRecord), type(record)
    try:
        return render_messages(tokenizer, record.messages, max_length=max_length,
                               tools=record.tools)
    except DataError as err:
        raise DataError(f"{record.where}: {err}" if record.where else str(err)) from None


def render_sft_records(tokenizer, records, max_length: int) -> tuple[list[Rendered], RenderStats]:
    """Render SFT records (chat and text); drop (and count) those whose answer is cut away
    entirely."""
    stats = RenderStats()
    out = []
    for rec in records:
        stats.total += 1
        r = render_sft_record(tokenizer, rec, max_length=max_length)
        if r.truncated:
            stats.truncated += 1
        if r.n_target == 0:
            stats.dropped_fully_truncated += 1
            continue
        stats.kept += 1
        stats.tokens += len(r.input_ids)
        stats.target_tokens += r.n_target
        out.append(r)
    return out, stats


render_chat_records = render_sft_records  # the name methods and evaluation have used
