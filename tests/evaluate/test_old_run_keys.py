"""Run directories written before ``voice_fidelity`` was renamed ``content_similarity``: their
metrics.jsonl probe rows, curriculum_state.json gate numbers and eval report.json are read back
under the new name (compare, reports and gates of an old run see content_similarity)."""

from __future__ import annotations

import json
from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from mindprint.config import GateConfig
from mindprint.curriculum.gate import gate_result
from mindprint.curriculum.state import State
from mindprint.outputs import RENAMED_KEYS, RunDir, current_keys
from mindprint.runs import Run

OLD_PROBE = {"step": 4, "voice_fidelity": 0.61, "base_voice_fidelity": 0.52, "n_prompts": 3}


def test_old_metrics_rows_read_back_under_the_new_name(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        json.dumps({"step": 2, "loss": 1.5}) + "\n" + json.dumps(OLD_PROBE) + "\n")
    rows = RunDir(tmp_path).read_metrics()
    assert rows[1] == {"step": 4, "content_similarity": 0.61, "base_content_similarity": 0.52,
                       "n_prompts": 3}
    assert Run.load(tmp_path).last("content_similarity") == 0.61


def test_old_curriculum_state_passes_the_content_gate_under_the_new_key(tmp_path):
    topic = SimpleNamespace(name="cycles", steps=10)
    (tmp_path / "curriculum_state.json").write_text(json.dumps({"topics": {"cycles": {
        "status": "done", "attempts": 0, "steps": 10,
        "eval": {"voice_fidelity": 0.7, "base_voice_fidelity": 0.5}}}}))
    state = State(tmp_path, [topic])
    state.load()
    ev = state["cycles"]["eval"]
    assert ev == {"content_similarity": 0.7, "base_content_similarity": 0.5}
    assert gate_result(GateConfig(min_content_similarity=0.6), ev) == []
    assert gate_result(GateConfig(min_content_similarity=0.8), ev) == [
        "content similarity 0.7000 < min_content_similarity 0.8"]


def test_new_key_wins_and_nesting_is_followed():
    assert current_keys({"voice_fidelity": 1, "content_similarity": 2}) == {"content_similarity": 2}
    report = {"summary": {"base": {"voice_fidelity": 0.3}, "tuned": {"voice_fidelity": 0.4}},
              "rows": [{"eval": {"base_voice_fidelity": 0.1}}]}
    assert current_keys(report) == {
        "summary": {"base": {"content_similarity": 0.3}, "tuned": {"content_similarity": 0.4}},
        "rows": [{"eval": {"base_content_similarity": 0.1}}]}


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["a", "step", *RENAMED_KEYS, *RENAMED_KEYS.values()]), inner, max_size=4),
    max_leaves=12)


@given(json_values)
def test_renaming_is_idempotent_and_leaves_no_old_key(value):
    once = current_keys(value)
    assert current_keys(once) == once
    assert not any(k in json.dumps(once) for k in (f'"{old}"' for old in RENAMED_KEYS))
