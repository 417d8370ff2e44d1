"""The voice verifier (mindprint.measures.voice): it tells a person's held-out answers from a
generic assistant's and from another person's answers to the same questions, and it is not
swayed by topic. Personas under fixtures/voices/ were written for these tests (the code has
never seen them); each of marguerite (formal retired teacher), jaz (lower-case texting musician),
rolf (terse engineer), beatriz (Portuguese nurse writing in her second language), stan (chatty
retired Yorkshire lorry driver), noor (list-and-arrow project manager) and generic (an assistant)
answers the same 40 questions, 20 on "home" topics and 20 on "work" topics; the "other person" of
each is the next in NAMES. kofi (a Ghanaian-British maths teacher) and dee (a chatty American
illustrator) were written after the background was last changed, to check it beyond the personas
it was measured on: they join the every-person check, not the next-person pairing.
persona_other/persona_generic answer the first 20 questions of examples/data/persona_eval.jsonl.
Pure scikit-learn on text: no model.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold

from mindprint.cli import main
from mindprint.config import GateConfig, RenamedWarning
from mindprint.curriculum.gate import gate_result
from mindprint.errors import DataError
from mindprint.measures.features import DENSE_NAMES, dense_features, mask_content
from mindprint.measures.voice import MIN_PERSON, VoiceVerifier, background_texts, held_out_auc
from mindprint.measures.voice_data import person_texts, scored_texts

ROOT = Path(__file__).resolve().parents[2]
FX = Path(__file__).parent / "fixtures" / "voices"
EXAMPLES = ROOT / "examples" / "data"
NAMES = ["marguerite", "jaz", "rolf", "beatriz", "stan", "noor"]
OTHER = {n: NAMES[(i + 1) % len(NAMES)] for i, n in enumerate(NAMES)}
HELD_OUT = ["kofi", "dee"]
EVERYONE = NAMES + HELD_OUT


def answers(path: Path, topic: str | None = None) -> list[str]:
    rows = [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [r["messages"][-1]["content"] for r in rows if topic is None or r.get("topic") == topic]


def auc(pos, neg) -> float:
    return float(roc_auc_score([1] * len(pos) + [0] * len(neg), list(pos) + list(neg)))


def cases():
    """(name, the person's answers, the paired other person or None, generic answers, every other
    person's answers by name)."""
    for n in EVERYONE:
        yield (n, answers(FX / f"{n}.jsonl"), OTHER.get(n), answers(FX / "generic.jsonl"),
               {m: answers(FX / f"{m}.jsonl") for m in EVERYONE if m != n})
    yield ("bundled", answers(EXAMPLES / "persona_train.jsonl") + answers(EXAMPLES / "persona_eval.jsonl"),
           "persona_other", answers(FX / "persona_generic.jsonl"),
           {"persona_other": answers(FX / "persona_other.jsonl")})


def test_fixtures_answer_the_same_questions():
    qs = {n: [json.loads(ln)["messages"][0]["content"] for ln in open(FX / f"{n}.jsonl")]
          for n in EVERYONE + ["generic"]}
    assert len(qs["jaz"]) == 40 and all(q == qs["jaz"] for q in qs.values())
    topics = {n: [json.loads(ln)["topic"] for ln in open(FX / f"{n}.jsonl")] for n in EVERYONE}
    assert all(t == topics["jaz"] for t in topics.values())
    texts = [a for n in EVERYONE for a in answers(FX / f"{n}.jsonl")]
    assert len(set(texts)) == len(texts)          # no answer repeated within or across personas
    ev = [json.loads(ln)["messages"][0]["content"] for ln in open(EXAMPLES / "persona_eval.jsonl")]
    for n in ("persona_other", "persona_generic"):
        assert [json.loads(ln)["messages"][0]["content"] for ln in open(FX / f"{n}.jsonl")] == ev[:20]


@pytest.mark.parametrize("name,person,other,generic,others",
                         [pytest.param(*c, id=c[0]) for c in cases()])
def test_person_held_out_beats_generic_and_other_persons(name, person, other, generic, others):
    """5 folds over the person's answers: fitted on 4/5, the held-out fifth scores above the
    generic assistant's and other persons' answers to the same questions."""
    bg = background_texts()
    held, s_generic, s_others = [], [], {m: [] for m in others}
    for tr, te in KFold(5, shuffle=True, random_state=0).split(person):
        ver = VoiceVerifier.fit([person[i] for i in tr], bg)
        held += list(ver.predict([person[i] for i in te]))
        s_generic.append(ver.predict(generic))
        for m, texts in others.items():
            s_others[m].append(ver.predict(texts))
    s_generic = np.mean(s_generic, 0)
    s_others = {m: np.mean(s, 0) for m, s in s_others.items()}
    assert np.mean(held) > np.mean(s_generic) + 0.3, (name, np.mean(held), np.mean(s_generic))
    assert auc(held, s_generic) >= 0.9
    if other:
        assert np.mean(held) > np.mean(s_others[other]) + 0.3, (name, np.mean(s_others[other]))
        # these pairs measure 0.91-1.00, but 0.9 is not met over every pair of persons (rolf vs
        # noor, two terse writers, 0.51-0.77; kofi vs marguerite, two formal ones, 0.57-0.66;
        # RESULTS.md "Voice score" has the matrix): 0.85 until it is
        assert auc(held, s_others[other]) >= 0.85
    # against every other persona (the held-out ones included) on average: 0.82-1.00 measured
    pairs = [auc(held, s) for s in s_others.values()]
    assert np.mean(pairs) >= 0.75, (name, dict(zip(s_others, np.round(pairs, 3))))
    # the verifier's own held-out AUC against the background: 0.88-1.00 measured; the background
    # holds human voices of answer length since session 11, which made this check harder (0.94+
    # before)
    assert held_out_auc(person, bg, k=4)["auc"] >= 0.85


def content_scores(references: list[str], texts: list[str]) -> np.ndarray:
    """A content model in the way content_similarity (ex voice_fidelity) scores: the cosine of
    each text and the person's answer it is paired with (``references[i]``), here with word
    TF-IDF instead of MiniLM embeddings (RESULTS.md has the MiniLM numbers: the same verdict)."""
    vec = TfidfVectorizer(stop_words="english").fit(references + texts)
    return np.asarray(vec.transform(references).multiply(vec.transform(texts)).sum(1)).ravel()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("fit_topic,new_topic", [("home", "work"), ("work", "home")])
def test_topic_does_not_sway_the_score(name, fit_topic, new_topic):
    """Fitted on the person's answers about one topic only, the verifier rates the person's
    answers about the *other* topic above another person's answers to the *very questions it
    was fitted on*. A content model ranks them the other way round (asserted below), so a
    verifier that learned topic instead of voice fails this test."""
    mine_fit = answers(FX / f"{name}.jsonl", fit_topic)
    mine_new = answers(FX / f"{name}.jsonl", new_topic)
    theirs_same_topic = answers(FX / f"{OTHER[name]}.jsonl", fit_topic)
    ver = VoiceVerifier.fit(mine_fit)
    p_mine, p_theirs = ver.predict(mine_new), ver.predict(theirs_same_topic)
    assert auc(p_mine, p_theirs) >= 0.75, (name, auc(p_mine, p_theirs))
    assert p_mine.mean() > p_theirs.mean() + 0.2
    # the content model fails the same check: the other person's answer to the person's question
    # looks closer to the person's answer than the person's own answer to another question
    c_mine, c_theirs = content_scores(mine_fit, mine_new), content_scores(mine_fit, theirs_same_topic)
    assert auc(c_mine, c_theirs) < 0.5


@pytest.mark.parametrize("name", NAMES)
def test_person_scores_alike_on_both_topics(name):
    """Held-out answers on the two topics get similar scores from a verifier fitted on both."""
    person = answers(FX / f"{name}.jsonl")
    topics = [json.loads(ln)["topic"] for ln in open(FX / f"{name}.jsonl")]
    p = np.zeros(len(person))
    for tr, te in KFold(5, shuffle=True, random_state=1).split(person):
        p[te] = VoiceVerifier.fit([person[i] for i in tr]).predict([person[i] for i in te])
    by = {t: p[[i for i, x in enumerate(topics) if x == t]].mean() for t in ("home", "work")}
    assert abs(by["home"] - by["work"]) < 0.15, by
    assert min(by.values()) > 0.6, by


def test_mask_content_keeps_function_words_and_shapes():
    assert mask_content("I don't think Paris is 2x bigger.") == "I don't ***** #**** is 0* ******."
    assert mask_content("the Cat sat") == "the #** ***"


def test_dense_features_shape_and_signals():
    v = dense_features("lol ok. idk 😩")
    assert v.shape == (len(DENSE_NAMES),)
    f = dict(zip(DENSE_NAMES, dense_features("Why? Because I said so!")))
    assert f["ends_exclaim"] == 1.0 and f["ends_question"] == 0.0 and f["punct:?"] > 0
    assert dict(zip(DENSE_NAMES, v))["emoji"] > 0


def test_little_data_warns_and_too_little_refuses():
    person = answers(FX / "jaz.jsonl")[:12]
    res = held_out_auc(person, background_texts(), k=4)
    assert res["n_person"] == 12 and "only 12" in res["warning"]
    assert set(res["curve"]) == {"25%", "50%", "100%"}
    with pytest.raises(DataError, match=f"at least {MIN_PERSON}"):
        VoiceVerifier.fit(person[:MIN_PERSON - 1])


def test_min_words_is_the_length_floor_the_fit_applied():
    """Background texts under a quarter of the person's median answer are left out of the fit, so
    the verifier cannot judge texts that short (min_words; the voice_match reward scores them 0);
    a background of only short texts is kept whole, and then there is no floor."""
    person = answers(FX / "stan.jsonl")
    ver = VoiceVerifier.fit(person)
    assert ver.min_words == pytest.approx(0.25 * np.median([len(t.split()) for t in person]))
    assert all(len(t.split()) >= ver.min_words for t in ver.background)
    assert len(ver.background) < len(background_texts())
    short = ["Need it by Friday.", "ok", "Fine, thanks.", "Sounds good to me!", "no idea tbh",
             "Call me later.", "Yes.", "Back at 5.", "Lovely, ta.", "Noted, will do."]
    ver = VoiceVerifier.fit(person, short)
    assert ver.min_words == 0 and ver.background == short


def test_score_aggregates():
    ver = VoiceVerifier.fit(answers(FX / "jaz.jsonl"))
    texts = answers(FX / "jaz.jsonl")[:3] + answers(FX / "generic.jsonl")[:3]
    p = ver.predict(texts)
    s = ver.score(texts)
    assert s["n"] == 6 and s["voice_match"] == pytest.approx(float(p.mean()))
    assert s["voice_attribution"] == pytest.approx(float((p > 0.5).mean()))
    assert ver.score([])["voice_match"] is None


def test_person_and_scored_texts_from_files(tmp_path):
    f = tmp_path / "mixed.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "one"},
                      {"role": "user", "content": "and?"}, {"role": "assistant", "content": "two"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "three"}]},
    ]) + "\n")
    assert person_texts([f]) == (["one", "two", "three"], [])
    assert [t for t, _ in scored_texts([f])] == ["two", "three"]
    t = tmp_path / "lines.txt"
    t.write_text("first text\n\nsecond text\n")
    assert scored_texts([t]) == [("first text", f"{t}:1"), ("second text", f"{t}:3")]
    p = tmp_path / "prompts.jsonl"
    p.write_text(json.dumps({"prompt": "q1", "answer": "a1"}) + "\n" + json.dumps({"prompt": "q2"}) + "\n")
    texts, notes = person_texts([p])
    assert texts == ["a1"] and "1 record(s)" in notes[0] and f"{p}:2" in notes[0]
    with pytest.raises(DataError, match=rf"{p}:2: answer"):
        scored_texts([p])


def test_cli_voice_score_json(capsys):
    texts = [FX / "jaz.jsonl", FX / "generic.jsonl"]
    rc = main(["eval", "voice-score", "--person", str(FX / "rolf.jsonl"), "--texts", str(texts[0]),
               "--texts", str(texts[1]), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["scores"]) == 80 and all(0 <= s <= 1 for s in out["scores"])
    assert out["where"][0].endswith("jaz.jsonl:1") and out["where"][40].endswith("generic.jsonl:1")
    assert 0.5 <= out["verifier_auc"] <= 1 and out["n_person"] == 40


def test_cli_voice_score_lines_and_errors(capsys, tmp_path):
    t = tmp_path / "t.txt"
    t.write_text("Short answer: no. Check the torque first — 40 Nm.\nomg yes!! love it\n")
    assert main(["eval", "voice-score", "--person", str(FX / "rolf.jsonl"), "--texts", str(t)]) == 0
    cap = capsys.readouterr()
    lines = cap.out.split()
    assert len(lines) == 2 and float(lines[0]) > float(lines[1])
    assert "verifier_auc" in cap.err
    assert main(["eval", "voice-score", "--texts", str(t)]) == 2
    assert "--person" in capsys.readouterr().err
    assert main(["eval", "--json"]) == 2
    assert "voice-score" in capsys.readouterr().err
    assert main(["eval", "voice-score", "--person", str(tmp_path / "nope.jsonl"), "--texts", str(t)]) == 2


def test_gate_reads_voice_match_and_the_renamed_content_key():
    ev = {"voice_match": 0.4, "base_voice_match": 0.1, "content_similarity": 0.7,
          "base_content_similarity": 0.6}
    assert gate_result(GateConfig(min_voice_match=0.3), ev) == []
    assert gate_result(GateConfig(min_voice_match=0.5), ev) == ["voice match 0.4000 < min_voice_match 0.5"]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        old = GateConfig.model_validate({"min_voice_fidelity": 0.8})
    assert any(issubclass(x.category, RenamedWarning) for x in w)
    assert old.min_content_similarity == 0.8
    assert gate_result(old, ev) == ["content similarity 0.7000 < min_content_similarity 0.8"]
    assert "no held-out answers to measure voice match" in gate_result(
        GateConfig(min_voice_match=0.1), {})[0]


def test_compare_voice_columns_without_a_model():
    from mindprint.evaluate.compare import add_voice, to_html, to_markdown

    mine, other = answers(FX / "rolf.jsonl"), answers(FX / "jaz.jsonl")
    result = {"model": "m", "adapters": {"run": "/x"}, "settings": {"temperature": 0, "seed": 0,
              "max_new_tokens": 8, "system": None},
              "rows": [{"prompt": "q", "where": "f:1", "reference": mine[i],
                        "answers": {"base": other[i], "run": mine[i + 1]}} for i in range(3)]}
    add_voice(result, VoiceVerifier.fit(mine[5:]), ["rolf.jsonl"])
    m = result["voice"]["voice_match"]
    assert m["run"] > 0.5 > m["base"] and m["reference"] > 0.5
    assert "(voice " in to_markdown(result) and "held-out AUC" in to_html(result)


def test_probe_fits_the_verifier_on_data_train_or_says_why_not(tmp_path):
    from mindprint import config as C
    from mindprint.evaluate.probe import VoiceProbe

    prompts = str(EXAMPLES / "prompts_eval.jsonl")
    cfg = C.from_dict({"data": {"train": str(EXAMPLES / "persona_train.jsonl")},
                       "eval": {"every": 2, "prompts": prompts}})
    probe = VoiceProbe(cfg, tok=None)
    assert probe.verifier is not None and probe.voice_note is None
    assert probe.verifier.score(answers(EXAMPLES / "persona_eval.jsonl"))["voice_match"] > 0.9
    few = tmp_path / "few.jsonl"
    few.write_text("".join(json.dumps({"messages": [{"role": "user", "content": "q"},
                                                    {"role": "assistant", "content": f"a{i}"}]}) + "\n"
                           for i in range(3)))
    cfg = C.from_dict({"data": {"train": str(few)}, "eval": {"every": 2, "prompts": prompts}})
    probe = VoiceProbe(cfg, tok=None)
    assert probe.verifier is None and "holds 3 of the person's answers" in probe.voice_note


def test_many_person_texts_are_sampled_down_and_said_so(monkeypatch):
    from mindprint.measures import voice as V

    monkeypatch.setattr(V, "MAX_PERSON", 20)
    person = answers(FX / "jaz.jsonl")
    ver = VoiceVerifier.fit(person)
    assert len(ver.person) == 20 and ver.given == 40 and set(ver.person) <= set(person)
    assert "sample of 20 of the person's 40" in ver.held_out(k=3)["sampled"]
