"""The chat playground in headless Chromium (as tests/server/test_browser_e2e.py): a two-turn
conversation with two registered adapters side by side, streamed from /v1; a blind A/B
pick and a thumb land in the workspace's preference and KTO datasets; the New-run form takes the
preference dataset for a DPO run; and a hash route smuggling a dataset path into a run id is
refused before any request. The tiny model answers; no training runs (the runner is off)."""

from __future__ import annotations

import json
import threading

import pytest
from playwright import sync_api

from conftest import make_adapter

from .helpers import free_port, wait_for
from .test_browser_e2e import FLAGS, INSTALL_HINT, _chromium


@pytest.fixture
def chat_server(tmp_path, tiny_model_dir):
    import uvicorn

    from mindprint.server.app import create_app

    # two adapters: the random tiny base often answers nothing, and an empty answer is no
    # training data (the validator refuses it)
    adapters = {n: make_adapter(tiny_model_dir, tmp_path / n, seed=s, scale=4.0)
                for n, s in (("ada", 9), ("ben", 10))}
    app = create_app(tmp_path / "ws", start_runner=False, model=tiny_model_dir,
                     adapters=adapters)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    wait_for(lambda: server.started, 30, "uvicorn to start")
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    t.join(timeout=60)


def _dataset_lines(app, name: str) -> list[dict]:
    d = next(d for d in app.state.store.list_datasets() if d["name"] == name)
    with open(d["path"], encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_chat_pick_and_thumb_become_training_data(chat_server, tmp_path, tiny_model_dir):
    url, app = chat_server
    with sync_api.sync_playwright() as p:
        exe = _chromium(p)
        if exe is None:
            pytest.skip(f"no Chromium for the browser test: {INSTALL_HINT}")
        ctx = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=exe,
                                                   headless=True, args=FLAGS,
                                                   viewport={"width": 1280, "height": 1000})
        page = ctx.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(f"{url}/#/chat")
            page.wait_for_selector("#chat-a")
            assert page.input_value("#chat-a") == "ada" and page.input_value("#chat-b") == "base"
            page.select_option("#chat-b", "ben")
            page.fill("#chat-system", "You are Ada, a lighthouse keeper.")
            page.fill("#chat-max", "6")
            page.fill("#chat-temp", "0")
            for n, text in enumerate(("How were the storms this winter?",
                                      "And the supply boat?"), 1):
                page.fill("#chat-input", text)
                page.click("#chat-send")
                page.wait_for_function(f"document.querySelectorAll('.chat-turn').length === {n} "
                                       "&& document.querySelectorAll('.chat-turn:last-child "
                                       "[data-act=pick]').length === 2", timeout=60_000)
            last = page.locator(".chat-turn").last
            labels = last.locator(".chat-answer b").all_text_contents()
            assert labels == ["Answer 1", "Answer 2"]                 # blind: no names yet
            answers = last.locator(".chat-answer .answer").all_text_contents()
            last.locator("[data-act=pick]").first.click()
            page.wait_for_function("document.querySelector('.chat-turn:last-child')"
                                   ".textContent.includes('picked')")
            revealed = last.locator(".chat-answer b").all_text_contents()
            assert sorted(x.replace(" ✓ picked", "") for x in revealed) == ["ada", "ben"]
            last.locator("[data-act=up]").nth(1).click()
            # the dataset is registered (empty) before its first line is appended: wait for the line
            wait_for(lambda: any(d["name"] == "chat-kto.jsonl"
                                 for d in app.state.store.list_datasets())
                     and _dataset_lines(app, "chat-kto.jsonl"), 10, "the KTO dataset's line")

            pref = _dataset_lines(app, "chat-preference.jsonl")
            assert len(pref) == 1 and pref[0]["chosen"] == answers[0]
            assert pref[0]["rejected"] == answers[1]
            # the prompt is the whole conversation before the answer: system, turn 1 and its
            # kept answer (model A's, nothing was picked then), the second question
            roles = [m["role"] for m in pref[0]["prompt"]]
            assert roles == ["system", "user", "assistant", "user"]
            assert pref[0]["prompt"][-1]["content"] == "And the supply boat?"
            kto = _dataset_lines(app, "chat-kto.jsonl")
            assert kto == [{"prompt": pref[0]["prompt"], "completion": answers[1], "label": True}]

            # the New-run form offers it: a DPO run on the picks is accepted (queued)
            ds_id = next(d["id"] for d in app.state.store.list_datasets()
                         if d["name"] == "chat-preference.jsonl")
            page.goto(f"{url}/#/new")
            page.wait_for_selector("#method")
            page.select_option("#method", "dpo")
            page.fill("#model", tiny_model_dir)
            page.select_option("#train-dataset", ds_id)
            page.fill("#run-name", "dpo on my picks")
            page.click("#submit-run")
            page.wait_for_url("**/#/run/r-*")
            run = app.state.store.list_jobs(kind="train")[0]
            assert run["config"]["method"] == "dpo" and run["status"] == "queued"
            assert run["config"]["data"]["train"][0].endswith("chat-preference.jsonl")

            # a dataset path smuggled into a run id: refused, no page, no Delete button
            page.goto(f"{url}/#/run/..%2Fdatasets%2F{ds_id}")
            page.wait_for_selector("#main .errors")
            assert "not a run id" in page.text_content("#main")
            assert page.locator("button[data-act=delete]").count() == 0
        finally:
            ctx.close()
        assert not errors, errors
