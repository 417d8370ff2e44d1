"""Service hardening found by probing the running service (issue 22, section 3): reward names
checked without importing, one server per workspace, ids checked by kind, the token from a file,
the environment or a cookie, a missing dataset file, a dataset a resumable run needs, the CLI's
model and number checks, and frame headers. No model is loaded: these run in seconds."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from mindprint.errors import MindprintError, ModelError
from mindprint.models import preflight, resolve
from mindprint.server.app import create_app
from mindprint.server.cli import read_token
from mindprint.server.lock import WorkspaceBusy

from .helpers import chat_rows
from .test_api import client, upload

PROMPTS = b"".join(json.dumps({"prompt": f"Say something about the {w}."}).encode() + b"\n"
                   for w in ("tide", "harvest", "winter", "ledger"))


def fake_model(tmp_path: Path) -> str:
    """A directory that passes the model checks made before loading (config.json present)."""
    d = tmp_path / "model"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text("{}")
    return str(d)


def grpo(ds: str, rewards: list[str]) -> dict:
    return {"config": {"method": "grpo", "data": {"train": [ds]},
                       "grpo": {"rewards": rewards}}}


# -- reward names ----------------------------------------------------------------------------------
@pytest.fixture
def side_effect_pkg(tmp_path, monkeypatch):
    """An installed-looking package whose import writes a marker file: a check that imports
    (find_spec of a submodule imports the parent) leaves the marker behind."""
    site = tmp_path / "site"
    pkg = site / "loud_pkg"
    pkg.mkdir(parents=True)
    marker = tmp_path / "imported.txt"
    (pkg / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (pkg / "scoring.py").write_text("def score(prompts, completions, records):\n"
                                    "    return [1.0] * len(completions)\n")
    monkeypatch.syspath_prepend(str(site))
    return marker


def test_reward_names_are_checked_without_importing(tmp_path, side_effect_pkg):
    with client(tmp_path / "ws") as c:
        ds = upload(c, "p.jsonl", PROMPTS).json()["id"]
        r = c.post("/api/runs", json=grpo(ds, ["loud_pkg.scoring:score"]))
        assert r.status_code == 201, r.text                # installed, allowed on loopback
        r = c.post("/api/runs", json=grpo(ds, ["loud_pkg.nothere:score"]))
        assert r.status_code == 422 and "'loud_pkg.nothere' is not installed" in r.text
        assert not side_effect_pkg.exists()                  # nothing was imported
        before = set(sys.modules)
        cases = {"this.x:y": "module 'this.x' is not installed",
                 "subprocess:run": "'subprocess' is a standard-library module",
                 "os:system": "'os' is a standard-library module",
                 "sys:exit": "'sys' is built into Python"}
        for name, reason in cases.items():
            r = c.post("/api/runs", json=grpo(ds, ["length", name]))
            assert r.status_code == 422, (name, r.text)
            assert f"grpo.rewards: '{name}': {reason}" in r.json()["detail"], r.text
        assert "this" not in set(sys.modules) - before      # `this` prints on import


def test_an_exposed_server_runs_only_builtin_registered_or_allowed_rewards(tmp_path,
                                                                           side_effect_pkg):
    kw = dict(host="0.0.0.0", token="tok-123456")
    auth = {"Authorization": "Bearer tok-123456"}
    with client(tmp_path / "ws", rewards=["loud_pkg.scoring:score"], **kw) as c:
        ds = c.post("/api/datasets", headers=auth, files={"file": ("p.jsonl", PROMPTS)}).json()["id"]
        r = c.post("/api/runs", headers=auth, json=grpo(ds, ["yaml:safe_load"]))
        assert r.status_code == 422 and "mindprint serve --reward" in r.json()["detail"]
        r = c.post("/api/runs", headers=auth, json=grpo(ds, ["length", "loud_pkg.scoring:score"]))
        assert r.status_code == 201, r.text
    assert not side_effect_pkg.exists()


# -- one server per workspace ----------------------------------------------------------------------
def test_a_second_server_on_the_same_workspace_refuses(tmp_path, capsys):
    from mindprint.cli import main

    ws = tmp_path / "ws"
    first = create_app(ws, start_runner=False, address="127.0.0.1:7861")
    with pytest.raises(WorkspaceBusy, match=r"in use by another mindprint serve \(pid \d+, "
                                            r"127\.0\.0\.1:7861"):
        create_app(ws, start_runner=False)
    # the command says so in one line and stops before serving anything
    assert main(["serve", "--workspace", str(ws), "--port", "7862"]) != 0
    err = capsys.readouterr().err
    assert "error: workspace" in err and "another mindprint serve" in err and "Traceback" not in err
    first.state.lock.release()                      # the first one stops: the workspace is free
    with client(ws) as c:
        assert c.get("/api/info").status_code == 200


# -- ids by kind -----------------------------------------------------------------------------------
def test_ids_are_checked_by_kind(tmp_path):
    with client(tmp_path / "ws") as c:
        ds = upload(c, "t.jsonl", chat_rows(4)).json()["id"]
        assert c.get(f"/api/runs/{ds}").status_code == 422            # a dataset id on a run path
        assert c.delete(f"/api/runs/{ds}").status_code == 422
        assert c.delete(f"/api/evals/{ds}").status_code == 422
        assert c.get(f"/api/datasets/r-0123456789ab").status_code == 422
        assert c.delete("/api/runs/..%2Fdatasets%2F" + ds).status_code in (404, 422)
        assert c.get(f"/api/datasets/{ds}").status_code == 200           # still there


# -- the token -------------------------------------------------------------------------------------
def _args(**kw):
    return argparse.Namespace(**{"token": None, "token_file": None, **kw})


def test_token_from_file_or_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("MINDPRINT_TOKEN", raising=False)
    f = tmp_path / "token.txt"
    f.write_text("  file-token-9  \nsecond line ignored\n")
    assert read_token(_args(token_file=str(f))) == "file-token-9"
    assert read_token(_args()) is None
    monkeypatch.setenv("MINDPRINT_TOKEN", "env-token-7")
    assert read_token(_args()) == "env-token-7"
    with pytest.raises(MindprintError, match="one way, not --token-file and MINDPRINT_TOKEN"):
        read_token(_args(token_file=str(f)))
    monkeypatch.delenv("MINDPRINT_TOKEN")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(MindprintError, match="empty.txt: the file is empty"):
        read_token(_args(token_file=str(tmp_path / "empty.txt")))
    with pytest.raises(MindprintError, match="cannot read it"):
        read_token(_args(token_file=str(tmp_path / "missing.txt")))


def test_first_visit_with_token_sets_a_cookie_and_drops_it_from_the_address(tmp_path):
    with client(tmp_path / "ws", token="cookie-tok-1") as c:
        assert c.get("/api/info").status_code == 401
        r = c.get("/?token=wrong", follow_redirects=False)
        assert r.status_code == 200 and "set-cookie" not in r.headers
        r = c.get("/?token=cookie-tok-1", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"].lower()
        assert "mindprint_token=cookie-tok-1" in cookie and "httponly" in cookie
        assert "samesite=strict" in cookie
        assert c.get("/api/info").status_code == 200        # the client keeps the cookie
        c.cookies.clear()
        assert c.get("/api/info").status_code == 401


# -- datasets --------------------------------------------------------------------------------------
def test_preview_of_a_dataset_whose_file_is_gone_is_a_404(tmp_path):
    with client(tmp_path / "ws") as c:
        d = upload(c, "gone.jsonl", chat_rows(3)).json()
        for p in (tmp_path / "ws" / "datasets").rglob("gone.jsonl"):
            p.unlink()
        r = c.get(f"/api/datasets/{d['id']}/preview")
        assert r.status_code == 404 and "its file is gone" in r.json()["detail"]


def test_a_dataset_a_resumable_run_needs_cannot_be_deleted(tmp_path):
    with client(tmp_path / "ws") as c:
        ds = upload(c, "t.jsonl", chat_rows(4)).json()["id"]
        cfg = {"model": fake_model(tmp_path), "data": {"train": [ds]}}
        run = c.post("/api/runs", json={"config": cfg}).json()["id"]
        assert c.post(f"/api/runs/{run}/cancel").json()["resumable"]
        r = c.delete(f"/api/datasets/{ds}")
        assert r.status_code == 409 and "can still be resumed" in r.json()["detail"]
        assert c.delete(f"/api/runs/{run}").status_code == 204
        assert c.delete(f"/api/datasets/{ds}").status_code == 204


# -- configs the CLI refuses -----------------------------------------------------------------------
def _model_error(spec: str) -> str:
    """The message `mindprint train` stops with for this model (its preflight, then resolve)."""
    with pytest.raises(ModelError) as e:
        preflight(spec)
        resolve(spec)
    return str(e.value)


def test_configs_the_cli_refuses_are_refused_with_its_message(tmp_path):
    with client(tmp_path / "ws") as c:
        ds = upload(c, "t.jsonl", chat_rows(4)).json()["id"]
        for spec in ("", "  ", "/etc", str(tmp_path)):
            r = c.post("/api/runs", json={"config": {"model": spec, "data": {"train": [ds]}}})
            assert r.status_code == 422, (spec, r.text)
            assert r.json()["detail"] == _model_error(spec)
        for value, what in ((1e15, "integer"), (True, "not a boolean"), (12.5, "integer")):
            r = c.post("/api/runs", json={"config": {"data": {"train": [ds]},
                                                     "train": {"max_steps": value}}})
            assert r.status_code == 422 and "config: train.max_steps: " in r.text, value
            assert what in r.json()["detail"]
        r = c.post("/api/runs", json={"config": {"data": {"train": [ds]},
                                                 "train": {"lr": True}}})
        assert r.status_code == 422 and "train.lr" in r.text
        assert c.get("/api/runs").json() == []
        # whole numbers and floats where floats belong still pass
        r = c.post("/api/runs", json={"config": {"model": fake_model(tmp_path),
                                                 "data": {"train": [ds]},
                                                 "train": {"max_steps": 7, "lr": 1}}})
        assert r.status_code == 201, r.text


# -- headers ---------------------------------------------------------------------------------------
def test_no_page_may_be_framed(tmp_path):
    with client(tmp_path / "ws") as c:
        for path in ("/", "/api/info", "/static/app.js", "/api/runs/r-0123456789ab"):
            r = c.get(path)
            assert r.headers["x-frame-options"] == "DENY", path
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path
