"""Preference accuracy from log-probs, with hand-computed values."""

from __future__ import annotations

import pytest

from mindprint.evaluate.metrics import preference_accuracy


def test_preference_accuracy_by_hand():
    policy = {"where": ["f:1", "f:2"], "chosen": [-10.0, -30.0], "rejected": [-12.0, -20.0],
              "chosen_tokens": [10.0, 40.0], "rejected_tokens": [10.0, 10.0]}
    base = {"where": ["f:1", "f:2"], "chosen": [-11.0, -35.0], "rejected": [-11.0, -19.0],
            "chosen_tokens": [10.0, 40.0], "rejected_tokens": [10.0, 10.0]}
    plain = preference_accuracy(policy)
    # pair 1: -10 > -12 ✓; pair 2: -30 > -20 ✗          → 1/2
    # per token: -1.0 > -1.2 ✓; -0.75 > -2.0 ✓          → 2/2 (the chosen answer is longer)
    assert plain["logp_accuracy"] == 0.5 and plain["avg_logp_accuracy"] == 1.0
    assert "implicit_accuracy" not in plain
    tuned = preference_accuracy(policy, base)
    # margins: (-10 + 11) - (-12 + 11) = 2 ✓; (-30 + 35) - (-20 + 19) = 6 ✓
    assert [s["margin"] for s in tuned["samples"]] == [2.0, 6.0]
    assert tuned["implicit_accuracy"] == 1.0
    assert tuned["implicit_margin_mean"] == pytest.approx(4.0)
