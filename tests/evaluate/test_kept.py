"""General ability kept (mindprint.evaluate.kept) on the tiny model: the base model's answers to
the bundled everyday prompts are generated once and cached per base model, the tuned model's
log-prob of them and its own answers' similarity are the "kept" figures in eval, compare and the
HTML report, and a curriculum gate can require them."""

from __future__ import annotations

import json
import math

import pytest

from conftest import PERSONA
from mindprint.config import EvalConfig, GateConfig
from mindprint.curriculum.gate import gate_result
from mindprint.evaluate.compare import compare
from mindprint.evaluate.kept import everyday_prompts
from mindprint.evaluate.runner import EvalJob, run_eval
from mindprint.evaluate.summary import summary_lines

N = 4


def test_everyday_prompts_are_varied_and_unique():
    rows = everyday_prompts()
    assert len(rows) >= 20 and len({r["prompt"] for r in rows}) == len(rows)
    assert {"recipe", "directions", "arithmetic", "email"} <= {r["kind"] for r in rows}
    assert everyday_prompts(3) == rows[:3]


@pytest.fixture(scope="module")
def kept_runs(tiny_adapter, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("cache")
    mp.setenv("MINDPRINT_CACHE", str(cache))
    cfg = EvalConfig(prompts=[str(PERSONA / "prompts_eval.jsonl")], max_prompts=2,
                     max_new_tokens=12, batch_size=4, kept=N, kept_max_new_tokens=6)
    logs: list[list[str]] = [[], []]
    reps = []
    for i in range(2):
        out = tmp_path_factory.mktemp("kept") / f"e{i}"
        reps.append(run_eval(EvalJob(cfg, out, adapter=tiny_adapter, max_length=128),
                             log=logs[i].append))
    yield reps, logs, cache, out
    mp.undo()


def test_eval_reports_kept_figures_and_caches_the_base_answers(kept_runs):
    (first, second), logs, cache, out = kept_runs
    b, t = first["summary"]["base"], first["summary"]["tuned"]
    assert math.isfinite(b["kept_logprob"]) and b["kept_logprob"] < 0
    assert t["kept_likelihood_ratio"] == pytest.approx(math.exp(t["kept_logprob"] - b["kept_logprob"]))
    assert 0 < t["kept_likelihood_ratio"] and -1 <= t["kept_similarity"] <= 1
    assert "kept_likelihood_ratio" not in b            # relative to the base: tuned only
    k = first["kept"]
    assert k["n"] == N and len(k["rows"]) == N and k["max_new_tokens"] == 6
    assert all(set(r["answers"]) == {"base", "tuned"} for r in k["rows"])
    files = list((cache / "kept").glob("*.json"))
    assert [str(f) for f in files] == [k["cache"]]
    assert json.loads(files[0].read_text())["answers"] == [r["answers"]["base"] for r in k["rows"]]
    # the second eval reads the base answers back instead of generating them
    assert any("cached for next time" in s for s in logs[0])
    assert any("from the cache" in s for s in logs[1]) and not any("cached for next" in s for s in logs[1])
    assert second["summary"]["tuned"]["kept_logprob"] == pytest.approx(t["kept_logprob"])
    html = (out / "report.html").read_text()
    assert "General ability kept" in html and "banned" in html
    assert any(ln.startswith("kept: likelihood of base") for ln in summary_lines(second))


def test_the_cached_answers_are_the_yardstick(kept_runs, tiny_adapter, tmp_path, monkeypatch):
    """A changed cache file is what the next eval scores against (the key names the model)."""
    (first, _), _, cache, _ = kept_runs
    monkeypatch.setenv("MINDPRINT_CACHE", str(cache))
    path = cache / "kept" / first["kept"]["cache"].rsplit("/", 1)[-1]
    data = json.loads(path.read_text())
    data["answers"] = ["Boil water, add pasta, wait ten minutes."] * N
    path.write_text(json.dumps(data))
    cfg = EvalConfig(prompts=[str(PERSONA / "prompts_eval.jsonl")], max_prompts=1,
                     max_new_tokens=12, batch_size=4, kept=N, kept_max_new_tokens=6)
    rep = run_eval(EvalJob(cfg, tmp_path / "e", adapter=tiny_adapter, max_length=128))
    assert [r["answers"]["base"] for r in rep["kept"]["rows"]] == data["answers"]
    assert rep["summary"]["base"]["kept_logprob"] != first["summary"]["base"]["kept_logprob"]


def test_gate_requires_kept_figures():
    ev = {"kept_likelihood_ratio": 0.8, "kept_similarity": 0.6}
    assert gate_result(GateConfig(min_kept_likelihood_ratio=0.7, min_kept_similarity=0.5), ev) == []
    why = gate_result(GateConfig(min_kept_likelihood_ratio=0.9), ev)
    assert why == ["general ability kept (likelihood of the base model's everyday answers) 0.8000 "
                   "< min_kept_likelihood_ratio 0.9"]
    assert "not measured" in gate_result(GateConfig(min_kept_similarity=0.1), {})[0]
    with pytest.raises(ValueError):
        GateConfig(min_kept_likelihood_ratio=0)


def test_compare_has_kept_figures_per_adapter(tiny_adapter, tmp_path, monkeypatch):
    monkeypatch.setenv("MINDPRINT_CACHE", str(tmp_path / "cache"))
    prompts = tmp_path / "p.txt"
    prompts.write_text("Where are we in the cycle?\n")
    res = compare([tiny_adapter], [str(prompts)], str(tmp_path / "cmp"), max_new_tokens=6,
                  kept=3, kept_max_new_tokens=4)
    k = res["kept"]
    assert k["n"] == 3 and set(k) == {"base", "run", "cache", "n"}
    assert k["run"]["kept_likelihood_ratio"] > 0 and "kept_similarity" in k["run"]
    assert "general ability kept on 3 everyday prompts" in (tmp_path / "cmp" / "compare.md").read_text()
