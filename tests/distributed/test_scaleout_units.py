"""Scale-out pieces that need no second process: the sharded sampler, resume positions across world
sizes, launcher detection, the CUDA-only options' errors on CPU, and the GPU benchmark's skip."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO, tiny_config
from mindprint import config as C
from mindprint.backends.torch import dist as D
from mindprint.training import run_training
from mindprint.data.batching import StepSampler
from mindprint.errors import MindprintError


@pytest.mark.parametrize("world,accum", [(2, 1), (2, 3), (4, 2)])
def test_ranks_share_exactly_the_single_process_micro_batches(world, accum):
    lengths = [(i * 37) % 50 + 5 for i in range(101)]
    b = 3
    one = StepSampler(lengths, b * world, accum, seed=7)
    ranks = [StepSampler(lengths, b, accum, seed=7, world_size=world, rank=r) for r in range(world)]
    for _ in range(25):                        # crosses epoch boundaries
        want = one.next_step()
        got = [s.next_step() for s in ranks]
        for i in range(accum):
            shares = [g[i] for g in got]
            assert all(len(s) == b for s in shares)
            assert sorted(x for s in shares for x in s) == sorted(want[i])
        assert len({s.epoch for s in ranks} | {one.epoch}) == 1


def test_resume_position_is_global():
    lengths = list(range(10, 74))
    two = StepSampler(lengths, 2, 1, seed=1, world_size=2, rank=0)
    for _ in range(5):
        two.next_step()
    state = two.state()
    assert state["samples"] == 20 and state["group_size"] == 4
    same = StepSampler(lengths, 4, 1, seed=1)                # 1 process, same global batch
    assert same.load_state(state) is None and same.pos == 5
    other = StepSampler(lengths, 2, 1, seed=1)               # 1 process, half the global batch
    note = other.load_state(state)
    assert other.pos == 10 and "global batch" in note and "was 4 and is now 2" in note
    old = StepSampler(lengths, 4, 1, seed=1)                 # a checkpoint from before issue 9
    assert old.load_state({"epoch": 0, "pos": 3}) is None and old.pos == 3


def test_single_process_is_not_distributed(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert D.from_env() is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert D.from_env() is None


def test_world_size_without_a_launcher_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for key in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(MindprintError, match="torchrun or accelerate launch"):
        D.from_env()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only: the CPU refusal is what is tested")
@pytest.mark.parametrize("over,match", [({"model": {"quantize": 4}}, "model.quantize: 4 .*CUDA"),
                                        ({"train": {"liger": True}}, "train.liger")])
def test_cuda_only_options_fail_clearly_on_cpu(tiny_model_dir, tiny_chat_files, tmp_path, over,
                                               match):
    train, ev = tiny_chat_files
    raw = tiny_config(tiny_model_dir, train, ev, str(tmp_path / "run"))
    if "model" in over:
        raw["model"] = {"name": raw["model"], **over["model"]}
    raw["train"].update(over.get("train", {}))
    with pytest.raises(MindprintError, match=match):
        run_training(C.from_dict(raw), log=lambda s: None)


def test_quantize_accepts_4_or_8_only(tiny_chat_files):
    with pytest.raises(MindprintError, match="model.quantize"):
        C.from_dict({"data": {"train": tiny_chat_files[0]}, "model": {"quantize": 3}})
    assert C.from_dict({"data": {"train": tiny_chat_files[0]}}).model.quantize is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only: on CUDA the benchmark runs for real")
def test_gpu_benchmark_skips_cleanly_without_cuda():
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("skipped: no CUDA")
    assert json.loads(lines[-1]) == {"skipped": "no CUDA"}
