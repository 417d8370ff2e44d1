"""The chat playground in headless Chromium (as tests/server/test_browser_e2e.py): a two-turn
conversation with two registered adapters side by side, streamed from /v1; blind A/B picks (one a
turn) and a thumb land in the workspace's preference and KTO datasets; the New-run form
preselects the preference dataset for DPO (the KTO one, newer, for KTO), shows a time estimate,
shows validation errors at their fields, and starts a DPO run on the picks that runs to completion
(the job runner is started for it: `mindprint train` on the tiny model, 2 steps); the run's page
says what it trained on, by dataset name; "duplicate config" refills the form. Then, on seeded
jobs (a run that failed on its data, a finished compare): the runs list says why and filters, the
failed run offers "edit and retry" instead of resume, and the compare report is rendered with run
names. Finally a hash route smuggling a dataset path into a run id is refused before any
request. The tiny model answers everything; nothing is seeded into the training data."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

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


def test_chat_picks_become_training_data_and_a_dpo_run(chat_server, tmp_path, tiny_model_dir):
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
                if n == 1:      # a pick a turn: the DPO run below trains on both
                    first = page.locator(".chat-turn").last
                    first_answers = first.locator(".chat-answer .answer").all_text_contents()
                    first.locator("[data-act=pick]").nth(1).click()
                    page.wait_for_function("document.querySelector('.chat-turn:last-child')"
                                           ".textContent.includes('picked')")
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
            assert len(pref) == 2 and pref[1]["chosen"] == answers[0]
            assert pref[1]["rejected"] == answers[1]
            assert (pref[0]["chosen"], pref[0]["rejected"]) == tuple(first_answers[::-1])
            # the prompt is the whole conversation before the answer: system, turn 1 and its
            # kept answer (the one picked then), the second question
            roles = [m["role"] for m in pref[1]["prompt"]]
            assert roles == ["system", "user", "assistant", "user"]
            assert pref[1]["prompt"][2]["content"] == first_answers[1]
            assert pref[1]["prompt"][-1]["content"] == "And the supply boat?"
            kto = _dataset_lines(app, "chat-kto.jsonl")
            assert kto == [{"prompt": pref[1]["prompt"], "completion": answers[1], "label": True}]

            ids = {d["name"]: d["id"] for d in app.state.store.list_datasets()}
            _train_dpo_on_the_picks(page, url, app, tiny_model_dir, ids)
            _failed_run_and_compare(page, url, app, ids)

            # a dataset path smuggled into a run id: refused, no page, no Delete button
            page.goto(f"{url}/#/run/..%2Fdatasets%2F{ids['chat-preference.jsonl']}")
            page.wait_for_selector("#main .errors")
            assert "not a run id" in page.text_content("#main")
            assert page.locator("button[data-act=delete]").count() == 0
        finally:
            ctx.close()
            app.state.runner.stop(grace_s=5)
        assert not errors, errors


def _train_dpo_on_the_picks(page, url, app, tiny_model_dir, ids) -> None:
    pref_id, kto_id = ids["chat-preference.jsonl"], ids["chat-kto.jsonl"]
    page.goto(f"{url}/#/new")
    page.wait_for_selector("#method")
    # the picker preselects the newest dataset the method trains on: the KTO file is newer but
    # holds no pairs; KTO takes either; SFT finds none of its formats
    page.select_option("#method", "dpo")
    assert page.input_value("#train-dataset") == pref_id
    page.select_option("#method", "kto")
    assert page.input_value("#train-dataset") == kto_id
    page.select_option("#method", "sft")
    assert page.input_value("#train-dataset") == ""
    assert "no sft data yet" in page.text_content("#train-hint")
    page.select_option("#method", "dpo")
    assert page.input_value("#train-dataset") == pref_id
    # the defaults' estimate (no finished run yet: the stated default), updated as fields change
    assert "2 h" in page.text_content("#estimate-time")
    assert "default" in page.text_content("#estimate")
    page.fill('[data-key="train.max_steps"]', "2")
    page.wait_for_function("!document.querySelector('#estimate-time').textContent.includes('h')")

    page.fill("#model", tiny_model_dir)
    page.fill("#run-name", "dpo on my picks")
    for key, value in {"train.batch_size": "2", "train.lr": "5e-3", "train.warmup_steps": "0",
                       "data.max_length": "160", "lora.r": "0", "lora.alpha": "8",
                       "lora.dropout": "0", "dpo.beta": "0"}.items():
        page.fill(f'[data-key="{key}"]', value)
    page.fill("#overrides", "train.num_threads=1\ntrain.eval_at_start=false")
    page.click("#submit-run")         # two mistakes: each at its field, both under the button
    page.wait_for_selector('.field-error[data-for="dpo.beta"]')
    at = {k: page.text_content(f'label:has([data-key="{k}"]) .field-error')
          for k in ("lora.r", "dpo.beta")}
    assert "greater than or equal to 1" in at["lora.r"] and "greater than 0" in at["dpo.beta"]
    assert "2 problems" in page.text_content("#form-errors")
    page.fill('[data-key="lora.r"]', "4")
    page.fill('[data-key="dpo.beta"]', "0.1")
    page.click("#submit-run")
    page.wait_for_url("**/#/run/r-*")
    run_id = page.url.rsplit("/", 1)[-1]
    app.state.runner.start()          # the fixture's runner is off: this run is the one it runs
    page.wait_for_function("document.querySelector('#run-status')?.textContent.trim() "
                           "=== 'completed'", timeout=150_000)
    page.wait_for_function("document.querySelector('#run-data')?.textContent"
                           ".includes('chat-preference.jsonl')")
    assert "(2 examples)" in page.text_content("#run-data")
    run = page.evaluate(f"async () => (await fetch('/api/runs/{run_id}')).json()")
    assert run["summary"]["method"] == "dpo" and run["summary"]["steps"] == 2
    path = run["config"]["data"]["train"][0]
    assert [(f["role"], f["name"], f["sha256"]) for f in run["trained_on"]] == [
        ("train", "chat-preference.jsonl", hashlib.sha256(Path(path).read_bytes()).hexdigest())]
    # DPO logs its implicit rewards: the reward chart is there (an SFT run has none)
    assert int(page.get_attribute('canvas[data-title="reward"]', "data-points")) >= 2
    # the config names the dataset; the server path is kept aside
    assert f"chat-preference.jsonl ({pref_id})" in page.text_content("#run-config")
    assert path not in page.text_content("#run-config")
    assert path in page.text_content("#run-paths")
    page.click("#duplicate-run")
    page.wait_for_selector("#from-run .card")
    assert page.input_value("#method") == "dpo" and page.input_value("#train-dataset") == pref_id
    assert page.input_value("#run-name") == "dpo on my picks (copy)"
    assert page.input_value('[data-key="train.max_steps"]') == "2"
    assert page.input_value('[data-key="dpo.beta"]') == "0.1"
    assert "train.num_threads=1" in page.input_value("#overrides")


def _failed_run_and_compare(page, url, app, ids) -> None:
    """Seeded: a run that failed on its data (as the runner records one: exit code 2 and the
    CLI's error lines; tests/server/test_ui_api.py reaps a real one) and a finished compare of
    it with the DPO run (compare.md as `mindprint compare` writes it)."""
    store = app.state.store
    dpo = store.list_jobs(kind="train")[0]
    failed = dict(dpo, id="r-0000000000f1", name="sft on thumbs", status="failed", exit_code=2,
                  error="error: chat-kto.jsonl:1: sft trains on chat or text records, not kto\n",
                  config={**dpo["config"], "method": "sft"}, dir=dpo["dir"] + "-f1")
    store.add_job(**{k: failed[k] for k in ("id", "kind", "name", "status", "exit_code", "error",
                                            "config", "dir")})
    page.goto(f"{url}/#/runs")
    page.wait_for_selector("#runs-table .badge.failed")
    assert "sft trains on chat or text records, not kto" in page.text_content(".reason")
    page.select_option("#filter-status", "failed")
    assert page.locator("#runs-table tbody tr[data-id]").count() == 1
    page.select_option("#filter-status", "")
    page.fill("#filter-text", "my picks")
    names = page.locator("#runs-table tbody tr[data-id] td:nth-child(2)").all_text_contents()
    assert names == ["dpo on my picks"]
    page.fill("#filter-text", "")
    page.select_option("#filter-method", "sft")
    assert page.locator("#runs-table tbody tr[data-id]").count() == 1
    page.click("#runs-table a[href='#/run/r-0000000000f1']")
    page.wait_for_selector("#run-hint")
    assert page.locator("#run-actions [data-act=resume]").count() == 0
    assert "edit the config or the data and retry" in page.text_content("#run-hint")
    page.wait_for_selector("#eval-none")
    assert "once the run has finished" not in page.text_content("#eval-box")
    page.click("#run-actions [data-act=retry]")
    page.wait_for_selector("#from-run .card")
    assert "which failed (config or data error)" in page.text_content("#from-run")

    adapter = str(Path(dpo["dir"]) / "run" / "adapter")
    d = Path(dpo["dir"]).parent / "c-0000000000c1" / "compare"
    d.mkdir(parents=True)
    (d / "compare.json").write_text(json.dumps({"adapters": {"run": adapter}}))
    (d / "compare.md").write_text(
        f"# Mindprint compare\n\nbase model m; adapters: run ({adapter}); greedy decoding, up "
        "to 8 new tokens\n\n## 1. Storms?\n\n| base | run |\n|---|---|\n| **calm** | "
        "<img src=x onerror=alert(1)><br>two \\| lines |\n", encoding="utf-8")
    store.add_job(id="c-0000000000c1", kind="compare", name="compare", status="completed",
                  config={"adapters": [adapter], "runs": [dpo["id"]], "prompts": []},
                  dir=str(d.parent))
    page.goto(f"{url}/#/eval/c-0000000000c1")
    page.wait_for_selector("#compare-md table")
    assert page.locator("#compare-md th").all_text_contents() == ["base", "dpo on my picks"]
    assert page.locator("#compare-md strong").text_content() == "calm"
    assert page.locator("#compare-md img").count() == 0
    assert "<img src=x onerror=alert(1)>" in page.text_content("#compare-md td:nth-child(2)")
