"""End to end in a real browser: Debian's headless Chromium driven by Playwright's Python package
(``executable_path``; where apt-get cannot install it, the Chromium that `playwright install
chromium` fetched; without either the test skips saying how to install one, which fails under
CI=true). Upload a dataset, start a short run on the tiny model, watch the loss chart update over
the event stream, see the run complete, compare, and save a screenshot."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from playwright import sync_api      # the dev extra: required (make install)

from .helpers import chat_rows, free_port, wait_for

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser")
                 if Path(p).exists()), shutil.which("chromium"))
INSTALL_HINT = ("install Chromium: `sudo apt-get install chromium` on Debian/Ubuntu (`make test` "
                "does it when run as root or with password-less sudo), or elsewhere "
                "`.venv/bin/playwright install chromium` (`make chromium` tries both)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def _chromium(p) -> str | None:
    """Debian's chromium, else the one `playwright install chromium` put in Playwright's cache
    (where apt-get is not usable, e.g. macOS or no root), else None."""
    if CHROMIUM:
        return CHROMIUM
    path = p.chromium.executable_path
    return path if path and Path(path).exists() else None


@pytest.fixture
def live_server(tmp_path):
    import uvicorn

    from mindprint.server.app import create_app

    app = create_app(tmp_path / "ws")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    wait_for(lambda: server.started, 30, "uvicorn to start")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    t.join(timeout=90)


def test_browser_upload_train_watch_complete(live_server, tmp_path, tiny_model_dir):
    train = tmp_path / "persona.jsonl"
    train.write_bytes(chat_rows(24))
    held = tmp_path / "held_out.jsonl"
    held.write_bytes(chat_rows(6))
    shot = tmp_path / "run.png"

    with sync_api.sync_playwright() as p:
        exe = _chromium(p)
        if exe is None:     # under CI=true this skip is a failure (tests/conftest.py)
            pytest.skip(f"no Chromium for the browser test: {INSTALL_HINT}")
        for attempt in (1, 2):   # a start that fails on a loaded machine gets one more try
            try:
                ctx = p.chromium.launch_persistent_context(
                    str(tmp_path / f"profile-{attempt}"), executable_path=exe, headless=True,
                    args=FLAGS, viewport={"width": 1280, "height": 1100})
                break
            except sync_api.Error:
                if attempt == 2:
                    raise
        page = ctx.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            # -- datasets: upload two files, each shows its validation report
            page.goto(f"{live_server}/#/datasets")
            # the file picker offers every data file kind the loader reads, not only .jsonl
            page.wait_for_selector("#upload-file")
            accept = page.get_attribute("#upload-file", "accept").split(",")
            assert {".jsonl", ".json", ".csv", ".tsv", ".parquet"} <= set(accept)
            for f, n in ((train, 24), (held, 6)):
                page.set_input_files("#upload-file", str(f))
                page.click("#upload-button")
                page.wait_for_function("([name, n]) => document.querySelector('#upload-report')"
                                       "?.textContent.includes(`${n} valid of ${n} lines`) && "
                                       "document.querySelector('#upload-report')?.textContent"
                                       ".includes(name)", arg=[f.name, n])
            page.wait_for_function("document.querySelectorAll('#datasets-table tbody tr[data-id]')"
                                   ".length === 2")
            ids = page.eval_on_selector_all("#datasets-table tbody tr[data-id]",
                                            "rows => Object.fromEntries(rows.map(r => "
                                            "[r.cells[0].textContent, r.dataset.id]))")

            # -- new run: the method picker shows each method's own fields
            page.goto(f"{live_server}/#/new")
            page.wait_for_selector("#method")
            page.select_option("#method", "dpo")
            assert page.is_visible('[data-key="dpo.beta"]')
            assert page.is_visible('[data-key="dpo.reference"]')
            page.select_option("#method", "grpo")
            assert page.is_visible('[data-key="grpo.epsilon_high"]')
            assert page.is_visible('[data-reward="length"]')
            assert not page.is_visible('[data-key="dpo.beta"]')
            page.select_option("#method", "sft")
            assert page.locator("fieldset[data-section]").count() == 0
            assert page.eval_on_selector_all("#backend option", "o => o.map(x => x.value)")[0] == "torch"

            page.fill("#run-name", "browser run")
            page.fill("#model", tiny_model_dir)
            page.select_option("#train-dataset", ids["persona.jsonl"])
            page.select_option("#eval-dataset", ids["held_out.jsonl"])
            for key, value in {"train.max_steps": "60", "train.batch_size": "2", "train.lr": "5e-3",
                               "train.eval_every": "20", "train.save_every": "30",
                               "train.warmup_steps": "1", "data.max_length": "64",
                               "lora.alpha": "8", "lora.dropout": "0", "lora.r": "0"}.items():
                page.fill(f'[data-key="{key}"]', value)
            page.fill("#overrides", "train.num_threads=1\ntrain.eval_at_start=false")
            page.click("#submit-run")             # lora.r = 0: the CLI's own message comes back
            page.wait_for_function("document.querySelector('#form-errors')?.textContent"
                                   ".includes('lora.r')")
            assert "greater than or equal to 1" in page.text_content("#form-errors")
            page.fill('[data-key="lora.r"]', "4")
            page.evaluate("window.__seen = []")
            page.click("#submit-run")

            # -- the run page: the loss chart fills as metrics arrive, then the run completes
            page.wait_for_url("**/#/run/r-*")
            run_id = page.url.rsplit("/", 1)[-1]
            page.evaluate("""() => { window.__seen = []; setInterval(() => {
                const c = document.querySelector('canvas[data-title="loss"]');
                if (!c) return;
                const n = Number(c.dataset.points);
                if (window.__seen[window.__seen.length - 1] !== n) window.__seen.push(n);
            }, 50); }""")
            page.wait_for_function("document.querySelector('#run-status')?.textContent.trim() "
                                   "=== 'completed'", timeout=180_000)
            page.wait_for_function("document.querySelector('canvas[data-title=\"loss\"]')"
                                   "?.dataset.points >= 63")     # 60 train + 3 eval points
            seen = page.evaluate("window.__seen")
            # watched live: empty while the run started, then growing to every point
            assert seen[0] == 0 and seen[-1] >= 63 and seen == sorted(seen), seen
            assert int(page.get_attribute('canvas[data-title="learning rate"]', "data-points")) == 60
            # SFT logs no reward: no reward chart waiting for data that never comes
            assert page.locator('canvas[data-title="reward"]').count() == 0
            assert page.text_content("#run-step").strip() == "60"
            assert page.is_visible("#download-adapter")
            time.sleep(0.3)                                        # let the last frame paint
            page.screenshot(path=str(shot), full_page=True)

            # -- the run list and the comparison page
            page.goto(f"{live_server}/#/runs")
            page.wait_for_selector("#runs-table .badge.completed")
            page.check("#runs-table tbody tr[data-id] input[type=checkbox]")
            page.click("#compare-selected")
            page.wait_for_function("Number(document.querySelector('canvas[data-title=\"train "
                                   "loss\"]')?.dataset.points) === 60")
            assert "train_loss" in page.text_content("#compare-metrics")

            # -- evaluate the run (base vs tuned) and read the report and its sample generations
            page.goto(f"{live_server}/#/run/{run_id}")
            page.wait_for_selector("#eval-form")
            page.select_option('#eval-form select[name="prompts"]', ids["held_out.jsonl"])
            page.select_option('#eval-form select[name="chat"]', ids["held_out.jsonl"])
            page.fill('#eval-form input[name="max_prompts"]', "2")
            page.fill('#eval-form input[name="max_new_tokens"]', "8")
            page.click("#eval-form button")
            page.wait_for_url("**/#/eval/e-*")
            page.wait_for_selector("#eval-summary", timeout=180_000)
            summary = page.text_content("#eval-summary")
            if "content_similarity" not in summary:     # say what the page and the API held
                api_rep = page.evaluate("async () => (await fetch(location.pathname + 'api/evals/' "
                                        "+ location.hash.split('/').pop() + '/report')).text()")
                pytest.fail(f"eval summary without content_similarity: {summary!r}\n"
                            f"page: {page.inner_html('#eval-body')[:3000]}\napi: {api_rep[:3000]}")
            assert "content_similarity" in summary and "perplexity" in summary
            assert page.locator("#eval-body .sample").count() == 2
            assert "Tell me about" in page.text_content("#eval-body .sample")
        finally:
            ctx.close()
        assert not errors, errors

    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
