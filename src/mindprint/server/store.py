"""The job store: one SQLite file in the workspace (stdlib ``sqlite3``, no external service).

Two tables. ``datasets`` holds what an upload's validation found; the file itself lives under
``WORKSPACE/datasets/<id>/``. ``jobs`` holds every train, eval and compare job: its kind, status,
the validated config or arguments, and the process that runs it (pid, process group, the server
instance that started it), so a restarted server can tell what happened to a job it lost.

Statuses: ``queued`` → ``running`` → ``completed`` | ``failed`` | ``cancelled`` | ``interrupted``.
``interrupted`` means the server (or the machine) died while the job ran; such a train job can be
resumed from its last checkpoint.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from pathlib import Path

ACTIVE = ("queued", "running")
TERMINAL = ("completed", "failed", "cancelled", "interrupted")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    format TEXT,
    total INTEGER NOT NULL,
    valid INTEGER NOT NULL,
    invalid INTEGER NOT NULL,
    topics TEXT NOT NULL,
    problems TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    dir TEXT NOT NULL,
    pid INTEGER,
    pgid INTEGER,
    server_id TEXT,
    resume INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER,
    error TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL
);
"""

_JSON_COLS = {"topics", "problems", "config"}


def new_id(prefix: str) -> str:
    """``r-3f9a0c1b2d4e``: a prefix and 12 hex digits; every id the API accepts matches ID_RE."""
    return f"{prefix}-{secrets.token_hex(6)}"


ID_PATTERN = r"^[a-z]-[0-9a-f]{12}$"


class Store:
    """Thread-safe access to the workspace database (one connection, one lock)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _row(row: sqlite3.Row | None) -> dict | None:
        if row is None:
            return None
        d = dict(row)
        for k in _JSON_COLS & d.keys():
            d[k] = json.loads(d[k])
        return d

    def _insert(self, table: str, values: dict) -> None:
        values = {k: json.dumps(v) if k in _JSON_COLS else v for k, v in values.items()}
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self._lock:
            self._db.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", list(values.values()))

    # -- datasets ------------------------------------------------------------------------------
    def add_dataset(self, **values) -> dict:
        values.setdefault("created_at", time.time())
        self._insert("datasets", values)
        return self.get_dataset(values["id"])

    def get_dataset(self, ds_id: str) -> dict | None:
        with self._lock:
            return self._row(self._db.execute("SELECT * FROM datasets WHERE id = ?",
                                              (ds_id,)).fetchone())

    def list_datasets(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM datasets ORDER BY created_at DESC").fetchall()
        return [self._row(r) for r in rows]

    def update_dataset(self, ds_id: str, **values) -> dict | None:
        if values:
            values = {k: json.dumps(v) if k in _JSON_COLS else v for k, v in values.items()}
            sets = ", ".join(f"{k} = ?" for k in values)
            with self._lock:
                self._db.execute(f"UPDATE datasets SET {sets} WHERE id = ?",
                                 [*values.values(), ds_id])
        return self.get_dataset(ds_id)

    def delete_dataset(self, ds_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM datasets WHERE id = ?", (ds_id,))

    # -- jobs ----------------------------------------------------------------------------------
    def add_job(self, **values) -> dict:
        values.setdefault("created_at", time.time())
        values.setdefault("status", "queued")
        self._insert("jobs", values)
        return self.get_job(values["id"])

    def get_job(self, job_id: str) -> dict | None:
        with self._lock:
            return self._row(self._db.execute("SELECT * FROM jobs WHERE id = ?",
                                              (job_id,)).fetchone())

    def list_jobs(self, kind: str | None = None, status: tuple[str, ...] | None = None) -> list[dict]:
        sql, args = "SELECT * FROM jobs", []
        where = []
        if kind:
            where.append("kind = ?")
            args.append(kind)
        if status:
            where.append(f"status IN ({', '.join('?' for _ in status)})")
            args.extend(status)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC"
        with self._lock:
            return [self._row(r) for r in self._db.execute(sql, args).fetchall()]

    def update_job(self, job_id: str, **values) -> dict:
        if values:
            values = {k: json.dumps(v) if k in _JSON_COLS else v for k, v in values.items()}
            sets = ", ".join(f"{k} = ?" for k in values)
            with self._lock:
                self._db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", [*values.values(), job_id])
        return self.get_job(job_id)

    def claim_next(self) -> dict | None:
        """The oldest queued job, marked ``running`` atomically (so two runners never both start it)."""
        with self._lock:
            row = self._db.execute("SELECT id FROM jobs WHERE status = 'queued' "
                                   "ORDER BY created_at LIMIT 1").fetchone()
            if row is None:
                return None
            self._db.execute("UPDATE jobs SET status = 'running', started_at = ?, pid = NULL, "
                             "pgid = NULL, exit_code = NULL, error = NULL, ended_at = NULL, "
                             "attempts = attempts + 1 WHERE id = ?", (time.time(), row["id"]))
            return self.get_job(row["id"])

    def delete_job(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
