"""Shared bits of the server tests: a free port, a server subprocess, polling, a tiny run config."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(fn, timeout: float, what: str, every: float = 0.1):
    """Poll ``fn`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def start_server(workspace: Path, port: int, *extra: str) -> subprocess.Popen:
    log = open(workspace.parent / f"server-{port}-{time.time_ns()}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "mindprint.cli", "serve", "--workspace",
                             str(workspace), "--port", str(port), *extra],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = log.name
    import httpx

    def up():
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {Path(log.name).read_text()[-2000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 60, "the server to answer")
    return proc


def chat_rows(n: int = 24) -> bytes:
    words = ["tide", "season", "pendulum", "credit", "crowd", "cycle", "risk", "cash"]
    rows = []
    for i in range(n):
        w = words[i % len(words)]
        rows.append({"messages": [
            {"role": "user", "content": f"Tell me about the {w} number {i}."},
            {"role": "assistant", "content": f"Zoom out. The {w} turns, as it did in {1990 + i}. "
                                             "Patience is a position."}]})
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def tiny_run_config(model_dir: str, train_id: str, eval_id: str | None = None, **train) -> dict:
    t = {"max_steps": 6, "batch_size": 2, "lr": 5e-3, "seed": 3, "eval_every": 3,
         "save_every": 3, "warmup_steps": 1, "eval_at_start": False, "num_threads": 1}
    t.update(train)
    return {"method": "sft", "backend": "torch", "model": model_dir,
            "data": {"train": [train_id], "eval": [eval_id] if eval_id else [], "max_length": 64},
            "train": t, "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}
