"""What the voice cost: distinct-n and loop share on hand-checked texts."""

import pytest

from mindprint.measures.diversity import distinct_n, diversity, loops


def test_distinct_n_by_hand():
    # words: a b a b c → unigrams {a, b, c} 3 of 5; bigrams ab ba ab bc → {ab, ba, bc} 3 of 4
    assert distinct_n(["a b a", "b c"], 1) == pytest.approx(3 / 5)
    assert distinct_n(["a b a b c"], 2) == pytest.approx(3 / 4)
    assert distinct_n(["", "x"], 2) is None


def test_loops():
    assert loops("the market the market the market the market the market the market")
    assert not loops("Zoom out. Cycles turn slowly, and patience is a position worth holding.")
    assert not loops("no no no no")            # too short to judge
    # one sentence said three times: 2 of 3 copies repeat → well over a quarter of the 4-grams
    s = "I think the rate will fall soon. "
    assert loops(s * 3) and not loops(s)


def test_diversity_of_a_set():
    d = diversity(["one two three four five six seven eight", "la la la la la la la la la la"])
    assert d["loop_share"] == 0.5
    assert 0 < d["distinct_1"] < 1 and 0 < d["distinct_2"] < 1
    assert diversity([])["loop_share"] is None
