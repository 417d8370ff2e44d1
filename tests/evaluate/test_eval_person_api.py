"""The web UI's eval view: the "person" field (whose answers define the voice) reaches
``mindprint eval --person``; without it the run's training data is the person. No model runs."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from mindprint.server.app import create_app
from mindprint.server.jobs import command



def chat_rows(who: str) -> bytes:
    rows = [{"messages": [{"role": "user", "content": q},
                          {"role": "assistant", "content": f"{who} says: {a}"}]}
            for q, a in [("Tea or coffee?", "tea, always, and strong."),
                         ("Where did you grow up?", "by the sea, mostly in the wind."),
                         ("What are you reading?", "an old atlas with half the maps wrong.")]]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _eval_job(c, body: dict) -> dict:
    r = c.post("/api/evals", json=body)
    assert r.status_code == 201, r.text
    return c.app.state.store.get_job(r.json()["id"])


def test_person_field_defaults_to_the_runs_training_data_and_reaches_the_cli(tmp_path):
    ws = tmp_path / "ws"
    with TestClient(create_app(ws, start_runner=False), base_url="http://127.0.0.1") as c:
        up = lambda name: c.post("/api/datasets", files={"file": (name, chat_rows(name))}).json()["id"]  # noqa: E731
        held, me, other = (c.app.state.store.get_dataset(up(n))
                           for n in ("held.jsonl", "me.jsonl", "other.jsonl"))
        gone = tmp_path / "deleted-since.jsonl"                 # a training file removed since
        run_dir = ws / "jobs" / "r-00000000000b"
        (run_dir / "run" / "adapter").mkdir(parents=True)
        c.app.state.store.add_job(
            id="r-00000000000b", kind="train", name="done", status="completed", dir=str(run_dir),
            config={"method": "sft", "data": {"train": [me["path"], str(gone)]}})

        default = _eval_job(c, {"run": "r-00000000000b", "chat": [held["id"]]})
        assert default["config"]["person"] == [me["path"]]
        cmd = command(default)
        assert cmd[cmd.index("--person") + 1] == me["path"] and cmd.count("--person") == 1

        chosen = _eval_job(c, {"run": "r-00000000000b", "chat": [held["id"]],
                               "person": [other["id"]]})
        assert chosen["config"]["person"] == [other["path"]]
        assert command(chosen).count("--person") == 1 and other["path"] in command(chosen)

        bad = c.post("/api/evals", json={"run": "r-00000000000b", "chat": [held["id"]],
                                         "person": ["d-0123456789ab"]})
        assert bad.status_code == 404 and "person" in bad.text
