"""How fast training goes on this machine: the data behind the New-run form's time estimate.

The estimate is ``overhead_s + budget / tokens_per_s`` where a run's *budget* is
``max_steps × batch_size × grad_accum × max_length`` tokens: what the form's fields say, an upper
bound on the tokens it trains (records shorter than ``max_length`` take less). Measured in the
same unit, the rate already carries a method's own cost per budget token (DPO's chosen and
rejected plus the reference pass, evaluation every ``eval_every`` steps), so the estimate needs no
table of per-method factors; it is only as good as the finished runs it comes from.

A finished run contributes its budget, its training time (``summary.json``'s ``wall_s``: the
loop, evaluations included) and its overhead (the job's wall time less ``wall_s``: starting the
process, importing, loading the model, saving the adapter). Runs are grouped by (model, method);
the page pools the best matching groups (same model and method, else same model, else all) and
falls back to :data:`DEFAULT` when the workspace has no finished run.
"""

from __future__ import annotations

from . import jobs as J
from ..runs import read_json_object

# The measurement on this project's machines: the bundled 135M model with the default
# config (200 steps × batch 4 × 1024 tokens) trains in about 2 h on 2 CPU cores.
DEFAULT = {"tokens_per_s": round(200 * 4 * 1024 / 7200, 1), "overhead_s": 30.0,
           "source": "default: the bundled 135M model with the defaults (200 steps × 4 × 1024 "
                     "tokens) took about 2 h on a 2-core CPU; no finished run in this workspace "
                     "to measure yet"}


def budget_tokens(cfg: dict) -> int | None:
    """``max_steps × batch_size × grad_accum × max_length`` of a config mapping, or None when a
    value is missing (an old or hand-written job)."""
    t, d = cfg.get("train") or {}, cfg.get("data") or {}
    vals = [t.get("max_steps"), t.get("batch_size"), t.get("grad_accum", 1), d.get("max_length")]
    if not all(isinstance(v, int) and v > 0 for v in vals):
        return None
    out = 1
    for v in vals:
        out *= v
    return out


def measured_speed(jobs: list[dict]) -> dict:
    """``{"default": DEFAULT, "groups": [{model, method, runs, budget_tokens, train_s,
    overhead_s}]}`` from completed train jobs (sums, so the page can pool groups); a run without
    a readable summary, or stopped before ``max_steps``, is left out (its budget is not what it
    trained) and counted in ``skipped``."""
    groups: dict[tuple, dict] = {}
    skipped = 0
    for job in jobs:
        cfg = job["config"]
        summary = read_json_object(J.run_dir(job) / "summary.json")
        budget = budget_tokens(cfg)
        wall = summary.get("wall_s")
        steps = (cfg.get("train") or {}).get("max_steps")
        if (budget is None or not isinstance(wall, (int, float)) or wall <= 0
                or summary.get("steps") != steps):
            skipped += 1
            continue
        total = (job.get("ended_at") or 0) - (job.get("started_at") or 0)
        key = ((cfg.get("model") or {}).get("name"), cfg.get("method"))
        g = groups.setdefault(key, {"model": key[0], "method": key[1], "runs": 0,
                                    "budget_tokens": 0, "train_s": 0.0, "overhead_s": 0.0})
        g["runs"] += 1
        g["budget_tokens"] += budget
        g["train_s"] += wall
        g["overhead_s"] += max(0.0, total - wall) if total > 0 else 0.0
    return {"default": DEFAULT, "groups": list(groups.values()), "skipped": skipped}
