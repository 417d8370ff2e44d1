"""Scale-out on torch.distributed (gloo on CPU): ``torchrun --nproc_per_node 2`` through the real
CLI against one process with twice the batch.

2 processes × batch b must log the same losses (rtol 1e-5) and end with the same adapter (max abs
difference ≤ 1e-5) as 1 process × batch 2b: every rank builds the same global step groups, takes a
strided share of each micro-batch, and the loss normaliser is summed over ranks. A checkpoint
written by 2 processes resumes in 1 (and one written by 1 resumes in 2 with FSDP2), continuing
the same global data order; rank 0 alone writes the run directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from conftest import REPO, chat, tiny_config, write_jsonl
from mindprint import config as C
from mindprint.training import run_training

pytestmark = pytest.mark.slow

WORDS = ["tide", "season", "pendulum", "credit", "crowd", "cycle", "risk", "cash", "fear", "greed",
         "boom", "bust"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Data files and a private reference cache shared by this module's runs."""
    root = tmp_path_factory.mktemp("dist")
    chats = [chat(f"Tell me about the {w} number {i}.",
                  f"Zoom out. The {w} turns, as it did in year {1990 + i}. Patience is a position.")
             for i, w in enumerate(WORDS * 2)]
    pairs = [{"prompt": f"Tell me about the {w} number {i}.",
              "chosen": f"Zoom out. The {w} turns, as it did in year {1990 + i}. Patience is a position.",
              "rejected": f"There are several factors to consider regarding {w}. It depends."}
             for i, w in enumerate(WORDS * 2)]
    files = {"chat": (write_jsonl(root / "train.jsonl", chats[:20]),
                      write_jsonl(root / "eval.jsonl", chats[20:])),
             "preference": (write_jsonl(root / "pref_train.jsonl", pairs[:18]),
                            write_jsonl(root / "pref_eval.jsonl", pairs[18:])),
             "prompts": write_jsonl(root / "prompts.jsonl",
                                    [{"prompt": p["prompt"], "answer": p["chosen"]} for p in pairs])}
    return root, files


def _config(model_dir, work, method: str, out: Path, **train) -> dict:
    root, files = work
    tr, ev = files["chat" if method == "sft" else "preference"]
    # the same eval batches in both runs: KTO's KL estimate z is taken per eval batch
    raw = tiny_config(model_dir, str(tr), str(ev), str(out), **{"eval_batch_size": 4, **train})
    raw["method"] = method
    if method in ("dpo", "kto"):
        raw["data"]["max_length"] = 64
        raw["dpo"] = {"beta": 0.5}
        raw["kto"] = {"beta": 0.5}
    if method == "grpo":
        raw["data"].update(train=[str(files["prompts"])], eval=[], max_length=96)
        raw["grpo"] = {"group_size": 4, "max_completion_length": 16, "rewards": ["length"],
                       "length_range": [3, 8], "sample_every": 2}
    return raw


def _env(work) -> dict:
    root, _ = work
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               MINDPRINT_CACHE=str(root / "cache"))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return env


def _one_process(raw: dict, work, monkeypatch, *, resume: bool = False) -> dict:
    monkeypatch.setenv("MINDPRINT_CACHE", str(work[0] / "cache"))
    return run_training(C.from_dict(raw), resume=resume, log=lambda s: None)


def _torchrun(raw: dict, work, *extra: str, nproc: int = 2) -> subprocess.CompletedProcess:
    cfg = Path(raw["output_dir"] + ".yaml")
    cfg.write_text(yaml.safe_dump(raw))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node", str(nproc), "-m", "mindprint.cli", "train", str(cfg),
                        *extra], env=_env(work), cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    return r


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _losses(run: Path, key: str) -> dict[int, float]:
    return {r["step"]: r[key] for r in _rows(run) if key in r}


def _adapter(run: Path) -> dict:
    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _assert_same_run(one: Path, two: Path, steps=(1, 2, 3, 4)) -> None:
    for key in ("loss", "eval_loss"):
        a, b = _losses(one, key), _losses(two, key)
        common = sorted(set(a) & set(b) & set(steps) | ({0} & set(a) & set(b)))
        assert common, key
        for s in common:
            assert b[s] == pytest.approx(a[s], rel=1e-5), (key, s, a[s], b[s])
    assert _max_diff(_adapter(one), _adapter(two)) <= 1e-5


def _cut_to_step(src: Path, dst: Path, step: int) -> None:
    """A copy of run ``src`` as a kill right after checkpoint ``step`` would have left it."""
    shutil.copytree(src, dst)
    for p in (dst / "checkpoints").iterdir():
        if int(p.name.split("-")[1]) > step:
            shutil.rmtree(p)
    shutil.rmtree(dst / "adapter")
    (dst / "summary.json").unlink()


@pytest.fixture(scope="module")
def sft_runs(tiny_model_dir, work, tmp_path_factory):
    """SFT: 1 process × batch 4 (in this process) and 2 processes × batch 2 (torchrun, CLI)."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("sft")
    try:
        _one_process(_config(tiny_model_dir, work, "sft", root / "one", batch_size=4), work, mp)
    finally:
        mp.undo()
    r = _torchrun(_config(tiny_model_dir, work, "sft", root / "two", batch_size=2), work)
    return root, r


def test_sft_two_processes_equal_one_process_with_twice_the_batch(sft_runs):
    root, _ = sft_runs
    _assert_same_run(root / "one", root / "two")
    # the logged token counts are global, not one rank's
    assert _losses(root / "one", "target_tokens") == _losses(root / "two", "target_tokens")


def test_rank_zero_alone_writes_the_run(sft_runs):
    root, r = sft_runs
    run = root / "two"
    rows = _rows(run)
    keys = [(x["step"], "loss" in x) for x in rows]
    assert len(keys) == len(set(keys)), "a metrics row was written twice (by two ranks)"
    assert [x["step"] for x in rows if "loss" in x] == [1, 2, 3, 4]
    assert not [p for p in run.rglob(".*")], "temporary files were left behind"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4
    state = json.loads((run / "checkpoints" / "step-0000002" / "state.json").read_text())
    assert state["world_size"] == 2 and state["sampler"]["group_size"] == 4
    assert json.loads((run / "manifest.json").read_text())["run"]["status"] == "completed"
    # the CLI of rank 0 alone prints the result
    assert r.stdout.count("adapter: ") == 1, r.stdout


def test_resume_two_process_checkpoint_in_one_process(sft_runs, tiny_model_dir, work, monkeypatch):
    """Killed after step 2 under torchrun, resumed in one process with the same global batch:
    the run ends as the uninterrupted one."""
    root, _ = sft_runs
    _cut_to_step(root / "two", root / "two-then-one", 2)
    raw = _config(tiny_model_dir, work, "sft", root / "two-then-one", batch_size=4)
    _one_process(raw, work, monkeypatch, resume=True)
    _assert_same_run(root / "one", root / "two-then-one", steps=(3, 4))


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_preference_two_processes_equal_one_process_with_twice_the_batch(method, tiny_model_dir,
                                                                       work, tmp_path, monkeypatch):
    """DPO (reference log-probs split between the ranks) and KTO (its KL estimate z taken over
    the global micro-batch)."""
    _one_process(_config(tiny_model_dir, work, method, tmp_path / "one", batch_size=4), work,
                 monkeypatch)
    r = _torchrun(_config(tiny_model_dir, work, method, tmp_path / "two", batch_size=2), work)
    _assert_same_run(tmp_path / "one", tmp_path / "two")
    # abs 1e-5: these are differences of summed sequence log-probs (magnitude ~100, float32
    # rounding ~1e-5), and a CPU's products may round a row differently in a 2- and a 4-row batch
    for key in ("rewards/margin", "rewards/accuracy", "eval_pref_accuracy", "kl"):
        a, b = _losses(tmp_path / "one", key), _losses(tmp_path / "two", key)
        assert a.keys() == b.keys() and all(b[s] == pytest.approx(a[s], rel=1e-5, abs=1e-5)
                                            for s in a), (key, a, b)
    # the reference log-probs were split between the ranks and cached once, by rank 0
    assert "split over the processes" in r.stderr or "loaded from cache" in r.stderr


def test_grpo_samples_per_rank(tiny_model_dir, work, tmp_path):
    """GRPO under torchrun: each rank samples its own prompts (no equality: sampling is seeded
    per rank); one metrics row per step with rewards from every rank; samples.jsonl by rank 0."""
    _torchrun(_config(tiny_model_dir, work, "grpo", tmp_path / "two", batch_size=1,
                      max_steps=2, eval_every=0, save_every=0), work)
    rows = [r for r in _rows(tmp_path / "two") if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(0.0 <= r["reward"] <= 1.0 and r["completion_len_max"] <= 16 for r in rows)
    samples = (tmp_path / "two" / "samples.jsonl").read_text().splitlines()
    assert {json.loads(x)["step"] for x in samples} == {1, 2}
    assert len(samples) == 2 * 4          # step 1 and step 2: one prompt of rank 0, 4 completions


def test_fsdp_resumes_a_one_process_checkpoint(sft_runs, tiny_model_dir, work):
    """FSDP2 (train.fsdp) on 2 processes continues a 1-process checkpoint and ends with the
    adapter of the uninterrupted 1-process run."""
    root, _ = sft_runs
    _cut_to_step(root / "one", root / "one-then-fsdp", 2)
    raw = _config(tiny_model_dir, work, "sft", root / "one-then-fsdp", batch_size=2)
    raw["train"].update(fsdp=True, save_every=1)      # a checkpoint mid-run, then training goes on
    _torchrun(raw, work, "--resume")
    _assert_same_run(root / "one", root / "one-then-fsdp", steps=(3, 4))
    assert json.loads((root / "one-then-fsdp" / "summary.json").read_text())["fsdp"] is True
