"""``mindprint serve``: the web UI and job service (FastAPI app, SQLite job store, job runner)."""
