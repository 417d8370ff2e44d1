"""A server killed (SIGKILL) during a run: after a restart the run shows as interrupted, and one
resume call finishes it from its last checkpoint."""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from .helpers import chat_rows, free_port, start_server, tiny_run_config, wait_for



def test_server_killed_during_run_then_resumed(tmp_path, tiny_model_dir):
    ws = tmp_path / "ws"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(ws, port)
    try:
        ds = httpx.post(f"{base}/api/datasets",
                        files={"file": ("train.jsonl", chat_rows(24))}).json()
        cfg = tiny_run_config(tiny_model_dir, ds["id"], max_steps=150, save_every=5,
                              eval_every=0, keep_last=2)
        run = httpx.post(f"{base}/api/runs", json={"name": "long", "config": cfg})
        assert run.status_code == 201, run.text
        run_id = run.json()["id"]
        get = lambda: _ok(httpx.get(f"{base}/api/runs/{run_id}"))  # noqa: E731
        first = wait_for(lambda: (r := get())["checkpoints"] >= 1 and r, 120,
                         "the run's first checkpoint")
        assert first["status"] == "running"
        pid = wait_for(lambda: (ws / "mindprint.db").exists() and _job_pid(ws, run_id), 10, "pid")
    finally:
        server.send_signal(signal.SIGKILL)          # the server dies without any cleanup
        server.wait()

    # the training child was told (PR_SET_PDEATHSIG) and stops at the end of its step
    wait_for(lambda: not _alive(pid), 60, "the orphaned training process to stop")

    server = start_server(ws, port)
    try:
        r = httpx.get(f"{base}/api/runs/{run_id}").json()
        assert r["status"] == "interrupted", r
        assert r["resumable"] and r["checkpoints"] >= 1
        assert 0 < r["step"] < 150                         # it really stopped mid-run
        listed = {x["id"]: x["status"] for x in httpx.get(f"{base}/api/runs").json()}
        assert listed[run_id] == "interrupted"

        res = httpx.post(f"{base}/api/runs/{run_id}/resume")
        assert res.status_code == 200 and res.json()["status"] == "queued", res.text
        done = wait_for(lambda: (x := httpx.get(f"{base}/api/runs/{run_id}").json())["status"]
                        not in ("queued", "running") and x, 180, "the resumed run to finish", 0.3)
        assert done["status"] == "completed", (done, httpx.get(f"{base}/api/runs/{run_id}/log").text)
        assert done["step"] == 150 and done["has_adapter"]
        log = httpx.get(f"{base}/api/runs/{run_id}/log", params={"tail": 2000}).text
        assert "resumed from" in log and "--resume" in log
        rows = httpx.get(f"{base}/api/runs/{run_id}/metrics").json()
        steps = [x["step"] for x in rows if "loss" in x]
        assert steps == list(range(1, 151))              # no step lost or repeated
        z = httpx.get(f"{base}/api/runs/{run_id}/adapter.zip")
        assert z.status_code == 200 and z.content[:2] == b"PK"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def _job_pid(ws, run_id):
    import sqlite3

    con = sqlite3.connect(ws / "mindprint.db")
    try:
        row = con.execute("SELECT pid FROM jobs WHERE id = ?", (run_id,)).fetchone()
    finally:
        con.close()
    return row[0] if row and row[0] else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return True


def _ok(r):
    assert r.status_code == 200, r.text
    return r.json()
