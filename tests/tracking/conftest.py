"""Fixtures for tracking, manifests, the runs registry and reports.

trackio reads ``TRACKIO_DIR`` once, when it is imported: point it at a private directory before
any test can import it, so the suite never writes into ``~/.cache/huggingface/trackio``.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

if "trackio" not in sys.modules:
    _TRACKIO_DIR = tempfile.mkdtemp(prefix="mindprint-test-trackio-")
    os.environ["TRACKIO_DIR"] = _TRACKIO_DIR
    atexit.register(shutil.rmtree, _TRACKIO_DIR, True)

from conftest import chat, tiny_config, write_jsonl  # noqa: E402

WORDS = ["tide", "season", "pendulum", "credit", "crowd", "cycle", "risk", "cash", "fear", "greed",
         "boom", "bust"]


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


TRACKERS = [t for t, m in (("tensorboard", "tensorboard"), ("mlflow", "mlflow"),
                           ("trackio", "trackio")) if installed(m)]


def chat_files(d: Path) -> tuple[str, str]:
    rows = [chat(f"Tell me about the {w} number {i}.",
                 f"Zoom out. The {w} turns, as it did in year {1990 + i}. Patience is a position.")
            for i, w in enumerate(WORDS * 2)]
    d.mkdir(parents=True, exist_ok=True)
    return (str(write_jsonl(d / "train.jsonl", rows[:20])),
            str(write_jsonl(d / "eval.jsonl", rows[20:])))


def small_config(model_dir, train, ev, out, **over) -> dict:
    """The suite's tiny config, shortened: 4 steps, evals at 0, 2, 4."""
    return tiny_config(model_dir, train, ev, out, **over)


@pytest.fixture(scope="session")
def sft_run(tiny_model_dir, tmp_path_factory) -> Path:
    """One finished SFT run on the tiny model, fed to every installed tracker (trained once)."""
    from mindprint import config as C
    from mindprint.training import run_training

    root = tmp_path_factory.mktemp("sft-run")
    train, ev = chat_files(root / "data")
    raw = small_config(tiny_model_dir, train, ev, str(root / "run"))
    raw["report_to"] = TRACKERS
    logs: list[str] = []
    run_training(C.from_dict(raw), log=logs.append)
    (root / "log.txt").write_text("\n".join(logs))
    return root / "run"


def read_json(p) -> dict:
    return json.loads(Path(p).read_text(encoding="utf-8"))
