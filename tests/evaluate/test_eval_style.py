"""Style measures are pure functions of text."""

from __future__ import annotations

from mindprint.measures.style import banned_hits, markdown_features, reference_style, style_of


def test_markdown_features():
    assert markdown_features("Zoom out. Cycles turn.") == {"list": False, "heading": False}
    assert markdown_features("Three things:\n- cash\n- credit") == {"list": True, "heading": False}
    assert markdown_features("Steps:\n1. wait\n2) watch") == {"list": True, "heading": False}
    assert markdown_features("## Summary\nShort.") == {"list": False, "heading": True}
    # a hyphen inside a sentence, a hashtag and a year are not markdown structure
    assert markdown_features("A risk-off mood, #cycles, in 2008.") == {"list": False, "heading": False}


def test_banned_hits_are_case_insensitive_and_counted():
    text = "As an AI, I cannot say. As an ai I would delve."
    assert banned_hits(text, ["as an AI", "delve", "in conclusion"]) == {"as an AI": 2, "delve": 1}


def test_style_of_adherence_against_references():
    answers = ["Zoom out. Plain prose.", "- a list\n- answer", "# Heading\ntext"]
    refs = ["Plain reference.", "Plain reference.", None]
    agg, per = style_of(answers, refs, ["zoom"], new_tokens=[5, 6, 7])
    # answer 1 matches its plain reference, answer 2 uses a list where the reference does not;
    # answer 3 has no reference and does not count
    assert [s.get("markdown_adheres") for s in per] == [True, False, None]
    assert agg["markdown_adherence"] == 0.5
    assert agg["list_rate"] == 1 / 3 and agg["heading_rate"] == 1 / 3
    assert agg["banned_phrase_hits"] == 1 and agg["banned_answer_rate"] == 1 / 3
    assert agg["answer_words_mean"] == (4 + 5 + 3) / 3 and agg["answer_tokens_mean"] == 6
    assert reference_style(refs) == {"count": 2, "list_rate": 0.0, "heading_rate": 0.0,
                                     "answer_words_mean": 2}
