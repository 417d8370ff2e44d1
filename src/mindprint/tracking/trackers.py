"""TensorBoard, MLflow and trackio, fed the same rows as metrics.jsonl — all local.

* tensorboard: event files in ``RUN/tensorboard/``, written with TensorBoard's own writer and
  protos (no torch or TensorFlow needed): every metric as a scalar, the config as hyperparameters
  (HParams tab) and as YAML text, the final summary as ``summary/*`` scalars and text.
* mlflow: a file store in ``RUN/mlruns/`` (``file:`` URI, no server), or ``$MLFLOW_TRACKING_URI``
  when you set it. Params are the flattened config, tags name method/backend/model, metrics are
  the metrics.jsonl rows, ``summary/*`` the final numbers; config.yaml and summary.json become
  artifacts. The run ends FINISHED, KILLED (interrupted) or FAILED.
* trackio: its own local store (``$TRACKIO_DIR``, default ``~/.cache/huggingface/trackio``),
  project ``mindprint``; ``trackio show --project mindprint`` opens the dashboard.

Each tracker's package is optional: :func:`make_trackers` skips a missing one with a one-line
install hint. A tracker's run id is kept in ``RUN/tracking.json`` so ``--resume`` continues the
same tracker run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path

from ..config import dump_yaml
from .base import RunInfo, flatten, numeric

INSTALL = {  # report_to name: (module to find, pip package)
    "tensorboard": ("tensorboard", "tensorboard"),
    "mlflow": ("mlflow", "mlflow-skinny"),
    "trackio": ("trackio", "trackio"),
}


# -- tracking.json: tracker run ids, so a resumed run continues the same tracker run -------------
def read_tracking(run_dir: Path) -> dict:
    p = Path(run_dir) / "tracking.json"
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def record_tracking(run_dir: Path, name: str, data: dict) -> None:
    from ..outputs import write_atomic

    state = read_tracking(run_dir)
    state[name] = data
    write_atomic(Path(run_dir) / "tracking.json", json.dumps(state, indent=2) + "\n")


def _run_name(info: RunInfo) -> str:
    return f"{info.run_dir.resolve().name}-{datetime.now():%Y%m%d-%H%M%S}"


def _hparam(v):
    """HParams/params take scalars: lists and None become their YAML-ish text."""
    if isinstance(v, (bool, int, float, str)):
        return v
    return "null" if v is None else json.dumps(v)


def _summary_numbers(summary: dict) -> dict[str, float]:
    flat = flatten({k: v for k, v in summary.items()})
    return {f"summary/{k}": v for k, v in numeric(flat).items()}


# -- TensorBoard ---------------------------------------------------------------------------------
class TensorBoardTracker:
    name = "tensorboard"

    def on_start(self, info: RunInfo) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.plugins.hparams import summary_v2 as hp
        from tensorboard.plugins.text import summary_v2 as text
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._Event, self._Summary, self._text = Event, Summary, text
        self.dir = info.run_dir / "tensorboard"
        self.writer = EventFileWriter(str(self.dir), flush_secs=10)
        self.step = info.step
        cfg = info.config.to_dict()
        if not info.resumed:
            params = {k: _hparam(v) for k, v in flatten(cfg).items()}
            self._write(hp.hparams_pb(params, trial_id=_run_name(info)), 0)
            self._write(text.text_pb("config", f"```yaml\n{dump_yaml(info.config)}```"), 0)
        record_tracking(info.run_dir, self.name, {"logdir": str(self.dir)})
        info.log(f"tensorboard: event files in {self.dir} (tensorboard --logdir {self.dir})")

    def _write(self, summary, step: int) -> None:
        self.writer.add_event(self._Event(wall_time=time.time(), step=step, summary=summary))

    def _scalars(self, values: dict[str, float], step: int) -> None:
        S = self._Summary
        self._write(S(value=[S.Value(tag=k, simple_value=v) for k, v in values.items()]), step)

    def on_log(self, row: dict) -> None:
        self.step = int(row.get("step", self.step))
        self._scalars(numeric(row), self.step)

    on_eval = on_log

    def on_end(self, summary: dict, status: str) -> None:
        self._scalars(_summary_numbers(summary), self.step)
        body = json.dumps({"status": status, **summary}, indent=2, default=str)
        self._write(self._text.text_pb("summary", f"```json\n{body}\n```"), self.step)
        self.writer.close()


# -- MLflow --------------------------------------------------------------------------------------
_MLFLOW_STATUS = {"completed": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}


class MLflowTracker:
    name = "mlflow"

    def on_start(self, info: RunInfo) -> None:
        uri = os.environ.get("MLFLOW_TRACKING_URI") or (info.run_dir / "mlruns").resolve().as_uri()
        if uri.startswith("file:"):
            # MLflow 3 keeps the file store in maintenance mode behind this switch; a file store
            # inside the run directory is what we want (no server, no database).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.entities import Param, RunTag
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.run_dir, self.step = info.run_dir, info.step
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", "mindprint")
        exp = self.client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
        previous = read_tracking(info.run_dir).get(self.name, {})
        if info.resumed and previous.get("run_id") and previous.get("tracking_uri") == uri:
            self.run_id = previous["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            cfg = info.config
            tags = {"mindprint.method": cfg.method, "mindprint.backend": info.backend,
                    "mindprint.model": cfg.model.name, "mindprint.device": info.device,
                    "mindprint.output_dir": str(info.run_dir.resolve())}
            run = self.client.create_run(exp_id, run_name=_run_name(info), tags=tags)
            self.run_id = run.info.run_id
            params = [Param(k, str(_hparam(v))[:6000]) for k, v in flatten(cfg.to_dict()).items()]
            for i in range(0, len(params), 100):        # MLflow takes at most 100 per batch
                self.client.log_batch(self.run_id, params=params[i:i + 100])
            self.client.log_batch(self.run_id, tags=[RunTag("mlflow.note.content",
                                                            f"mindprint {cfg.method} run")])
        record_tracking(info.run_dir, self.name, {"tracking_uri": uri, "run_id": self.run_id,
                                                  "experiment": experiment})
        where = f"--backend-store-uri {uri}" if uri.startswith("file:") else uri
        info.log(f"mlflow: run {self.run_id} in {where}")

    def _metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        ms = [Metric(k, v, now, step) for k, v in values.items()]
        for i in range(0, len(ms), 1000):
            self.client.log_batch(self.run_id, metrics=ms[i:i + 1000])

    def on_log(self, row: dict) -> None:
        self.step = int(row.get("step", self.step))
        self._metrics(numeric(row), self.step)

    on_eval = on_log

    def on_end(self, summary: dict, status: str) -> None:
        try:
            self._metrics(_summary_numbers(summary), self.step)
            for name in ("config.yaml", "summary.json"):
                if (self.run_dir / name).exists():
                    self.client.log_artifact(self.run_id, str(self.run_dir / name))
        finally:
            self.client.set_terminated(self.run_id, _MLFLOW_STATUS.get(status, "FINISHED"))


# -- trackio -------------------------------------------------------------------------------------
class TrackioTracker:
    name = "trackio"
    project = "mindprint"

    def on_start(self, info: RunInfo) -> None:
        import trackio

        self.trackio, self.step = trackio, info.step
        previous = read_tracking(info.run_dir).get(self.name, {})
        resume = info.resumed and previous.get("name")
        name = previous["name"] if resume else _run_name(info)
        kwargs = {"project": self.project, "name": name, "embed": False,
                  "config": {k: _hparam(v) for k, v in flatten(info.config.to_dict()).items()},
                  "resume": "allow" if resume else "never",
                  # no background system sampling: the loop's own rows are the metrics
                  "auto_log_cpu": False, "auto_log_gpu": False}
        accepted = inspect.signature(trackio.init).parameters
        with contextlib.redirect_stdout(sys.stderr):   # trackio prints; our stdout is for paths
            trackio.init(**{k: v for k, v in kwargs.items() if k in accepted})
        record_tracking(info.run_dir, self.name, {"project": self.project, "name": name})
        info.log(f"trackio: run {name} in project {self.project} "
                 f"(trackio show --project {self.project})")

    def on_log(self, row: dict) -> None:
        self.step = int(row.get("step", self.step))
        with contextlib.redirect_stdout(sys.stderr):
            self.trackio.log(numeric(row), step=self.step)

    on_eval = on_log

    def on_end(self, summary: dict, status: str) -> None:
        with contextlib.redirect_stdout(sys.stderr):
            try:
                self.trackio.log({**_summary_numbers(summary)}, step=self.step)
            finally:
                self.trackio.finish()


TRACKERS = {"tensorboard": TensorBoardTracker, "mlflow": MLflowTracker, "trackio": TrackioTracker}


def install_hint(name: str) -> str:
    pkg = INSTALL[name][1]
    return (f"report_to: {name} is not installed, so it is skipped: pip install {pkg} "
            f"(or pip install 'mindprint[tracking]')")


def make_trackers(names, log=print) -> list:
    """One tracker per name in ``report_to`` whose package is installed; a hint for the others."""
    out = []
    for name in dict.fromkeys(names or []):       # keep order, drop repeats
        module = INSTALL[name][0]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            log(f"warning: {install_hint(name)}")
            continue
        out.append(TRACKERS[name]())
    return out
