"""Topic curriculum on the tiny random model: planning errors, adapter carried across topics,
replay, gates (stop / continue / retry), outputs, and a SIGKILL'd run resumed at the right topic
and step."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import chat, start_then_sigkill, write_jsonl
from mindprint import config as C
from mindprint.curriculum import plan, run_curriculum
from mindprint.errors import ConfigError

WORDS = ["tide", "season", "pendulum", "credit", "crowd", "cycle", "risk", "cash", "fear", "greed"]


@pytest.fixture
def topic_files(tmp_path):
    rows, held = [], []
    for topic in ("markets", "habits"):
        for i, w in enumerate(WORDS):
            r = chat(f"On {topic}: what about the {w} number {i}?",
                     f"Zoom out. The {w} of {topic} turns, as in {1990 + i}. Patience is a position.",
                     topic)
            (held if i >= 8 else rows).append(r)
    return (str(write_jsonl(tmp_path / "train.jsonl", rows)),
            str(write_jsonl(tmp_path / "eval.jsonl", held)))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINDPRINT_CACHE", str(tmp_path / "cache"))


def raw_cfg(model, train, ev, out, topics, **cur):
    return {"method": "sft", "model": model,
            "data": {"train": train, "eval": ev, "max_length": 96},
            "train": {"max_steps": 3, "batch_size": 2, "lr": 5e-3, "seed": 3, "eval_every": 0,
                      "save_every": 1, "warmup_steps": 0},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targets": "attn_mlp"},
            "eval": {"max_prompts": 2, "max_new_tokens": 6, "batch_size": 2},
            "curriculum": {"topics": topics, **cur}, "output_dir": out}


def _adapter(d) -> dict:
    return load_file(str(Path(d) / "adapter_model.safetensors"))


def _max_diff(a, b) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_plan_reads_topics_and_reports_mistakes(tiny_model_dir, topic_files, tmp_path):
    train, ev = topic_files
    cfg = C.from_dict(raw_cfg(tiny_model_dir, train, ev, str(tmp_path / "r"),
                              [{"name": "markets"}, {"name": "h", "topic": "habits"}]))
    topics = plan(cfg)
    assert [len(t.train) for t in topics] == [8, 8]
    assert [len(t.held_out) for t in topics] == [2, 2]
    assert all(r.topic == "habits" for r in topics[1].train + topics[1].held_out)

    bad = C.from_dict(raw_cfg(tiny_model_dir, train, ev, str(tmp_path / "r"), [{"name": "cooking"}]))
    with pytest.raises(ConfigError, match=r"topics\[0\] \(cooking\).*topics found: habits, markets"):
        plan(bad)
    pref = C.from_dict(raw_cfg(tiny_model_dir, train, ev, str(tmp_path / "r"),
                               [{"name": "markets", "method": "dpo"}]))
    with pytest.raises(ConfigError, match="dpo needs PreferenceRecord data"):
        plan(pref)
    # no held-out records for the topic: a seeded 25 % of its data is held out
    split = C.from_dict(raw_cfg(tiny_model_dir, train, [], str(tmp_path / "r"),
                                [{"name": "markets"}], eval_split=0.25))
    (t,) = plan(split)
    assert (len(t.train), len(t.held_out)) == (6, 2)
    assert {r.messages[0].content for r in t.train}.isdisjoint({r.messages[0].content for r in t.held_out})


def test_config_errors_name_the_key():
    base = {"data": {"train": "x.jsonl"}}
    with pytest.raises(ConfigError, match="cannot be overridden per topic"):
        C.from_dict({**base, "curriculum": {"topics": [{"name": "a", "overrides": {"lora.r": 4}}]}})
    with pytest.raises(ConfigError, match="did you mean 'train.lr'"):
        C.from_dict({**base, "curriculum": {"topics": [{"name": "a", "overrides": {"train.lrr": 1}}]}})
    with pytest.raises(ConfigError, match="unique"):
        C.from_dict({**base, "curriculum": {"topics": [{"name": "a"}, {"name": "a"}]}})
    with pytest.raises(ConfigError, match="did you mean 'curriculum.gate.min_voice_match'|min_voice"):
        C.from_dict({**base, "curriculum": {"topics": [{"name": "a"}],
                                            "gate": {"min_voice_fidelty": 0.3}}})
    # a curriculum whose topics bring their own files needs no data.train
    cfg = C.from_dict({"curriculum": {"topics": [{"name": "a", "data": "a.jsonl"}]}})
    assert cfg.data.train == []


def test_two_topics_carry_one_adapter_with_replay(tiny_model_dir, topic_files, tmp_path):
    train, ev = topic_files
    out = tmp_path / "cur"
    topics = [{"name": "markets", "steps": 3},
              {"name": "habits", "method": "kl_sft", "steps": 2,
               "overrides": {"train.lr": 1e-12, "kl.lambda": 0.5}}]
    cfg = C.from_dict(raw_cfg(tiny_model_dir, train, ev, str(out), topics, replay=0.5))
    logs: list[str] = []
    s = run_curriculum(cfg, log=logs.append)
    assert s["completed"] and s["stopped_at"] is None
    t1, t2 = out / "topics" / "01-markets", out / "topics" / "02-habits"
    # topic 2 started from topic 1's adapter (its lr is ~0, so it barely moved)
    assert _max_diff(_adapter(t1 / "adapter"), _adapter(t2 / "adapter")) < 1e-6
    assert _max_diff(_adapter(t2 / "adapter"), _adapter(out / "adapter")) == 0.0
    a1 = _adapter(t1 / "adapter")
    assert max(float(v.abs().max()) for k, v in a1.items() if "lora_B" in k) > 0   # it trained
    # replay: 8 own examples + ceil(0.5 · 8) from topic 1
    lines = (t2 / "data" / "train.jsonl").read_text().splitlines()
    assert len(lines) == 12
    assert sum(json.loads(x)["topic"] == "markets" for x in lines) == 4
    # each topic is a normal run with its own config, metrics and eval report
    assert yaml.safe_load((t2 / "config.yaml").read_text())["method"] == "kl_sft"
    assert (t2 / "eval" / "report.json").exists()
    summary = json.loads((out / "curriculum_summary.json").read_text())
    assert [r["topic"] for r in summary["topics"]] == ["markets", "habits"]
    for r in summary["topics"]:
        assert r["status"] == "done"
        assert 0 < r["eval"]["n_prompts"] <= 2
        assert isinstance(r["eval"]["content_similarity"], float)
        assert isinstance(r["eval"]["base_content_similarity"], float)
        assert 0 <= r["eval"]["voice_match"] <= 1 and 0 <= r["eval"]["base_voice_match"] <= 1
        assert r["eval"]["perplexity"] > 0
    assert (out / "curriculum-plots" / "content_similarity.svg").exists()
    assert "curriculum-plots/loss.svg" in (out / "curriculum.html").read_text()
    table = (out / "curriculum.md").read_text()
    assert "| markets | sft | done | 3 |" in table and "| habits | kl_sft | done | 2 |" in table
    assert sum("ce" in json.loads(x) for x in (t2 / "metrics.jsonl").read_text().splitlines()) == 2


def test_curriculum_on_mlx_carries_the_adapter(tiny_model_dir, topic_files, tmp_path):
    """backend: mlx — each topic an mlx run started from the previous topic's adapter; the gates'
    evaluation reads the PEFT-format adapter the mlx run writes."""
    import mlx_lm  # noqa: F401
    train, ev = topic_files
    out = tmp_path / "cur"
    topics = [{"name": "markets", "steps": 2},
              {"name": "habits", "steps": 1, "overrides": {"train.lr": 1e-12}}]
    raw = dict(raw_cfg(tiny_model_dir, train, ev, str(out), topics), backend="mlx")
    s = run_curriculum(C.from_dict(raw), log=lambda m: None)
    assert s["completed"] and s["stopped_at"] is None
    t1, t2 = out / "topics" / "01-markets", out / "topics" / "02-habits"
    assert yaml.safe_load((t2 / "config.yaml").read_text())["backend"] == "mlx"
    assert json.loads((t1 / "summary.json").read_text())["backend"] == "mlx"
    assert (t2 / "adapter-mlx" / "adapters.safetensors").exists()
    a1 = _adapter(t1 / "adapter")
    assert max(float(v.abs().max()) for k, v in a1.items() if "lora_B" in k) > 0   # it trained
    assert _max_diff(a1, _adapter(t2 / "adapter")) < 1e-6      # topic 2 started from topic 1
    assert _max_diff(_adapter(t2 / "adapter"), _adapter(out / "adapter")) == 0.0
    assert isinstance(json.loads((out / "curriculum_summary.json").read_text())["topics"][1]
                      ["eval"]["content_similarity"], float)


def test_curriculum_on_mlx_refuses_a_method_it_lacks(tiny_model_dir, topic_files, tmp_path, capsys,
                                                    monkeypatch):
    import mlx_lm  # noqa: F401
    from mindprint import registry
    from mindprint.cli import main

    # every method runs on mlx now; a build without one (grpo here) refuses it up front
    monkeypatch.setitem(registry.METHODS, "grpo",
                        dataclasses.replace(registry.METHODS["grpo"], backends=("torch",)))

    train, ev = topic_files
    cfg = tmp_path / "c.yaml"
    raw = dict(raw_cfg(tiny_model_dir, train, ev, str(tmp_path / "cur"),
                       [{"name": "markets", "steps": 1, "method": "grpo"}]), backend="mlx")
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["train", str(cfg)]) != 0
    assert "does not run on the mlx backend" in capsys.readouterr().err


@pytest.mark.parametrize("on_fail", ["stop", "continue", "retry"])
def test_gate(on_fail, tiny_model_dir, topic_files, tmp_path):
    train, ev = topic_files
    out = tmp_path / on_fail
    # the voice verifier's gate, and (retry) the content gate under its old name min_voice_fidelity
    key, label = ("min_voice_fidelity", "content similarity") if on_fail == "retry" else \
        ("min_voice_match", "voice match")
    gate = {key: 0.999, "on_fail": on_fail, "max_retries": 1, "retry_steps": 2}
    cfg = C.from_dict(raw_cfg(tiny_model_dir, train, ev, str(out),
                              [{"name": "markets", "steps": 2}, {"name": "habits", "steps": 1}],
                              gate=gate))
    s = run_curriculum(cfg, log=lambda _: None)
    first, second = s["topics"]
    assert label in first["gate_failures"][0]
    if on_fail == "continue":
        assert first["status"] == "failed" and second["status"] == "failed"
        assert s["stopped_at"] is None
    else:
        assert first["status"] == "stopped" and second["status"] == "pending"
        assert s["stopped_at"] == "markets"
        assert not (out / "topics" / "02-habits").exists()
    if on_fail == "retry":   # one retry with 2 more steps, resumed from the topic's checkpoint
        assert first["attempts"] == 1 and first["steps"] == 4 and first["train"]["steps"] == 4
    else:
        assert first["attempts"] == 0 and first["train"]["steps"] == 2


def test_killed_curriculum_resumes_at_the_right_topic_and_step(tiny_model_dir, topic_files, tmp_path):
    train, ev = topic_files
    topics = [{"name": "markets", "steps": 3}, {"name": "habits", "steps": 30}]

    def write(name):
        raw = raw_cfg(tiny_model_dir, train, ev, str(tmp_path / name), topics)
        raw["train"]["save_every"] = 5
        p = tmp_path / f"{name}.yaml"
        p.write_text(yaml.safe_dump(raw))
        return p

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cli = [sys.executable, "-m", "mindprint.cli", "train"]
    r = subprocess.run(cli + [str(write("full"))], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    killed = write("killed")
    start_then_sigkill(cli + [str(killed)], env, tmp_path / "killed" / "topics" / "02-habits" / "checkpoints")
    assert not (tmp_path / "killed" / "topics" / "02-habits" / "adapter").exists(), "killed too late"
    state = json.loads((tmp_path / "killed" / "curriculum_state.json").read_text())["topics"]
    assert state["markets"]["status"] == "done" and state["habits"]["status"] == "training"
    t1_metrics = (tmp_path / "killed" / "topics" / "01-markets" / "metrics.jsonl").read_text()

    r = subprocess.run(cli + [str(killed), "--resume"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "'habits'" in r.stderr and "(resuming)" in r.stderr and "resumed from" in r.stderr
    assert "'markets': sft" not in r.stderr              # topic 1 was not trained again
    assert (tmp_path / "killed" / "topics" / "01-markets" / "metrics.jsonl").read_text() == t1_metrics
    assert _max_diff(_adapter(tmp_path / "full" / "adapter"),
                     _adapter(tmp_path / "killed" / "adapter")) <= 1e-6
    # without --resume an existing curriculum run is refused, with a hint
    r = subprocess.run(cli + [str(killed)], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "--resume" in r.stderr and "Traceback" not in r.stderr


def test_grpo_topic_trains_on_the_topics_answers_as_prompts(tiny_model_dir, topic_files, tmp_path):
    """A GRPO topic after an SFT topic: its chats become prompts whose reference answer is the
    person's reply (what content_similarity scores), and it continues the same adapter."""
    train, ev = topic_files
    out = tmp_path / "cur"
    topics = [{"name": "markets", "steps": 2},
              {"name": "habits", "method": "grpo", "steps": 2,
               "overrides": {"grpo.group_size": 2, "grpo.max_completion_length": 4,
                             "grpo.rewards": ["length"], "grpo.length_range": [1, 2],
                             "grpo.sample_every": 0}}]
    cfg = C.from_dict(raw_cfg(tiny_model_dir, train, ev, str(out), topics))
    planned = plan(cfg)
    assert all(type(r).__name__ == "PromptRecord" and r.answer.startswith("Zoom out.")
               for r in planned[1].train)
    s = run_curriculum(cfg, log=lambda *a: None)
    assert s["completed"]
    t2 = out / "topics" / "02-habits"
    rows = [json.loads(x) for x in (t2 / "data" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(set(r) >= {"prompt", "answer"} for r in rows)
    metrics = [json.loads(x) for x in (t2 / "metrics.jsonl").read_text().splitlines()]
    assert sum("reward" in m for m in metrics) == 2
    assert _max_diff(_adapter(t2 / "adapter"), _adapter(out / "adapter")) == 0.0
    summary = json.loads((out / "curriculum_summary.json").read_text())
    assert [r["status"] for r in summary["topics"]] == ["done", "done"]
    assert "| habits | grpo | done | 2 |" in (out / "curriculum.md").read_text()
