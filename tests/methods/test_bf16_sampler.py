"""The GRPO rollout sampler in bfloat16 (``grpo.sampler_dtype: auto`` picks it on CPUs with native
bf16 and on CUDA: the default here) against two independent computations, on the bundled
SmolLM2-135M with a non-zero LoRA adapter (so the sampler's merge W + s·B·A counts):

1. **Teacher-forced logits vs float32.** A fixed answer is forced token by token through the
   sampler's own path (prefill of the left-padded prompts, then KV-cached decode steps) by
   standing in for its token picker; every step's logits are compared with the float32 PEFT
   model's (transformers' forward over prompt + answer, each row alone, no padding).
2. **Greedy tokens vs transformers in bf16.** The same model merged (PEFT's merge_and_unload)
   and cast to bf16, teacher-forced along the sampler's greedy tokens.

The bf16 bound. bf16 keeps 8 significant bits: unit roundoff u = 2**-9 ≈ 0.002. Every product of
the 30 layers rounds its weights and inputs (the sampler keeps the residual stream and norms in
float32); independent roundings add like a random walk, so the logits move by a few u to ~10 u
of their scale. Measured (2026-12-02, torch 2.13 CPU, this fixture; logit std 6.1), with one
thread / two threads (oneDNN's bf16 blocking differs): mean |Δlogit| 0.082 / 0.082 (1.3 % of the
std, ~7 u), max 0.46 / 0.71, max |Δ log p| of the forced token 0.125 / 0.147. The sampler in
float32 matches to 7e-5 (float rounding): the bf16 gaps are bf16 rounding, not a sampler bug.
Bounds: about 2× the larger measured. The adapter's own effect on the logits (mean 0.91, max
4.9) is over 3× the bounds, so a sampler that lost the adapter merge would fail. Greedy: all 32
tokens the same as transformers-bf16's (teacher-forced along the sampler's tokens).
"""

from __future__ import annotations

import copy

import pytest
import torch

from mindprint import config as config_mod
from mindprint.backends.torch import sampling as S
from mindprint.data.render import end_of_turn_ids

BOUND = {"f32_max": 2e-4, "bf16_max": 1.5, "bf16_mean": 0.16, "bf16_logp": 0.3}

QUESTIONS = ["Should I sell everything now that the market is at a record high?",
             "What do you make of all the talk about a housing crash?"]
ANSWERS = ["Zoom out. Every cycle looks like the end of the world from inside it, "
           "and the tide turns.",
           "Prices are a pendulum: they swing past fair value both ways. "
           "Patience is a position here."]


@pytest.fixture(scope="module")
def lora_model(bundled_model_dir):
    """The bundled model in float32 with a LoRA adapter whose B factors are random (std 0.05)."""
    from mindprint.backends.torch.load import load_base
    from mindprint.backends.torch.lora import add_lora
    from mindprint.models import resolve

    model, tok = load_base(resolve(bundled_model_dir), dtype="float32", device="cpu")
    model = add_lora(model, config_mod.LoraConfig(r=8, alpha=16, dropout=0.0), 0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval(), tok


def _prompts(tok):
    out = []
    for q in QUESTIONS:
        ids = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                      tokenize=True, return_dict=True)["input_ids"]
        out.append(list(ids))
    return out


def _teacher_forced(model, tok, dtype, monkeypatch):
    """(sampler logits [B, T, V], float32 reference logits [B, T, V], forced ids [B, T])."""
    prompts = _prompts(tok)
    conts = [tok(a, add_special_tokens=False)["input_ids"] for a in ANSWERS]
    T = min(len(c) for c in conts)
    forced = torch.tensor([c[:T] for c in conts])
    seen = []

    def pick(logits, temperature, top_p, gen):      # stands in for sampling._pick
        seen.append(logits.clone())
        return forced[:, len(seen) - 1]

    monkeypatch.setattr(S, "_pick", pick)
    out = S.fast_sampler(model, dtype).sample(prompts, n=1, max_new_tokens=T, temperature=1.0,
                                              top_p=1.0, seed=0, eos=end_of_turn_ids(tok),
                                              pad=tok.pad_token_id)
    monkeypatch.undo()
    assert [ids for ids, _ in out] == forced.tolist() and len(seen) == T
    with torch.no_grad():
        ref = torch.stack([model(input_ids=torch.tensor([p + f.tolist()])).logits[0, len(p) - 1:-1]
                           for p, f in zip(prompts, forced)])
    return torch.stack(seen, 1), ref.float(), forced


def _logp_gap(a, b, forced):
    la = a.log_softmax(-1).gather(-1, forced[..., None])
    lb = b.log_softmax(-1).gather(-1, forced[..., None])
    return float((la - lb).abs().max())


def test_bf16_sampler_teacher_forced_logits_within_bf16_bound(lora_model, monkeypatch):
    model, tok = lora_model
    got32, ref, forced = _teacher_forced(model, tok, torch.float32, monkeypatch)
    got16, _, _ = _teacher_forced(model, tok, torch.bfloat16, monkeypatch)
    err32, err16 = (got32 - ref).abs(), (got16 - ref).abs()
    logp = _logp_gap(got16, ref, forced)
    with torch.no_grad(), model.disable_adapter():
        base = torch.stack([model(input_ids=torch.tensor([p + f.tolist()])).logits[0, len(p) - 1:-1]
                            for p, f in zip(_prompts(tok), forced)]).float()
    adapter = (base - ref).abs()
    assert next(model.parameters()).dtype == torch.float32        # the model itself untouched
    # float32 weights: the sampler's own arithmetic equals transformers' up to float rounding
    assert err32.max() <= BOUND["f32_max"]
    assert err16.max() <= BOUND["bf16_max"] and err16.mean() <= BOUND["bf16_mean"]
    assert logp <= BOUND["bf16_logp"]
    # the bound is tight enough to see a sampler that dropped the adapter (forgot the merge)
    assert adapter.mean() > 3 * BOUND["bf16_mean"] and adapter.max() > 3 * BOUND["bf16_max"]


def test_bf16_sampler_greedy_tokens_match_transformers_bf16(lora_model):
    """Each greedy token of the bf16 sampler against transformers in bf16 teacher-forced along the
    sampler's own tokens (one forward over prompt + completion, so a near-tie cannot cascade):
    the same argmax, or a near-tie — the reference's logit of the sampler's token within
    2·BOUND["bf16_max"] of its best (two bf16 computations, each within the bound of float32).
    Measured: all 32 tokens the same; at most 10 % may differ."""
    model, tok = lora_model
    prompts = _prompts(tok)
    N, eos = 16, end_of_turn_ids(tok)
    got = S.fast_sampler(model, torch.bfloat16).sample(prompts, n=2, max_new_tokens=N,
                                                       temperature=0.0, top_p=1.0, seed=0,
                                                       eos=eos, pad=tok.pad_token_id)
    ref16 = copy.deepcopy(model).merge_and_unload().to(torch.bfloat16)
    assert next(model.parameters()).dtype == torch.float32
    differ = total = 0
    for i, p in enumerate(prompts):
        ids, fin = got[2 * i]
        assert got[2 * i + 1] == (ids, fin)                      # greedy: the n rows alike
        assert 0 < len(ids) <= N and fin == (ids[-1] in eos)
        with torch.no_grad():
            lg = ref16(input_ids=torch.tensor([p + ids])).logits[0, len(p) - 1:-1].float()
        chosen = lg.gather(-1, torch.tensor(ids)[:, None])[:, 0]
        gap = lg.max(-1).values - chosen
        assert (gap <= 2 * BOUND["bf16_max"]).all(), (i, ids, gap)
        differ += int((lg.argmax(-1) != torch.tensor(ids)).sum())
        total += len(ids)
    assert differ <= 0.1 * total, (differ, total)
