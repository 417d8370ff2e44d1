"""Trainer-level parity with TRL 1.16: the whole pipeline, one optimizer-free step.

Same tiny random model (tests/conftest.py), same LoRA config and tensors (Mindprint's own model
setup; TRL wraps the stock transformers model with the same ``LoraConfig`` through its
``peft_config`` and gets Mindprint's LoRA tensors, see trl_trainer_helpers), same records.
Mindprint runs its real pipeline — records file → ``method.prepare`` (validation, chat-template
rendering, masks, groups) → ``on_setup`` (cached reference) → ``rollout`` (GRPO) →
``micro_loss`` through the torch backend (batching, packing, log-probs) → the method's loss.
TRL runs its trainer's own dataset preparation, data collator and ``compute_loss``. Compared:
the loss and the gradient of every ``lora_A``/``lora_B`` tensor (matched by name), plus the token
ids and masks both sides built from the records.

Tolerance (float32, CPU): measured loss differences ≤ 3.6e-6 relative (DPO; SFT, ORPO 9e-8,
KTO 1.3e-6, GRPO 0) and gradient differences ≤ 3.1e-6 of the largest LoRA gradient (equivalent but
different reductions: Mindprint packs a prompt's completions into one row and routes CPU products
through oneDNN, TRL pads each sequence); asserted at 1e-5 and 1e-4, far below what a real
difference gives (TRL's default KL gradient correction below shows as 3.3e-3).

Deviations, each configured or cut to the same setting here:
* The chat template writes ``\\n`` after the assistant's ``<|im_end|>``. TRL's SFT/DPO/KTO
  tokenizers keep it in the completion (and train on it); TRL's experimental ORPO also appends an
  EOS after it. Mindprint ends the answer at the end-of-turn token (data/render.py: the model must
  learn to stop, and never generates what follows). The TRL rows are cut after ``<|im_end|>``
  (checked to be only that text) before collation.
* SFT: TRL's ``completion_only_loss`` on prompt-completion records is Mindprint's assistant-only
  mask for single-turn chats (TRL's ``assistant_only_loss`` needs ``{% generation %}`` markers the
  bundled template lacks). Both normalise by the batch's target tokens.
* KTO: TRL pairs mismatched KL completions by rotating within a batch, Mindprint by a seeded
  rotation over the dataset (methods/kto.py); TRL's dataset is ordered along Mindprint's rotation,
  so both estimate z from the same pairs.
* ORPO: TRL's NLL covers prompt + answer; Mindprint's default ``orpo.nll: answer`` does not (for a
  voice, the prompt is someone else's words). Compared with ``orpo.nll: prompt_and_answer``.
* GRPO: sampling is bypassed on both sides with the same completions — Mindprint's
  ``backend.sample_completions``, TRL's ``_generate_single_turn`` return fixed token ids — and both
  score them with the same reward table; TRL's ``_generate_and_score_completions`` then builds the
  advantages, reference log-probs (β > 0) and masks, and ``compute_loss`` the loss. Compared: the
  prompts, the advantages and the loss/gradients. TRL 1.16 defaults to ``use_bias_correction_kl``
  (the KL term times the importance ratio, DeepSeek-V3.2): the same value on-policy, but its
  gradient gains KL·∇log p (measured: 3.3e-3 of the largest LoRA gradient here, while β = 0
  matches to 1e-6). Mindprint's β·KL is the plain k3 estimate (losses/grpo.py), so TRL runs with
  ``use_bias_correction_kl=False``.
"""

from __future__ import annotations

import pytest
from datasets import Dataset

from conftest import write_jsonl
from parity_helpers import lora_cfg, torch_pair
from trl_trainer_helpers import (GRPO_COMPLETIONS, clear_grads, compare, copy_lora, cut,
                                 lora_grads, trl_base, trl_table_reward)

from mindprint.config import from_dict
from mindprint.methods import get_method

LOSS_REL, GRAD_REL = 1e-5, 1e-4
MEASURED: dict = {}      # method → (loss diff, grad diff), printed with -s


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINDPRINT_CACHE", str(tmp_path / "cache"))


def _cfg(model_dir, data, method, out, n, **sections):
    raw = {"method": method, "model": model_dir, "output_dir": str(out),
           "data": {"train": str(data), "max_length": 128, "eval_split": 0.0},
           "train": {"batch_size": n, "seed": 0},
           "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targets": "attn_mlp"}}
    raw.update(sections)
    return from_dict(raw)


def _mindprint_step(cfg, backend, model, *, rollout=None):
    """One micro-batch of the whole train split through the method, backward; (loss, grads,
    the method's examples)."""
    method = get_method(cfg)
    data = method.prepare(backend.tokenizer)
    method.on_setup(backend, data, lambda _: None)
    examples = data.train
    if rollout is not None:
        examples = method.rollout(backend, [examples], 0)[0]
    loss, _ = method.micro_loss(backend, examples, method.weight(examples))
    loss.backward()
    grads = lora_grads(model)
    clear_grads(model)
    return float(loss.detach()), grads, examples


def _trl_step(trainer, rows):
    """TRL's dataloader (unused columns dropped, its collator) on ``rows`` as one batch, its
    compute_loss, backward; (loss, grads)."""
    trainer.train_dataset = Dataset.from_list(rows)
    batches = list(trainer.get_train_dataloader())
    assert len(batches) == 1
    inputs = trainer._prepare_inputs(batches[0])
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    grads = lora_grads(trainer.model)
    clear_grads(trainer.model)
    return float(loss.detach()), grads


def _args(cls, tmp_path, n, **kw):
    return cls(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=n, report_to="none",
               use_cpu=True, seed=0, bf16=False, dataloader_num_workers=0, **kw)


def _record(method, diffs):
    MEASURED[method] = diffs
    print(f"\n{method}: loss rel diff {diffs[0]:.2e}, grad diff {diffs[1]:.2e} of max")


def _eot(tok) -> int:
    return tok.convert_tokens_to_ids("<|im_end|>")


# -- data: short, varied single-turn chats (one with a system prompt) ----------------------------
SFT_CHATS = [
    ("Is cash trash?", "Cash is an option on panic. Keep some."),
    ("How do I know it's a bubble?", "When your barber gives you stock tips, zoom out."),
    ("Why did bonds fall?", "Rates rose. Old coupons look worse next to new ones."),
    ("Give me one rule.", "Never sell in the first week of a crash."),
]
SYSTEM = {"role": "system", "content": "You answer like Mara: short, dry, calm."}


def _msgs(i, q, a):
    head = [SYSTEM] if i == 1 else []
    return head + [{"role": "user", "content": q}], [{"role": "assistant", "content": a}]


PAIRS = [
    ("What about the tide?", "Zoom out: the tide turns.",
     "Buy everything now, the tide never turns!"),
    ("Is gold safe?", "Safe from what? It is insurance, priced like it.",
     "Yes, gold always goes up."),
    ("Should I time the market?", "No. Time in it.",
     "Definitely, watch the charts hourly and trade."),
    ("What is risk?", "Not knowing what you own.",
     "Risk is volatility, measured by standard deviation."),
]


def _pair_rows():
    rows = []
    for i, (q, c, r) in enumerate(PAIRS):
        prompt = ([SYSTEM] if i == 2 else []) + [{"role": "user", "content": q}]
        rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": c}],
                     "rejected": [{"role": "assistant", "content": r}]})
    return rows


# -- SFT -----------------------------------------------------------------------------------------
def test_sft_matches_trl(tiny_model_dir, tmp_path):
    from trl import SFTConfig, SFTTrainer

    n = len(SFT_CHATS)
    chats = [_msgs(i, q, a) for i, (q, a) in enumerate(SFT_CHATS)]
    data = write_jsonl(tmp_path / "sft.jsonl", [{"messages": p + c} for p, c in chats])
    model, backend = torch_pair(tiny_model_dir, lora_cfg())
    cfg = _cfg(tiny_model_dir, data, "sft", tmp_path / "run", n)
    mp_loss, mp_grads, rendered = _mindprint_step(cfg, backend, model)

    ds = Dataset.from_list([{"prompt": p, "completion": c} for p, c in chats])
    twin, peft_config = trl_base(tiny_model_dir, model)
    trainer = SFTTrainer(model=twin, peft_config=peft_config,
                         args=_args(SFTConfig, tmp_path, n, completion_only_loss=True,
                                    max_length=None),
                         train_dataset=ds, processing_class=backend.tokenizer)
    copy_lora(trainer, model)
    tok = backend.tokenizer
    rows = []
    for r, row in zip(rendered, trainer.train_dataset):
        # Mindprint's rendering ends with the template's "\n" after <|im_end|>, untrained (it only
        # feeds a position nothing is predicted from); TRL trains on it: cut both there
        end = max(i for i, m in enumerate(r.loss_mask) if m) + 1
        assert r.input_ids[end - 1] == _eot(tok) and not any(r.loss_mask[end:])
        assert tok.decode(r.input_ids[end:]).strip() == ""
        row = cut(row, tok, end, "input_ids", "labels")
        assert row["input_ids"] == r.input_ids[:end]           # same chat-template tokens
        # same trained tokens (TRL folds its completion mask into the labels)
        assert row["labels"] == [t if m else -100
                                 for t, m in zip(r.input_ids[:end], r.loss_mask[:end])]
        rows.append(row)
    trl_loss, trl_grads = _trl_step(trainer, rows)
    _record("sft", compare(mp_loss, trl_loss, mp_grads, trl_grads, loss_rel=LOSS_REL,
                           grad_rel=GRAD_REL))


# -- DPO (sigmoid) -------------------------------------------------------------------------------
def _check_group_rows(trainer, groups, tok, cols):
    """TRL's prompt/completion rows, cut after the end-of-turn token, equal Mindprint's groups."""
    p_col, c_cols = cols
    out = []
    for g, row in zip(groups, trainer.train_dataset):
        assert row[p_col] == g.prompt
        for col, comp, mask in zip(c_cols, g.completions, g.masks):
            row = cut(row, tok, len(comp), col)
            assert row[col] == comp and all(mask) and comp[-1] == _eot(tok)
        out.append(row)
    return out


def test_dpo_matches_trl(tiny_model_dir, tmp_path):
    from trl import DPOConfig, DPOTrainer

    n = len(PAIRS)
    data = write_jsonl(tmp_path / "pref.jsonl", _pair_rows())
    model, backend = torch_pair(tiny_model_dir, lora_cfg())
    cfg = _cfg(tiny_model_dir, data, "dpo", tmp_path / "run", n, dpo={"beta": 0.5})
    mp_loss, mp_grads, groups = _mindprint_step(cfg, backend, model)

    twin, peft_config = trl_base(tiny_model_dir, model)
    trainer = DPOTrainer(model=twin, peft_config=peft_config,
                         args=_args(DPOConfig, tmp_path, n, beta=0.5, loss_type=["sigmoid"],
                                    max_length=None),
                         train_dataset=Dataset.from_list(_pair_rows()),
                         processing_class=backend.tokenizer)
    copy_lora(trainer, model)
    rows = _check_group_rows(trainer, groups, backend.tokenizer,
                             ("prompt_ids", ("chosen_ids", "rejected_ids")))
    trl_loss, trl_grads = _trl_step(trainer, rows)
    _record("dpo", compare(mp_loss, trl_loss, mp_grads, trl_grads, loss_rel=LOSS_REL,
                           grad_rel=GRAD_REL))


# -- ORPO (TRL's NLL over prompt + answer) -------------------------------------------------------
def test_orpo_prompt_and_answer_matches_trl(tiny_model_dir, tmp_path):
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    n = len(PAIRS)
    data = write_jsonl(tmp_path / "pref.jsonl", _pair_rows())
    model, backend = torch_pair(tiny_model_dir, lora_cfg())
    cfg = _cfg(tiny_model_dir, data, "orpo", tmp_path / "run", n,
               orpo={"lam": 0.25, "nll": "prompt_and_answer"})
    mp_loss, mp_grads, groups = _mindprint_step(cfg, backend, model)

    twin, peft_config = trl_base(tiny_model_dir, model)
    trainer = ORPOTrainer(model=twin, peft_config=peft_config,
                          args=_args(ORPOConfig, tmp_path, n, beta=0.25, max_length=512),
                          train_dataset=Dataset.from_list(_pair_rows()),
                          processing_class=backend.tokenizer)
    copy_lora(trainer, model)
    tok = backend.tokenizer
    rows = []
    for g, row in zip(groups, trainer.train_dataset):
        assert row["prompt_input_ids"] == g.prompt
        for side, comp in zip(("chosen", "rejected"), g.completions):
            row = cut(row, tok, len(g.prompt) + len(comp), f"{side}_input_ids",
                      f"{side}_attention_mask", f"{side}_labels")
            assert row[f"{side}_input_ids"] == g.prompt + comp
            assert row[f"{side}_labels"] == [-100] * len(g.prompt) + comp
        rows.append(row)
    trl_loss, trl_grads = _trl_step(trainer, rows)
    _record("orpo", compare(mp_loss, trl_loss, mp_grads, trl_grads, loss_rel=LOSS_REL,
                            grad_rel=GRAD_REL))
    # the default (answer-only NLL) is a different objective: it must not match TRL's
    clear_grads(model)
    ans_loss, _, _ = _mindprint_step(_cfg(tiny_model_dir, data, "orpo", tmp_path / "run2", n,
                                          orpo={"lam": 0.25}), backend, model)
    assert abs(ans_loss - trl_loss) > 1e-3


# -- KTO -----------------------------------------------------------------------------------------
KTO_ROWS = [
    ("What about the tide?", "Zoom out: the tide turns.", True),
    ("Is gold safe?", "Yes, gold always goes up.", False),
    ("Should I time the market?", "No. Time in it.", True),
    ("What is risk?", "Risk is volatility, measured by standard deviation.", False),
]


def test_kto_matches_trl(tiny_model_dir, tmp_path):
    from trl import KTOConfig, KTOTrainer

    n = len(KTO_ROWS)
    recs = [{"prompt": [{"role": "user", "content": q}],
             "completion": [{"role": "assistant", "content": a}], "label": y}
            for q, a, y in KTO_ROWS]
    data = write_jsonl(tmp_path / "kto.jsonl", recs)
    model, backend = torch_pair(tiny_model_dir, lora_cfg())
    cfg = _cfg(tiny_model_dir, data, "kto", tmp_path / "run", n, kto={"beta": 0.5})
    mp_loss, mp_grads, groups = _mindprint_step(cfg, backend, model)

    # TRL gives example j the KL completion of example j−1 (in its batch); order the dataset
    # along Mindprint's seeded rotation so that both use the same mismatched pairs
    partner = {i: next(j for j, h in enumerate(groups) if h.completions == g.kl.completions)
               for i, g in enumerate(groups)}
    order = [0]
    while len(order) < n:
        order.append(next(i for i, p in partner.items() if p == order[-1]))
    assert partner[order[0]] == order[-1]                    # one cycle: a rotation
    groups = [groups[i] for i in order]
    twin, peft_config = trl_base(tiny_model_dir, model)
    trainer = KTOTrainer(model=twin, peft_config=peft_config,
                         args=_args(KTOConfig, tmp_path, n, beta=0.5, max_length=None),
                         train_dataset=Dataset.from_list([recs[i] for i in order]),
                         processing_class=backend.tokenizer)
    copy_lora(trainer, model)
    tok = backend.tokenizer
    rows = []
    for k, (g, row) in enumerate(zip(groups, trainer.train_dataset)):
        assert row["prompt_ids"] == g.prompt and row["label"] == g.labels[0]
        row = cut(row, tok, len(g.completions[0]), "completion_ids")
        row = cut(row, tok, len(g.kl.completions[0]), "KL_completion_ids")
        assert row["completion_ids"] == g.completions[0]
        assert row["KL_completion_ids"] == g.kl.completions[0] == groups[k - 1].completions[0]
        rows.append(row)
    trl_loss, trl_grads = _trl_step(trainer, rows)
    _record("kto", compare(mp_loss, trl_loss, mp_grads, trl_grads, loss_rel=LOSS_REL,
                           grad_rel=GRAD_REL))


# -- GRPO (fixed completions and rewards) --------------------------------------------------------
def test_grpo_matches_trl(tiny_model_dir, tmp_path, monkeypatch):
    from trl import GRPOConfig, GRPOTrainer

    prompts = list(GRPO_COMPLETIONS)
    G = len(GRPO_COMPLETIONS[prompts[0]])
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": q} for q in prompts])
    model, backend = torch_pair(tiny_model_dir, lora_cfg())
    tok = backend.tokenizer
    eot = _eot(tok)
    ids = [tok(c, add_special_tokens=False)["input_ids"] + [eot]
           for q in prompts for c in GRPO_COMPLETIONS[q]]
    grpo = {"group_size": G, "temperature": 0.7, "beta": 0.05, "loss_type": "grpo",
            "scale_rewards": "group", "max_completion_length": 24,
            "rewards": ["trl_trainer_helpers:table_reward"]}
    cfg = _cfg(tiny_model_dir, data, "grpo", tmp_path / "run", len(prompts), grpo=grpo)

    seen = {}

    def fixed_samples(prompt_ids, *, n, **_):
        seen["prompts"] = prompt_ids
        assert n == G
        return [(c, True) for c in ids]

    monkeypatch.setattr(backend, "sample_completions", fixed_samples)
    mp_loss, mp_grads, samples = _mindprint_step(cfg, backend, model, rollout=True)

    def fixed_turn(prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        seen["trl_prompts"] = prompt_ids
        return [list(c) for c in ids], None

    twin, peft_config = trl_base(tiny_model_dir, model)
    trainer = GRPOTrainer(model=twin, peft_config=peft_config, reward_funcs=trl_table_reward,
                          args=_args(GRPOConfig, tmp_path, len(ids), num_generations=G,
                                     temperature=0.7, beta=0.05, loss_type="grpo",
                                     scale_rewards="group", max_completion_length=24,
                                     num_iterations=1, epsilon=0.2,
                                     use_bias_correction_kl=False),
                          train_dataset=Dataset.from_list(
                              [{"prompt": [{"role": "user", "content": q}]} for q in prompts]),
                          processing_class=tok)
    copy_lora(trainer, model)
    monkeypatch.setattr(trainer, "_generate_single_turn", fixed_turn)
    batch = [trainer.train_dataset[i] for i in range(len(prompts)) for _ in range(G)]
    inputs = trainer._generate_and_score_completions(batch)
    # the same prompts (TRL's chat-template rendering) and advantages
    assert [list(p) for p in seen["trl_prompts"]] == [list(p) for p in seen["prompts"]
                                                      for _ in range(G)]
    assert inputs["advantages"].tolist() == pytest.approx([s.advantage for s in samples],
                                                          rel=1e-5, abs=1e-6)
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    trl_grads = lora_grads(trainer.model)
    _record("grpo", compare(mp_loss, float(loss.detach()), mp_grads, trl_grads,
                            loss_rel=LOSS_REL, grad_rel=GRAD_REL,
                            loss_scale=float(inputs["advantages"].abs().mean())))
