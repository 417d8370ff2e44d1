"""Reward functions: built-ins on hand-checked texts, user functions, and their failure messages."""

import re
import sys
import textwrap
from pathlib import Path

import pytest

from mindprint import config as config_mod
from mindprint import rewards as R
from mindprint.data.records import Message, PromptRecord
from mindprint.errors import ConfigError, MindprintError
from mindprint.measures.voice import VoiceVerifier
from mindprint.measures.voice_data import person_texts
from mindprint.rewards.builtin import length_score, rouge_l, token_f1


def _cfg(**grpo):
    return config_mod.from_dict({"method": "grpo", "data": {"train": "x.jsonl"}, "grpo": grpo})


def _rec(answer=None):
    return PromptRecord((Message("user", "hi"),), answer)


def test_token_f1_and_rouge_l_by_hand():
    # "the cat sat" vs "the cat ran away": common {the, cat} = 2; P = 2/3, R = 2/4 → F1 = 4/7
    assert token_f1("The cat sat", "the cat ran away") == pytest.approx(4 / 7)
    # LCS("a b c d", "a c b d") = 3 (a b d / a c d) → P = R = 3/4 → F = 0.75
    assert rouge_l("a b c d", "a c b d") == pytest.approx(0.75)
    assert token_f1("", "") == 1.0 and rouge_l("x", "") == 0.0 and token_f1("x", "y") == 0.0


def test_length_score_shape():
    # range [10, 20]: inside 1; 5 words → 5/10; 30 words → 1 − 10/20 = 0.5; 40+ → 0
    assert [length_score(n, 10, 20) for n in (10, 15, 20, 5, 30, 45)] == [1, 1, 1, 0.5, 0.5, 0.0]


def test_builtins_through_build_and_score():
    cfg = _cfg(rewards=["answer_similarity", "length", "format", "banned_phrases"],
               reward_weights=[1.0, 2.0, 0.5, 1.0], length_range=[1, 3], format_pattern=r"^Zoom",
               similarity="f1")
    rewards = R.build(cfg.grpo, ["delve", "as an ai"])
    comps = ["Zoom out now", "As an AI I delve and delve deeper here"]
    recs = [_rec("zoom out"), _rec(None)]
    table = R.score(rewards, [[{"role": "user", "content": "hi"}]] * 2, comps, recs)
    # F1("zoom out now", "zoom out") = 2·(2/3·1)/(2/3+1) = 0.8; no answer → None
    assert table[0] == [pytest.approx(0.8), None]
    assert table[1] == [1.0, pytest.approx(max(0.0, 1 - (9 - 3) / 3))]   # 3 words; 9 words → 0
    assert table[2] == [1.0, 0.0]
    assert table[3] == [1.0, pytest.approx(1 / 4)]                       # 3 hits → 1/(1+3)
    total = R.combine(rewards, table)
    assert total[0] == pytest.approx(0.8 + 2 + 0.5 + 1)
    assert total[1] == pytest.approx(0 + 0 + 0.25)


def test_content_similarity_uses_the_eval_embedder():
    import sentence_transformers  # noqa: F401
    # the old name voice_fidelity still works: renamed, with a warning
    with pytest.warns(config_mod.RenamedWarning, match="now called 'content_similarity'"):
        cfg = _cfg(rewards=["voice_fidelity"])
    assert cfg.grpo.rewards == ["content_similarity"]
    [vf] = R.build(cfg.grpo)
    assert vf.name == "content_similarity"
    out = vf.fn(None, ["Zoom out: the cycle turns.", "Zoom out: the cycle turns.", "x"],
                [_rec("Zoom out: the cycle turns."), _rec("Bananas are yellow fruit."), _rec()])
    assert out[0] == pytest.approx(1.0, abs=1e-4)
    assert out[1] < 0.6 and out[2] is None


def test_voice_match_scores_the_voice_not_the_answer():
    """Fitted on the bundled persona's answers (data.train by default): an in-voice completion on
    another subject scores high, a generic-assistant one on the persona's subject low."""
    persona = str(Path(__file__).resolve().parents[2] / "examples/data/persona_train.jsonl")
    cfg = config_mod.from_dict({"method": "grpo", "data": {"train": persona},
                                "grpo": {"rewards": ["voice_match"]}})
    assert cfg.grpo.voice_person == [persona]
    [vm] = R.build(cfg.grpo)
    out = vm.fn(None, ["Zoom out. Gardens teach the same lesson as markets. Seasons turn. "
                       "Patience is a position.",
                       "Great question! Credit spreads are the difference between corporate and "
                       "government bond yields. They often widen before a recession."],
                [_rec(), _rec()])
    assert out[0] > 0.5 > out[1]
    # a loop of the persona's stock phrases: the verifier alone says it is the person's; the
    # reward gives it 0 so GRPO cannot learn to repeat them
    loop = "Zoom out. Patience is a position. " * 6
    assert vm.fn(None, [loop], [_rec()]) == [0.0]
    # a bare stock phrase: shorter than any background text the verifier was fitted against (a
    # quarter of the persona's median answer, ~14 words), it reads as the persona (P ~ 1) but
    # scores 0; GRPO found "Zoom out. Patience." in a 30-step run that did not have this rule
    bare = "Zoom out. Patience is a position."
    verifier = VoiceVerifier.fit(person_texts([persona])[0])
    assert 6 < verifier.min_words < 20 and verifier.predict([bare])[0] > 0.5
    assert vm.fn(None, [bare], [_rec()]) == [0.0]
    longer = ("Zoom out. Gardens teach the same lesson as markets: nothing grows on the schedule "
              "you set for it. Patience is a position.")
    assert vm.fn(None, [longer], [_rec()])[0] > 0.5


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_rewards_mod.py").write_text(textwrap.dedent("""
        def good(prompts, completions, records):
            return [float(len(c)) if c else None for c in completions]
        def boom(prompts, completions, records):
            raise KeyError("answer")
        def short(prompts, completions, records):
            return [1.0]
        def text(prompts, completions, records):
            return ["high"] * len(completions)
    """))
    monkeypatch.chdir(tmp_path)
    yield "my_rewards_mod"
    sys.modules.pop("my_rewards_mod", None)


def test_user_function_from_current_directory(user_module):
    cfg = _cfg(rewards=[f"{user_module}:good"])
    [r] = R.build(cfg.grpo)
    assert R.score([r], [None, None], ["abc", ""], [_rec(), _rec()]) == [[3.0, None]]
    assert R.combine([r], [[3.0, None]]) == [3.0, None]


@pytest.mark.parametrize("fn,msg", [("boom", "reward 'my_rewards_mod:boom' raised KeyError"),
                                    ("short", "returned 1 value(s) for 2 completions"),
                                    ("text", "returned 'high' for completion 0")])
def test_bad_user_functions_stop_with_their_name(user_module, fn, msg):
    [r] = R.build(_cfg(rewards=[f"{user_module}:{fn}"]).grpo)
    with pytest.raises(MindprintError, match=re.escape(msg)):
        R.score([r], [None, None], ["a", "b"], [_rec(), _rec()])


def test_user_function_import_errors(user_module):
    with pytest.raises(ConfigError, match="cannot import 'no_such_mod_xyz'"):
        R.build(_cfg(rewards=["no_such_mod_xyz:f"]).grpo)
    with pytest.raises(ConfigError, match="has no function 'missing'"):
        R.build(_cfg(rewards=[f"{user_module}:missing"]).grpo)


def test_unknown_reward_did_you_mean_and_config_checks():
    with pytest.raises(ConfigError, match="unknown reward 'lenght'; did you mean 'length'"):
        _cfg(rewards=["lenght"])
    with pytest.raises(ConfigError, match="not \"package.module:function\""):
        _cfg(rewards=["a b:c"])
    with pytest.raises(ConfigError, match="reward_weights has 1 weight"):
        _cfg(rewards=["length", "banned_phrases"], reward_weights=[1.0])
    with pytest.raises(ConfigError, match="format_pattern"):
        _cfg(rewards=["format"])
    with pytest.raises(ConfigError, match="not a regular expression"):
        _cfg(rewards=["format"], format_pattern="(")


def test_length_gives_unfinished_completions_zero():
    """A completion cut off before end-of-turn scores 0 on `length` whatever its visible words:
    range [1, 3]; "a b" finished → 1; "a b" unfinished → 0; 6 words finished → 1 − 3/3 = 0."""
    [length] = R.build(_cfg(rewards=["length"], length_range=[1, 3]).grpo)
    comps = ["a b", "a b", "a b c d e f"]
    assert R.score([length], None, comps, [_rec()] * 3, finished=[True, False, True]) == \
        [[1.0, 0.0, 0.0]]
    assert R.score([length], None, comps, [_rec()] * 3) == [[1.0, 1.0, 0.0]]   # no flags: all ended


def test_finished_flags_reach_only_functions_that_take_them():
    seen = {}

    def plain(prompts, completions, records):
        return [1.0] * len(completions)

    def named(prompts, completions, records, finished):
        seen["named"] = finished
        return [float(f) for f in finished]

    def kwargs(prompts, completions, records, **kw):
        seen["kwargs"] = kw
        return [0.5] * len(completions)

    rs = [R.Reward("plain", plain), R.Reward("named", named), R.Reward("kwargs", kwargs)]
    table = R.score(rs, None, ["x", "y"], [_rec(), _rec()], finished=[True, False])
    assert table == [[1.0, 1.0], [1.0, 0.0], [0.5, 0.5]]
    assert seen == {"named": [True, False], "kwargs": {"finished": [True, False]}}
    with pytest.raises(ValueError, match="finished has 1 flags for 2 completions"):
        R.score(rs, None, ["x", "y"], [_rec(), _rec()], finished=[True])
