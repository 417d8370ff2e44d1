"""Run directory bookkeeping: pruning keeps the last k plus the best; cut metric lines are ignored."""

from __future__ import annotations

from mindprint.outputs import RunDir


def test_prune_keeps_last_k_and_best(tmp_path):
    run = RunDir(tmp_path)
    for step in (1, 2, 3, 4, 5):
        p = run.checkpoint_path(step)
        p.mkdir(parents=True)
        (p / "state.json").write_text("{}")
    (run.checkpoints / ".step-0000006.tmp-x").mkdir()       # left by a killed save
    run.prune_checkpoints(keep_last=1, best_step=2)
    assert [s for s, _ in run.list_checkpoints()] == [2, 5]
    assert not (run.checkpoints / ".step-0000006.tmp-x").exists()


def test_incomplete_checkpoint_is_not_listed(tmp_path):
    run = RunDir(tmp_path)
    run.checkpoint_path(3).mkdir(parents=True)              # no state.json: never finished
    assert run.latest_checkpoint() is None


def test_metrics_survive_a_cut_last_line_and_truncate_on_resume(tmp_path):
    run = RunDir(tmp_path)
    for s in (1, 2, 3):
        run.append_metrics({"step": s, "loss": 1.0 / s})
    with open(run.metrics_jsonl, "a") as f:
        f.write('{"step": 4, "lo')                           # killed mid-write
    assert [r["step"] for r in run.read_metrics()] == [1, 2, 3]
    run.truncate_metrics(2)
    assert [r["step"] for r in run.read_metrics()] == [1, 2]
    run.write_metrics_csv()
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0] == "step,loss"
