"""The job runner: train, eval and compare jobs as subprocesses of the ordinary CLI.

The server never trains in its own process. A job is ``python -m mindprint.cli train JOB.yaml``
(or ``eval`` / ``compare``) started in the job's directory under the workspace, with its output in
``JOB_DIR/log.txt`` and, for a training run, the usual run directory in ``JOB_DIR/run`` (whose
``metrics.jsonl`` the server streams to the browser). At most ``max_concurrent`` jobs run at once
(default 1); the rest wait in the queue, oldest first.

Each job runs in its own process group (a new session), so cancelling stops the whole group with
SIGTERM — the training loop then finishes its step, saves a checkpoint and exits 130 — and a
terminal's Ctrl-C to the server does not reach the jobs directly.

Server death. On Linux every job is started with ``PR_SET_PDEATHSIG = SIGTERM``: if the server is
killed (even with SIGKILL) the kernel sends the job SIGTERM, and a training job saves a checkpoint
and stops. When a server starts it reconciles every job its store still calls ``running``: if the
recorded pid is gone (or is a zombie, or is no longer that job's process — another program may have
reused the pid), the job is marked ``interrupted``; if the job's process is still alive (macOS, or
a server that was suspended rather than killed) it is stopped the same way (SIGTERM to its group,
SIGKILL after a grace period) and marked ``interrupted``. A run whose manifest shows it completed
in the meantime is marked ``completed``. An interrupted run resumes from its last checkpoint with
``mindprint train --resume`` (or starts over when it never wrote one).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..config import PROCESS_ENV
from .store import Store

GRACE_S = 60.0


def job_dir(workspace: Path, job_id: str) -> Path:
    return workspace / "jobs" / job_id


def run_dir(job: dict) -> Path:
    return Path(job["dir"]) / "run"


def log_path(job: dict) -> Path:
    return Path(job["dir"]) / "log.txt"


def _set_pdeathsig() -> None:          # runs in the child between fork and exec (Linux only)
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)          # PR_SET_PDEATHSIG
    except Exception:   # noqa: BLE001 - best effort: the restart reconcile still handles orphans
        pass


def _alive(pid: int | None) -> bool:
    """True for a running process; False for none, a zombie, or one we may not signal."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True          # no /proc (macOS): trust kill(0)


def _is_job_process(job: dict) -> bool:
    """The recorded pid still belongs to this job (pids are reused)."""
    pid = job.get("pid")
    if not _alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            return job["dir"] in cmdline.read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            return False
    try:
        return os.getpgid(int(pid)) == job.get("pgid")
    except OSError:
        return False


def _signal_group(job: dict, sig: int) -> None:
    try:
        os.killpg(int(job["pgid"]), sig)
    except (OSError, TypeError, ValueError):
        pass


def stop_process(job: dict, grace_s: float = GRACE_S) -> None:
    """SIGTERM the job's group (a training job checkpoints and exits); SIGKILL after grace_s."""
    _signal_group(job, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _alive(job.get("pid")):
        time.sleep(0.1)
    if _alive(job.get("pid")):
        _signal_group(job, signal.SIGKILL)


def error_from_log(path: Path, limit: int = 65536) -> str | None:
    """The CLI's ``error: …`` lines (a user error), else the last lines (a crash)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:") or ln.startswith("  ")][-20:]
    errs = [ln for ln in errors if ln.startswith("error:")]
    if errs:
        return "\n".join(errors[errors.index(errs[0]):])
    return "\n".join(lines[-8:]) or None


# Why a job failed, by the CLI's exit code (:mod:`mindprint.errors`), and whether running it again
# can help: a config, data or model mistake (2) or a training run that stopped itself (3, e.g. a
# NaN loss) fails the same way from its checkpoint; the user edits the config and retries. Any
# other code is a crash (a traceback, a failed start), which a resume from the last checkpoint may
# get past. Interrupted and cancelled jobs are always resumable.
FAILURES: dict[int, tuple[str, bool, str]] = {
    2: ("config or data error", False, "running it again fails the same way: edit the config "
        "or the data and retry"),
    3: ("training stopped", False, "resuming from its checkpoint fails the same way: edit the "
        "config (e.g. a lower train.lr) and retry"),
}
CRASH = ("crashed", True, "resume continues from the last checkpoint (or starts over); see the "
         "log for the traceback")
RESUMABLE_STATUSES = ("interrupted", "cancelled")


def failure(job: dict) -> dict | None:
    """How a failed job failed: ``kind``, one-line ``reason`` (the CLI's first ``error:`` line,
    else the last log line), ``hint`` (what to do) and ``resumable``; None unless failed."""
    if job["status"] != "failed":
        return None
    kind, again, hint = FAILURES.get(job.get("exit_code"), CRASH)
    lines = [ln.strip() for ln in (job.get("error") or "").splitlines() if ln.strip()]
    first = next((ln for ln in lines if ln.startswith("error:")), lines[-1] if lines else kind)
    reason = first.removeprefix("error:").strip()
    return {"kind": kind, "reason": reason[:240] + ("…" if len(reason) > 240 else ""),
            "hint": hint, "resumable": again}


def resumable(job: dict) -> bool:
    """Whether resuming (or running again) can help: interrupted, cancelled, or failed by a
    crash (:data:`FAILURES`)."""
    if job["status"] in RESUMABLE_STATUSES:
        return True
    f = failure(job)
    return bool(f and f["resumable"])


def command(job: dict, python: str = sys.executable) -> list[str]:
    """The CLI command line for a job (kind train / eval / compare)."""
    d = Path(job["dir"])
    base = [python, "-m", "mindprint.cli"]
    cfg = job["config"]
    if job["kind"] == "train":
        cmd = base + ["train", str(d / "job.yaml")]
        if job.get("resume"):
            has_ckpt = any((run_dir(job) / "checkpoints").glob("step-*/state.json"))
            cmd.append("--resume" if has_ckpt else "--overwrite")
        return cmd
    if job["kind"] == "eval":
        cmd = base + ["eval", "--out", str(d / "eval")]
        if cfg.get("adapter"):
            cmd += ["--adapter", cfg["adapter"]]
        if cfg.get("model"):
            cmd += ["--model", cfg["model"]]
        for key in ("prompts", "chat", "preference", "person"):
            for p in cfg.get(key) or []:
                cmd += [f"--{key}", p]
        for key in ("max_prompts", "max_records", "max_new_tokens"):
            if cfg.get(key) is not None:
                cmd += [f"--{key.replace('_', '-')}", str(int(cfg[key]))]
        if cfg.get("compare_base") is False:
            cmd.append("--no-base")
        return cmd
    if job["kind"] == "compare":
        cmd = base + ["compare", "--out", str(d / "compare")]
        for a in cfg["adapters"]:
            cmd += ["--adapter", a]
        for p in cfg["prompts"]:
            cmd += ["--prompts", p]
        if cfg.get("max_new_tokens") is not None:
            cmd += ["--max-new-tokens", str(int(cfg["max_new_tokens"]))]
        return cmd
    raise ValueError(f"unknown job kind {job['kind']!r}")


def _child_env(max_concurrent: int = 1) -> dict:
    """The job's environment: the server's, less MINDPRINT_* config overrides (they would silently
    change the validated config in the child; the process settings in ``PROCESS_ENV`` stay). With
    several jobs at once each gets its share of the cores as its math-thread count (unless the user
    set one): more math threads than free cores spin against each other (an eval job on a busy
    2-core machine generated 0.2 tokens/s with 2 threads, 12 tokens/s with 1)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MINDPRINT_") or k in PROCESS_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    if max_concurrent > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max_concurrent))
    return env


class JobRunner:
    """Starts queued jobs (at most ``max_concurrent`` at a time) and records how they end."""

    def __init__(self, store: Store, workspace: Path, *, server_id: str, max_concurrent: int = 1,
                 poll_s: float = 0.25, python: str = sys.executable):
        self.store, self.workspace, self.server_id = store, Path(workspace), server_id
        self.max_concurrent = max(1, int(max_concurrent))
        self.poll_s, self.python = poll_s, python
        self._procs: dict[str, subprocess.Popen] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self.reconcile()
        self._thread = threading.Thread(target=self._loop, name="mindprint-jobs", daemon=True)
        self._thread.start()

    def stop(self, grace_s: float = GRACE_S) -> None:
        """Server shutdown: stop the loop; running jobs checkpoint, stop and become interrupted."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            procs = dict(self._procs)
        for job_id, proc in procs.items():
            job = self.store.get_job(job_id)
            if job:
                stop_process(job, grace_s)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self.store.update_job(job_id, status="interrupted", ended_at=time.time(),
                                  exit_code=proc.returncode,
                                  error="the server stopped while this job ran")
        with self._lock:
            self._procs.clear()

    def reconcile(self) -> list[str]:
        """Jobs the store calls ``running`` but no live server runs: see the module docstring."""
        changed = []
        for job in self.store.list_jobs(status=("running",)):
            if job["id"] in self._procs:
                continue
            if _is_job_process(job):
                stop_process(job)
            status, error = "interrupted", "the server stopped while this job ran"
            if job["kind"] == "train" and _run_outcome(job) == "completed":
                status, error = "completed", None
            self.store.update_job(job["id"], status=status, error=error, ended_at=time.time())
            changed.append(job["id"])
        return changed

    # -- the loop ------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as e:  # noqa: BLE001 - the loop must survive anything
                print(f"mindprint serve: job runner: {type(e).__name__}: {e}", file=sys.stderr)
            self._stop.wait(self.poll_s)

    def tick(self) -> None:
        self._reap()
        while len(self._procs) < self.max_concurrent and not self._stop.is_set():
            job = self.store.claim_next()
            if job is None:
                break
            self._launch(job)

    def _launch(self, job: dict) -> None:
        d = Path(job["dir"])
        d.mkdir(parents=True, exist_ok=True)
        cmd = command(job, self.python)
        with open(log_path(job), "ab") as log:
            log.write(f"$ {' '.join(cmd[1:])}\n".encode())
            log.flush()
            kw = {}
            if sys.platform.startswith("linux"):
                kw["preexec_fn"] = _set_pdeathsig
            try:
                proc = subprocess.Popen(cmd, cwd=d, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, env=_child_env(self.max_concurrent),
                                        start_new_session=True, **kw)
            except OSError as e:
                self.store.update_job(job["id"], status="failed", error=f"cannot start: {e}",
                                      ended_at=time.time())
                return
        with self._lock:
            self._procs[job["id"]] = proc
        self.store.update_job(job["id"], pid=proc.pid, pgid=proc.pid, server_id=self.server_id)

    def _reap(self) -> None:
        with self._lock:
            done = [(i, p) for i, p in self._procs.items() if p.poll() is not None]
        for job_id, proc in done:
            with self._lock:
                self._procs.pop(job_id, None)
            job = self.store.get_job(job_id)
            if job is None:
                continue
            rc = proc.returncode
            if rc == 0:
                status, error = "completed", None
            elif job.get("cancel_requested"):
                status, error = "cancelled", None
            elif rc in (130, -signal.SIGTERM, -signal.SIGKILL):
                status, error = "interrupted", "the job's process was stopped from outside"
            else:
                status, error = "failed", error_from_log(log_path(job)) or f"exit code {rc}"
            self.store.update_job(job_id, status=status, exit_code=rc, error=error,
                                  ended_at=time.time())

    # -- requests ------------------------------------------------------------------------------
    def cancel(self, job: dict) -> dict:
        if job["status"] == "queued":
            return self.store.update_job(job["id"], status="cancelled", ended_at=time.time())
        if job["status"] == "running":
            again = bool(job.get("cancel_requested"))
            job = self.store.update_job(job["id"], cancel_requested=1)
            if job.get("pgid"):                    # a second cancel does not wait for the step
                _signal_group(job, signal.SIGKILL if again else signal.SIGTERM)
        return job

    def running(self) -> list[str]:
        with self._lock:
            return list(self._procs)


def _run_outcome(job: dict) -> str | None:
    try:
        manifest = json.loads((run_dir(job) / "manifest.json").read_text(encoding="utf-8"))
        return (manifest.get("run") or {}).get("status")
    except (OSError, ValueError):
        return None
