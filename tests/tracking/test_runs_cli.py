"""mindprint runs list / show / compare over run directories."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from mindprint.cli import main
from mindprint.runs import Run, config_differences, find_runs


def fake_run(d, *, lr=2e-4, r=16, method="sft", steps=100, eval_loss=1.5, status="completed",
             pid=None, manifest=True):
    d.mkdir(parents=True)
    cfg = {"method": method, "backend": "torch", "model": {"name": "smollm2-135m-instruct"},
           "data": {"train": ["t.jsonl"]}, "train": {"max_steps": steps, "lr": lr, "seed": 0},
           "lora": {"r": r, "alpha": 32}, "output_dir": str(d)}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = [{"step": s, "loss": 2.0 - s / steps, "lr": lr} for s in range(1, steps + 1, 10)]
    rows.append({"step": steps, "eval_loss": eval_loss, "eval_ppl": 2.718 ** eval_loss})
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    if status != "running":
        (d / "summary.json").write_text(json.dumps({
            "method": method, "backend": "torch", "steps": steps, "stopped": "max_steps",
            "train_loss": 1.01, "first_eval_loss": 2.0, "final_eval_loss": eval_loss,
            "best_eval_loss": eval_loss, "wall_s": 125.0, "tokens_per_s": 800.0,
            "final_eval_metrics": {"eval_loss": eval_loss, "eval_ppl": 2.718 ** eval_loss}}))
    if manifest:
        import socket

        (d / "manifest.json").write_text(json.dumps({
            "config": cfg, "versions": {"torch": "2.13.0", "mindprint": "0.1.0"},
            "platform": {"host": socket.gethostname(), "system": "Linux", "machine": "x86_64"},
            "device": {"device": "cpu", "name": "cpu"},
            "data": {"files": [{"role": "train", "index": 0, "path": "t.jsonl",
                                "sha256": "a" * 64}], "tokenized": {}},
            "model": {"weights_sha256": "b" * 64, "files": {}},
            "run": {"status": status, "pid": pid, "started_at": "2026-01-02T03:04:05+00:00",
                    "ended_at": None}}))
    return d


def test_list_shows_every_run_with_status(tmp_path, capsys):
    fake_run(tmp_path / "runs" / "a", lr=2e-4)
    fake_run(tmp_path / "runs" / "sweep" / "b", lr=1e-4, eval_loss=1.2)
    fake_run(tmp_path / "runs" / "old", manifest=False)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    fake_run(tmp_path / "runs" / "crashed", status="running", pid=dead.pid)
    fake_run(tmp_path / "runs" / "live", status="running", pid=__import__("os").getpid())
    assert main(["runs", "list", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    for name in ("a", "sweep/b", "old", "crashed", "live"):
        assert name in out
    assert "5 run(s)" in out and "completed" in out and "died" in out and "running" in out
    assert "ppl" in out and "100/100" in out
    assert "checkpoints" not in out
    assert main(["runs", "list", str(tmp_path / "runs"), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["sweep/b"]["eval_loss"] == 1.2 and rows["crashed"]["status"] == "died"
    assert rows["old"]["status"] == "completed" and rows["old"]["method"] == "sft"


def test_compare_shows_the_differing_config_keys_and_metrics(tmp_path, capsys):
    a = fake_run(tmp_path / "a", lr=2e-4, r=16, eval_loss=1.5)
    b = fake_run(tmp_path / "b", lr=1e-4, r=8, eval_loss=1.2)
    assert main(["runs", "compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "2 key(s) differ" in out
    assert "train.lr" in out and "lora.r" in out
    assert "train.seed" not in out and "lora.alpha" not in out and "output_dir" not in out
    assert "final_eval_loss" in out and "1.5" in out and "1.2" in out
    assert main(["runs", "compare", str(a), str(b), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["config_differences"] == {"lora.r": [16, 8], "train.lr": [2e-4, 1e-4]}
    assert data["metrics"]["final_eval_loss"] == [1.5, 1.2]


def test_compare_reports_environment_differences(tmp_path, capsys):
    a = fake_run(tmp_path / "a")
    b = fake_run(tmp_path / "b")
    m = json.loads((b / "manifest.json").read_text())
    m["versions"]["torch"] = "2.14.0"
    (b / "manifest.json").write_text(json.dumps(m))
    assert main(["runs", "compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "config: identical" in out
    assert "version of torch: 2.13.0 → 2.14.0" in out


def test_show_and_lookup_by_name(tmp_path, capsys, monkeypatch):
    fake_run(tmp_path / "runs" / "mine", lr=3e-4)
    monkeypatch.chdir(tmp_path)
    assert main(["runs", "show", "mine"]) == 0          # a name under ./runs
    out = capsys.readouterr().out
    assert "completed" in out and "lr: 0.0003" in out and "final eval_ppl" in out
    assert "smollm2-135m-instruct" in out
    assert main(["runs", "show", "mine", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run"]["status"] == "completed"


def test_user_errors(tmp_path, capsys):
    assert main(["runs", "show", str(tmp_path / "nope")]) == 2
    assert "no such run" in capsys.readouterr().err
    assert main(["runs", "compare", str(fake_run(tmp_path / "a"))]) == 2
    assert "at least two runs" in capsys.readouterr().err
    assert main(["runs", "list", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "plain").mkdir()
    assert main(["runs", "show", str(tmp_path / "plain")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_config_differences_handles_missing_keys(tmp_path):
    a = Run(tmp_path, "a", config={"train": {"lr": 1}, "output_dir": "x"})
    b = Run(tmp_path, "b", config={"train": {"lr": 1, "seed": 2}, "output_dir": "y"})
    assert config_differences([a, b]) == [("train.seed", [None, 2])]


def test_a_run_dir_lists_itself(tmp_path):
    d = fake_run(tmp_path / "solo")
    assert [r.name for r in find_runs(d)] == ["solo"]
