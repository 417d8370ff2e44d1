"""DPO, IPO, ORPO, SimPO and KTO through the one PyTorch loop, on the tiny random model.

Each method must learn a toy preference (persona answer over a generic one), log its metrics,
keep batch × accumulation exact, reuse its cached reference, and refuse bad data with file:line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_config, write_jsonl
from mindprint import config as C
from mindprint.training import run_training
from mindprint.errors import DataError
from mindprint.methods import get_method

WORDS = ["tide", "season", "pendulum", "credit", "crowd", "cycle", "risk", "cash", "fear", "greed",
         "boom", "bust"]
STEP_KEYS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margin", "rewards/accuracy",
             "nll/chosen", "logps/chosen", "logps/rejected")
EVAL_KEYS = ("eval_loss", "eval_pref_accuracy", "eval_rewards/chosen", "eval_rewards/rejected",
             "eval_rewards/margin", "eval_nll/chosen")


def pair(i: int, w: str) -> dict:
    return {"prompt": f"Tell me about the {w} number {i}.",
            "chosen": f"Zoom out. The {w} turns, as it did in year {1990 + i}. Patience is a position.",
            "rejected": f"There are several factors to consider regarding {w}. It depends."}


@pytest.fixture
def pref_files(tmp_path):
    rows = [pair(i, w) for i, w in enumerate(WORDS * 2)]
    return (str(write_jsonl(tmp_path / "pref_train.jsonl", rows[:18])),
            str(write_jsonl(tmp_path / "pref_eval.jsonl", rows[18:])))


@pytest.fixture
def kto_files(tmp_path):
    rows = []
    for i, w in enumerate(WORDS):
        p = pair(i, w)
        rows.append({"prompt": p["prompt"], "completion": p["chosen"], "label": True})
        rows.append({"prompt": p["prompt"], "completion": p["rejected"], "label": False})
    return str(write_jsonl(tmp_path / "kto_train.jsonl", rows))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Reference log-probs go to a per-test cache (the bundled model is already resolved)."""
    monkeypatch.setenv("MINDPRINT_CACHE", str(tmp_path / "cache"))


def cfg_for(method, model, train, ev, out, **train_over):
    raw = tiny_config(model, train, ev, out, **train_over)
    raw["method"] = method
    raw["data"]["max_length"] = 64
    raw["dpo"] = {"beta": 0.5}
    raw["kto"] = {"beta": 0.5}
    return raw


def rows_of(run_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def adapter(run_dir) -> dict:
    return load_file(str(Path(run_dir) / "adapter" / "adapter_model.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.parametrize("method", ["dpo", "ipo", "orpo", "simpo", "kto"])
def test_method_learns_the_preference(method, tiny_model_dir, pref_files, kto_files, tmp_path):
    train, ev = pref_files
    if method == "kto":
        train = kto_files
    out = tmp_path / "run"
    raw = cfg_for(method, tiny_model_dir, train, ev, str(out), max_steps=8, eval_every=4,
                  save_every=0, batch_size=3, lr=1e-2)
    s = run_training(C.from_dict(raw), log=lambda _: None)
    rows = rows_of(out)
    steps = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "eval_loss" in r]
    for k in STEP_KEYS:
        assert k in steps[-1], k
    for k in EVAL_KEYS:
        assert k in evals[-1], k
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    assert evals[-1]["eval_pref_accuracy"] >= 0.75
    assert evals[-1]["eval_rewards/margin"] > evals[0]["eval_rewards/margin"]
    # summary.json carries the method's last step and eval metrics
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_eval_metrics"]["eval_pref_accuracy"] == evals[-1]["eval_pref_accuracy"]
    assert "rewards/margin" in summary["final_train_metrics"]
    assert s["steps"] == 8


@pytest.mark.parametrize("method", ["dpo", "orpo"])
def test_accumulation_is_exact(method, tiny_model_dir, pref_files, tmp_path):
    """batch 4 × accum 1 == batch 1 × accum 4 (DPO: mean over pairs; ORPO: token-weighted NLL)."""
    train, ev = pref_files
    a = cfg_for(method, tiny_model_dir, train, ev, str(tmp_path / "a"), batch_size=4, grad_accum=1,
                max_steps=3, eval_every=0, save_every=0)
    b = cfg_for(method, tiny_model_dir, train, ev, str(tmp_path / "b"), batch_size=1, grad_accum=4,
                max_steps=3, eval_every=0, save_every=0)
    ra = run_training(C.from_dict(a), log=lambda _: None)
    rb = run_training(C.from_dict(b), log=lambda _: None)
    assert max_diff(adapter(tmp_path / "a"), adapter(tmp_path / "b")) < 1e-5
    assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-5)


def _count_reference_passes(monkeypatch) -> dict:
    from mindprint.methods import groups

    calls = {"n": 0}
    real = groups.live_reference

    def counting(*args, **kw):
        calls["n"] += 1
        return real(*args, **kw)

    monkeypatch.setattr(groups, "live_reference", counting)
    return calls


def test_reference_is_cached_and_reused(tiny_model_dir, pref_files, tmp_path, monkeypatch):
    train, ev = pref_files
    calls = _count_reference_passes(monkeypatch)
    raw = cfg_for("dpo", tiny_model_dir, train, ev, str(tmp_path / "r"), max_steps=4, save_every=2)
    logs: list[str] = []
    run_training(C.from_dict(raw), log=logs.append)
    first = calls["n"]
    assert first > 0
    assert sum("computed in" in line for line in logs) == 2          # train and eval, once each
    entries = sorted((tmp_path / "cache" / "reflogps").glob("*.safetensors"))
    assert len(entries) == 2
    mtimes = [p.stat().st_mtime_ns for p in entries]
    # a rerun (another output_dir, another LoRA rank: same base, data and max_length) reuses it
    logs.clear()
    raw2 = dict(raw, output_dir=str(tmp_path / "r2"), lora=dict(raw["lora"], r=2))
    run_training(C.from_dict(raw2), log=logs.append)
    assert calls["n"] == first
    assert sum("loaded from cache" in line for line in logs) == 2
    assert [p.stat().st_mtime_ns for p in entries] == mtimes
    # so does a resume
    logs.clear()
    raw3 = dict(raw, train=dict(raw["train"], max_steps=6))
    run_training(C.from_dict(raw3), resume=True, log=logs.append)
    assert calls["n"] == first
    assert any("resumed from" in line for line in logs)
    # another max_length is another entry
    raw4 = dict(raw, output_dir=str(tmp_path / "r4"), data=dict(raw["data"], max_length=48))
    run_training(C.from_dict(raw4), log=lambda _: None)
    assert calls["n"] > first
    assert len(list((tmp_path / "cache" / "reflogps").glob("*.safetensors"))) == 4


def test_live_reference_equals_cached(tiny_model_dir, pref_files, tmp_path):
    train, ev = pref_files
    cached = cfg_for("dpo", tiny_model_dir, train, ev, str(tmp_path / "c"), max_steps=1,
                     save_every=0)
    live = dict(cached, output_dir=str(tmp_path / "l"), dpo={"beta": 0.5, "reference": "live"})
    rc = run_training(C.from_dict(cached), log=lambda _: None)
    rl = run_training(C.from_dict(live), log=lambda _: None)
    assert not (tmp_path / "cache" / "reflogps").exists() or len(
        list((tmp_path / "cache" / "reflogps").glob("*"))) == 2   # live writes nothing more
    assert rl["train_loss"] == pytest.approx(rc["train_loss"], rel=1e-5, abs=1e-6)
    step_c = [r for r in rows_of(tmp_path / "c") if "loss" in r][0]
    step_l = [r for r in rows_of(tmp_path / "l") if "loss" in r][0]
    for k in ("rewards/chosen", "rewards/rejected", "logps/chosen"):
        assert step_l[k] == pytest.approx(step_c[k], rel=1e-4, abs=1e-5)
    assert max_diff(adapter(tmp_path / "c"), adapter(tmp_path / "l")) < 1e-6
    assert rl["final_eval_loss"] == pytest.approx(rc["final_eval_loss"], rel=1e-5)


@pytest.mark.parametrize("kind", ["layout", "bool", "float"])
def test_shared_prompt_rows_match_one_row_per_completion(tiny_model_dir, kind):
    """The packed [prompt | chosen | rejected] row gives the same log-probs and gradients as
    scoring each completion in its own padded row — with the per-branch attention (layout), and
    with a 4-D block mask through SDPA (bool) or eager attention (float)."""
    from mindprint.backends.torch.backend import TorchBackend
    from mindprint.backends.torch.load import load_base
    from mindprint.backends.torch.lora import add_lora
    from mindprint.backends.torch.packing import (group_batch, group_kind, group_logps, group_logps_by_rows)
    from mindprint.models import resolve

    model, tok = load_base(resolve(tiny_model_dir),
                           attn_implementation="eager" if kind == "float" else "auto")
    assert group_kind(model) == "layout"      # what the backend picks for an sdpa/eager Llama
    lcfg = C.LoraConfig(r=4, alpha=8, dropout=0.0)
    model = add_lora(model, lcfg, 0)
    for n, p in model.named_parameters():       # non-zero B so the adapter matters
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.05)
    backend = TorchBackend(model, tok)
    assert backend.group_layout == "shared_prompt"
    g = torch.Generator().manual_seed(0)
    ids = lambda n: torch.randint(5, 1000, (n,), generator=g).tolist()  # noqa: E731
    groups = [(ids(9), [(ids(6), [1] * 6), (ids(11), [1] * 10 + [0])]),
              (ids(3), [(ids(4), [0, 1, 1, 1]), (ids(2), [1, 1])]),
              (ids(5), [(ids(7), [1] * 7)])]
    grads = []
    for fn in (lambda: group_logps(model, group_batch(groups, tok.pad_token_id, "cpu", kind)),
               lambda: group_logps_by_rows(model, groups, tok.pad_token_id, "cpu")):
        model.zero_grad()
        sums, counts = fn()
        (sums * torch.tensor([[1.0, -2.0], [0.5, 3.0], [1.5, 0.0]])).sum().backward()
        grads.append(({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
                      sums.detach(), counts))
    (ga, sa, ca), (gb, sb, cb) = grads
    assert torch.equal(ca, cb) and ca.tolist() == [[6, 10], [3, 2], [7, 0]]
    assert torch.allclose(sa, sb, rtol=1e-5, atol=1e-4)
    assert sa[2, 1] == 0
    for n in ga:
        assert torch.allclose(ga[n], gb[n], rtol=1e-4, atol=1e-6), n


def test_per_branch_attention_only_where_it_applies(tiny_model_dir):
    """Gradient checkpointing would recompute a layer after the attention switch is undone, so
    it (like eager-only features such as soft-capping) falls back to the 4-D mask."""
    from mindprint.backends.torch.load import load_base
    from mindprint.backends.torch.packing import group_kind
    from mindprint.models import resolve

    model, _ = load_base(resolve(tiny_model_dir))
    assert group_kind(model) == "layout"
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert group_kind(model) == "bool"
    model, _ = load_base(resolve(tiny_model_dir), attn_implementation="eager")
    model.config.attn_logit_softcapping = 30.0
    assert group_kind(model) == "float"


def test_prompt_without_room_is_a_file_line_problem(tiny_model_dir, tmp_path, tokenizer):
    rows = [pair(i, w) for i, w in enumerate(WORDS[:4])]
    rows[2] = dict(rows[2], prompt="Explain the cycle. " * 40)
    rows[3] = dict(rows[3], chosen="Same start " * 30 + "then mine.",
                   rejected="Same start " * 30 + "then theirs.")
    train = write_jsonl(tmp_path / "t.jsonl", rows)
    raw = cfg_for("dpo", tiny_model_dir, str(train), str(train), str(tmp_path / "o"))
    raw["data"]["max_length"] = 96
    method = get_method(C.from_dict(raw))
    with pytest.raises(DataError) as e:
        method.prepare(tokenizer)
    problems = e.value.problems
    assert len(problems) == 2
    assert problems[0].startswith(f"{train}:3: the prompt is ") and "data.max_length=96" in problems[0]
    assert problems[1].startswith(f"{train}:4: chosen and rejected are identical")
    # tolerated within data.max_error_rate: skipped with a note
    raw["data"]["max_error_rate"] = 0.5
    data = get_method(C.from_dict(raw)).prepare(tokenizer)
    assert len(data.train) == 2 and any("skipped 2" in n for n in data.notes)


def test_equal_or_empty_sides_are_file_line_problems(tiny_model_dir, tmp_path, tokenizer):
    rows = [pair(0, "tide"), dict(pair(1, "risk"), rejected=pair(1, "risk")["chosen"]),
            dict(pair(2, "cash"), chosen="  ")]
    train = write_jsonl(tmp_path / "t.jsonl", rows)
    raw = cfg_for("dpo", tiny_model_dir, str(train), str(train), str(tmp_path / "o"))
    with pytest.raises(DataError) as e:
        get_method(C.from_dict(raw)).prepare(tokenizer)
    text = "\n".join(e.value.problems)
    assert f"{train}:2: chosen equals rejected" in text
    assert f"{train}:3: chosen: must not be empty" in text


def test_kto_refuses_one_label_class(tiny_model_dir, tmp_path, tokenizer):
    rows = [{"prompt": f"q{i}", "completion": f"answer {i}", "label": True} for i in range(6)]
    train = write_jsonl(tmp_path / "k.jsonl", rows)
    raw = cfg_for("kto", tiny_model_dir, str(train), str(train), str(tmp_path / "o"))
    with pytest.raises(DataError, match="all 6 completions are desirable.*KTO needs both"):
        get_method(C.from_dict(raw)).prepare(tokenizer)


def test_kto_takes_a_preference_file_and_mismatches_kl_pairs(tiny_model_dir, pref_files, tokenizer):
    train, ev = pref_files
    raw = cfg_for("kto", tiny_model_dir, train, ev, "unused")
    data = get_method(C.from_dict(raw)).prepare(tokenizer)
    assert len(data.train) == 18 and all(g.labels == [True, False] for g in data.train)
    for g in data.train:            # the KL pair: this prompt, another prompt's completions
        assert g.kl.prompt == g.prompt and g.kl.completions != g.completions


def test_preference_method_needs_preference_data(tiny_model_dir, tiny_chat_files, tokenizer):
    train, ev = tiny_chat_files
    raw = cfg_for("dpo", tiny_model_dir, train, ev, "unused")
    with pytest.raises(DataError, match="is 'chat' data but this needs preference"):
        get_method(C.from_dict(raw)).prepare(tokenizer)


@pytest.mark.parametrize("name", ["dpo", "ipo", "orpo", "kto", "simpo"])
def test_example_configs_load(name):
    from conftest import EXAMPLES

    cfg = C.load(EXAMPLES / f"{name}.yaml", use_env=False)
    assert cfg.method == name and cfg.model.name == "smollm2-135m-instruct"
    assert get_method(cfg).name == name
