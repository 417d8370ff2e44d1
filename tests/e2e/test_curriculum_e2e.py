"""End to end on the bundled model: examples/curriculum.yaml through the real CLI, shortened (two
topics, few steps, short answers). The full example is run by hand (see README, Curriculum)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from conftest import EXAMPLES, REPO
from mindprint.config_paths import resolve_file_paths

pytestmark = pytest.mark.slow


def test_curriculum_example_shortened(tmp_path, bundled_model_dir):
    # the example's data paths are relative to examples/: made absolute for the copy in tmp_path
    raw = resolve_file_paths(yaml.safe_load((EXAMPLES / "curriculum.yaml").read_text()),
                             EXAMPLES / "curriculum.yaml")
    topics = raw["curriculum"]["topics"]
    raw["curriculum"]["topics"] = [dict(topics[0], steps=6), dict(topics[1], steps=3)]
    raw["curriculum"]["gate"] = {"min_content_similarity": None}
    raw["data"]["max_length"] = 128
    raw["eval"].update(max_prompts=2, max_new_tokens=16, max_records=4)
    raw["output_dir"] = str(tmp_path / "run")
    cfg = tmp_path / "curriculum.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    r = subprocess.run([sys.executable, "-m", "mindprint.cli", "train", str(cfg)], cwd=REPO,
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"adapter: {tmp_path / 'run' / 'adapter'}" in r.stdout
    s = json.loads((tmp_path / "run" / "curriculum_summary.json").read_text())
    assert s["completed"] and [t["topic"] for t in s["topics"]] == ["cycles", "psychology"]
    for t in s["topics"]:
        ev = t["eval"]
        assert t["status"] == "done" and ev["n_prompts"] == 2
        assert 0 < ev["content_similarity"] <= 1 and 0 < ev["base_content_similarity"] <= 1
        assert ev["perplexity"] < ev["base_perplexity"]       # the topic's held-out answers
    second = tmp_path / "run" / "topics" / "02-psychology"
    rows = [json.loads(x) for x in (second / "metrics.jsonl").read_text().splitlines()]
    assert any("kl" in x and x["kl"] > 0 for x in rows)          # kl_sft logged its KL term
    assert (second / "eval" / "report.html").exists()
    assert "| cycles | sft | done | 6 |" in (tmp_path / "run" / "curriculum.md").read_text()
