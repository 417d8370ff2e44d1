"""Each tracker writes what its own tools read back; a missing one is a hint, never a crash."""

from __future__ import annotations

import json

from mindprint import config as C
from mindprint.training import run_training
from mindprint.tracking import trackers as T

from .conftest import chat_files, read_json, small_config


def metric_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_events_read_by_tensorboard(sft_run):
    import tensorboard  # noqa: F401
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(sft_run / "tensorboard"))
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    rows = metric_rows(sft_run)
    assert [(e.step, round(e.value, 4)) for e in acc.Scalars("loss")] == \
        [(r["step"], round(r["loss"], 4)) for r in rows if "loss" in r]
    assert [e.step for e in acc.Scalars("eval_loss")] == [0, 2, 4]
    for key in ("lr", "grad_norm", "tokens_per_s", "eval_ppl", "summary/train_loss"):
        assert key in scalars, key
    tensors = acc.Tags()["tensors"]
    assert "config" in tensors and "summary" in tensors
    assert any("hparams" in t for t in tensors)            # the HParams tab's session info
    assert b"train:" in acc.Tensors("config")[0].tensor_proto.string_val[0]


def test_mlflow_file_store_read_by_mlflow_client(sft_run):
    import mlflow  # noqa: F401
    from mlflow.tracking import MlflowClient

    info = read_json(sft_run / "tracking.json")["mlflow"]
    assert info["tracking_uri"] == (sft_run / "mlruns").resolve().as_uri()
    client = MlflowClient(tracking_uri=info["tracking_uri"])
    exp = client.get_experiment_by_name("mindprint")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_id == info["run_id"] and run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.005" and run.data.params["method"] == "sft"
    assert run.data.tags["mindprint.method"] == "sft"
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval_loss")] == [0, 2, 4]
    assert run.data.metrics["summary/steps"] == 4
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "summary.json"} <= artifacts


def test_trackio_local_store_read_by_trackio(sft_run):
    import trackio  # noqa: F401
    from trackio.sqlite_storage import SQLiteStorage

    info = read_json(sft_run / "tracking.json")["trackio"]
    logs = SQLiteStorage.get_logs(info["project"], info["name"])
    losses = [(r["step"], r["loss"]) for r in logs if "loss" in r]
    assert [s for s, _ in losses] == [1, 2, 3, 4]
    assert [r["step"] for r in logs if "eval_loss" in r] == [0, 2, 4]
    assert SQLiteStorage.get_run_config(info["project"], info["name"])["train.lr"] == 0.005


def test_manifest_names_the_tracker_runs(sft_run):
    from .conftest import TRACKERS

    assert set(read_json(sft_run / "manifest.json").get("tracking", {})) == set(TRACKERS)


def test_missing_tracker_is_a_one_line_hint(monkeypatch, tiny_model_dir, tmp_path):
    real = T.importlib.util.find_spec
    monkeypatch.setattr(T.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("mlflow", "trackio") else real(name, *a))
    logs: list[str] = []
    made = T.make_trackers(["mlflow", "trackio"], logs.append)
    assert made == []
    assert logs == [f"warning: {T.install_hint('mlflow')}", f"warning: {T.install_hint('trackio')}"]
    assert "pip install mlflow-skinny" in logs[0] and "\n" not in logs[0]
    # and a training asked for it still runs
    train, ev = chat_files(tmp_path / "data")
    raw = small_config(tiny_model_dir, train, ev, str(tmp_path / "r"), max_steps=1,
                       eval_at_start=False)
    raw["report_to"] = ["mlflow"]
    logs.clear()
    assert run_training(C.from_dict(raw), log=logs.append)["steps"] == 1
    assert any("report_to: mlflow is not installed" in s for s in logs)
    assert not (tmp_path / "r" / "mlruns").exists()


def test_a_tracker_failing_at_start_is_dropped_with_a_warning(monkeypatch, tiny_model_dir,
                                                               tmp_path):
    import tensorboard  # noqa: F401

    def broken(self, info):
        raise OSError("read-only file system")

    monkeypatch.setattr(T.TensorBoardTracker, "on_start", broken)
    train, ev = chat_files(tmp_path / "data")
    raw = small_config(tiny_model_dir, train, ev, str(tmp_path / "r"), max_steps=1,
                       eval_at_start=False)
    raw["report_to"] = ["tensorboard"]
    logs: list[str] = []
    assert run_training(C.from_dict(raw), log=logs.append)["steps"] == 1
    assert any("tensorboard: on_start failed (OSError: read-only file system)" in s for s in logs)


def test_resume_continues_the_manifest_and_the_mlflow_run(tiny_model_dir, tmp_path):
    import mlflow  # noqa: F401
    from mlflow.tracking import MlflowClient

    train, ev = chat_files(tmp_path / "data")
    raw = small_config(tiny_model_dir, train, ev, str(tmp_path / "r"), max_steps=2,
                       eval_at_start=False)
    raw["report_to"] = ["mlflow"]
    run_training(C.from_dict(raw), log=lambda s: None)
    first = read_json(tmp_path / "r" / "manifest.json")
    raw["train"]["max_steps"] = 3
    run_training(C.from_dict(raw), resume=True, log=lambda s: None)
    m = read_json(tmp_path / "r" / "manifest.json")
    assert m["run"]["started_at"] == first["run"]["started_at"]
    assert [r["step"] for r in m["run"]["resumes"]] == [2]
    assert m["run"]["status"] == "completed" and m["run"]["steps"] == 3
    info = read_json(tmp_path / "r" / "tracking.json")["mlflow"]
    assert info["run_id"] == first["tracking"]["mlflow"]["run_id"]
    client = MlflowClient(tracking_uri=info["tracking_uri"])
    (run,) = client.search_runs([client.get_experiment_by_name("mindprint").experiment_id])
    assert run.info.status == "FINISHED"
    assert [h.step for h in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3]
