"""Fixed probe inputs and the logit comparisons every export is checked with.

The probes are a few chat conversations rendered through the model's own chat template (plain
prose, a list with digits, Unicode and code, a system turn) plus one row of seeded random token
ids, which reaches embedding rows natural text never touches. Comparisons look only at real
(unpadded) positions.
"""

from __future__ import annotations

import torch

PROBE_CHATS = [
    [{"role": "user", "content": "What does a market cycle look like from the inside?"},
     {"role": "assistant", "content": "Zoom out. It starts quietly, with cheap credit and "
                                      "cautious buyers, and ends loudly. Patience is a position."}],
    [{"role": "system", "content": "You are a concise assistant."},
     {"role": "user", "content": "List three colours, then count from 7 to 12:\n- red\n- "}],
    [{"role": "user", "content": "Ünïcödé, emoji 🚀, tabs\tand  double  spaces; code: "
                                 "`x = [i**2 for i in range(10)]` and 3.14159 * 2,000."}],
]
RANDOM_ROW = 48      # length of the seeded random-id row
MAX_PROBE = 96       # tokens kept per rendered probe


def probe_batch(tok, *, random_row: bool = True) -> dict:
    """``input_ids``, ``attention_mask`` (right-padded) and ``natural`` (rows of real text)."""
    rows = []
    for chat in PROBE_CHATS:
        gen = chat[-1]["role"] == "user"
        text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=gen)
        rows.append(tok(text, add_special_tokens=False)["input_ids"][:MAX_PROBE])
    natural = len(rows)
    if random_row:
        g = torch.Generator().manual_seed(1234)
        rows.append(torch.randint(0, len(tok), (RANDOM_ROW,), generator=g).tolist())
    width = max(len(r) for r in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    att = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        att[i, :len(r)] = 1
    return {"input_ids": ids, "attention_mask": att, "natural": natural}


@torch.no_grad()
def probe_logits(model, batch: dict) -> torch.Tensor:
    """Logits ``[B, T, V]`` of ``model`` on the probe batch, as float64 on the CPU."""
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = model(input_ids=batch["input_ids"].to(dev),
                    attention_mask=batch["attention_mask"].to(dev)).logits
    finally:
        model.train(was_training)
    return out.double().cpu()


def compare_logits(a: torch.Tensor, b: torch.Tensor, batch: dict) -> dict:
    """Max abs difference over real positions, and top-1 agreement over natural-text positions."""
    real = batch["attention_mask"].bool()
    diff = (a - b).abs().amax(-1)                        # [B, T]
    nat = real.clone()
    nat[batch["natural"]:] = False
    agree = (a.argmax(-1) == b.argmax(-1))[nat]
    return {"max_abs_diff": float(diff[real].max()),
            "mean_abs_diff": float((a - b).abs()[real].mean()),
            "top1_agreement": float(agree.float().mean()),
            "probe_tokens": int(real.sum()), "top1_tokens": int(nat.sum())}
