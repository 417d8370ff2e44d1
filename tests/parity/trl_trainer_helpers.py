"""Helpers for the trainer-level TRL parity tests (tests/parity/test_trl_trainer_parity.py).

Mindprint's side is its own model setup (``load_base`` + ``add_lora``: PEFT LoRA r 4, alpha 8,
attn_mlp, dropout 0, routed through oneDNN on a CPU) with ``lora_B`` made non-zero so that
``lora_A`` gets a gradient too (tests/parity/parity_helpers.torch_pair). TRL's side is a plain
transformers model from the same directory wrapped by PEFT with the same ``LoraConfig`` and the
same LoRA tensors copied in (:func:`trl_twin`). Each side runs one forward/backward without an
optimizer; every ``lora_A``/``lora_B`` gradient is read by name.

TRL's rows come from its trainers' own dataset preparation (run in ``__init__``); where TRL
tokenizes more than Mindprint trains on — the chat template's text after the assistant's
end-of-turn token — :func:`cut` checks that the surplus is only that and removes it from TRL's
prepared row, so both losses cover the same tokens (a documented deviation, see the test module).
"""

from __future__ import annotations

import copy

import torch

# GRPO: the completions both sides "sample" (two prompts × three), and their rewards keyed by text.
# table_reward is a Mindprint user reward (grpo.rewards: ["trl_trainer_helpers:table_reward"]),
# trl_table_reward the same table as TRL's reward_func.
GRPO_COMPLETIONS = {
    "What moves markets?": ["Fear, then greed, then fear again.", "Zoom out: cycles.",
                            "Interest rates and earnings, mostly. Also the mood of the crowd."],
    "Should I sell everything?": ["No.", "Selling in a panic locks the loss in.",
                                  "Maybe hold on; look at your horizon first, then decide."],
}
GRPO_REWARDS = {"Fear, then greed, then fear again.": 0.9, "Zoom out: cycles.": 0.4,
                "Interest rates and earnings, mostly. Also the mood of the crowd.": -0.3,
                "No.": -1.0, "Selling in a panic locks the loss in.": 1.2,
                "Maybe hold on; look at your horizon first, then decide.": 0.1}


def table_reward(prompts, completions, records):
    """Mindprint's reward signature: each completion text's fixed reward."""
    return [GRPO_REWARDS[c] for c in completions]


def trl_table_reward(prompts, completions, **kwargs):
    """TRL's reward signature (conversational: each completion is a list of messages)."""
    return [GRPO_REWARDS[c[0]["content"].strip()] for c in completions]


def trl_base(model_dir: str, mp_model):
    """``(model, peft_config)`` for a TRL trainer: the stock transformers model of ``model_dir`` and
    a copy of ``mp_model``'s LoRA config. TRL wraps the model itself (so its reference is the
    adapter-disabled base, as Mindprint's; a PEFT model passed in would get a "ref" copy of its
    current adapter instead); :func:`copy_lora` then gives it Mindprint's LoRA tensors."""
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return base, copy.deepcopy(mp_model.peft_config["default"])


def copy_lora(trainer, mp_model):
    """Load ``mp_model``'s LoRA tensors into the TRL trainer's PEFT model (same names)."""
    model = trainer.model
    assert list(model.peft_config) == ["default"]
    lora = {k: v.detach().clone() for k, v in mp_model.state_dict().items() if "lora_" in k}
    missing = set(lora) - set(model.state_dict())
    assert lora and not missing, sorted(missing)[:3]
    model.load_state_dict(lora, strict=False)
    model.eval()


def lora_grads(model) -> dict[str, torch.Tensor]:
    """Every LoRA tensor's gradient by parameter name (zeros where none was recorded)."""
    out = {}
    for n, p in model.named_parameters():
        if "lora_A" in n or "lora_B" in n:
            out[n] = p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
    return out


def clear_grads(model) -> None:
    for p in model.parameters():
        p.grad = None


def cut(row: dict, tokenizer, n: int, ids_col: str, *companions: str) -> dict:
    """``row`` with ``ids_col`` and its ``companions`` (masks, labels of the same tokens) cut to
    ``n`` tokens, after checking that what is cut is template text after the end-of-turn token
    (whitespace, or an appended EOS): nothing Mindprint would train on."""
    ids = list(row[ids_col])
    assert len(ids) >= n, (ids_col, len(ids), n)
    tail = tokenizer.decode(ids[n:], skip_special_tokens=True)
    assert tail.strip() == "", (ids_col, tokenizer.decode(ids[n:]))
    out = dict(row)
    for col in (ids_col, *companions):
        assert len(row[col]) == len(ids), col
        out[col] = list(row[col])[:n]
    return out


def compare(mp_loss, trl_loss, mp_grads: dict, trl_grads: dict, *, loss_rel: float,
            grad_rel: float, loss_scale: float = 0.0) -> tuple[float, float]:
    """Assert equal losses and LoRA gradients; return (loss rel. diff, max grad diff / max |grad|).

    The loss difference is relative to the larger of the loss and ``loss_scale``: a loss that is
    a near-cancelling sum (GRPO's advantage-weighted terms sum to ~0) carries the rounding error
    of its terms, so it is judged against their size (the mean |advantage|), not its own.

    Gradients are compared per tensor against the largest gradient of the whole adapter (a
    float32 sum over different reduction orders has an error relative to its magnitudes, not to
    each element)."""
    mp_loss, trl_loss = float(mp_loss), float(trl_loss)
    loss_diff = abs(mp_loss - trl_loss) / max(abs(trl_loss), loss_scale, 1e-12)
    assert mp_grads and set(mp_grads) == set(trl_grads), sorted(set(mp_grads) ^ set(trl_grads))[:4]
    scale = max(float(g.abs().max()) for g in trl_grads.values())
    assert scale > 0
    grad_diff = max(float((mp_grads[k] - trl_grads[k]).abs().max()) for k in trl_grads) / scale
    assert loss_diff <= loss_rel, f"loss: mindprint {mp_loss!r} vs TRL {trl_loss!r}"
    assert grad_diff <= grad_rel, f"LoRA gradients differ by {grad_diff:.3g} of the largest"
    # every tensor has a gradient on both sides (a silently frozen layer would read as 0 == 0)
    assert all(float(g.abs().max()) > 0 for g in trl_grads.values())
    return loss_diff, grad_diff
